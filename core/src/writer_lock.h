// WriterLock: one handle's side of the dict's cross-process writer lock — acquisition, the
// handle's recursion (a user's Lock() around its own writes), and the repair of what a dead
// holder left, for the handle's thread and its snapshot builder alike. The lock itself is
// RobustLock (robust_lock.h); docs/WRITER_LOCK.md has the design and its failure analysis.
//
// Thread-safety: Acquire/Release (the counted, recursive pair) belong to the handle's thread;
// AcquireUncounted/ReleaseUncounted may run on the builder thread meanwhile. Lifetime: Claim()
// binds it to a mapped header; Close() gives up the identity, after the builder was joined.
#ifndef SHMDICT_CORE_WRITER_LOCK_H_
#define SHMDICT_CORE_WRITER_LOCK_H_

#include <chrono>
#include <memory>
#include <string>

#include "layout.h"
#include "log_reader.h"
#include "robust_lock.h"
#include "shmdict/log_sink.h"
#include "shmdict/status.h"

namespace shmdict::internal {

class WriterLock {
 public:
  WriterLock() = default;
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

  // Takes this handle's holder identity. Errors: HolderIdentity::Claim's.
  Status Claim(int segment_fd, MainHeader* header, const LogReader* reader,
               std::shared_ptr<LogSink> log_sink);
  // True in a forked child until the next Acquire: the lock state is its parent's.
  bool inherited_through_fork() const { return identity_.stale(); }
  // In a forked child: the inherited depth is the parent's lock, never the child's.
  void ForgetParentsLock() { depth_ = 0; }

  // The handle's acquisition: recursive (a second Acquire while held only counts). Errors:
  // kDeadlineExceeded / kUnavailable (try-lock: timeout 0) naming the holder; kFailedPrecondition
  // when this thread holds it through another handle; kDataLoss for a damaged lock word or a
  // repair that failed (owed to the next acquirer, who retries it); the identity's errors after a
  // fork.
  Status Acquire(std::chrono::nanoseconds timeout);
  // Undoes one Acquire. Aborts if unbalanced (a bug in the engine).
  void Release();
  int depth() const { return depth_; }

  // The builder's acquisition: neither counted nor recursive, same errors.
  Status AcquireUncounted(std::chrono::nanoseconds timeout);
  void ReleaseUncounted();

  // For the builder's claim, which uses the same identity.
  HolderIdentity& identity() { return identity_; }
  // "held by pid 12" and the like (DescribeRobustLockHolder).
  std::string DescribeHolder() const;
  // Gives up the identity (Close, after the builder thread is joined).
  void Close() { identity_.Release(); }

 private:
  // The previous holder died somewhere between taking the lock and releasing it: re-derives the
  // writer bookkeeping from what is committed and published.
  Status RepairAfterDeadHolder();

  HolderIdentity identity_;
  MainHeader* header_ = nullptr;
  const LogReader* reader_ = nullptr;
  std::shared_ptr<LogSink> log_sink_;
  int depth_ = 0;  // > 0 while the handle holds it (owned by the handle's thread)
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_WRITER_LOCK_H_
