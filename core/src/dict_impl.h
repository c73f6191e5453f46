// Dict::Impl: the engine behind a Dict handle, and the one place its mechanisms meet. Internal;
// see shmdict/dict.h for the contract and docs/LAYOUT.md for the bytes.
//
// Rooms (one concept each, one owner each):
//   main_segment.h         the main segment's header: creation, validation, status
//   log_ring.h             the bytes of the log ring; blob_segment.h the large changes
//   record_format.h        a record's codes and bytes; change_record.h its ops as ChangeOps
//   log_reader.h           reading the log: catch-up, Watch, the builder and the repair alike
//   local_view.h           a handle's state at one revision: snapshot + overlay
//   writer_lock.h          the writer lock, the handle's recursion and the dead-holder repair
//   compactor.h            snapshot building: the background thread and the one publish path
//   change_notification.h  futex waits for "revision > R" and the writer's wake
// Impl holds one of each and implements the write path: take the lock, catch the view up, plan,
// append one record, publish it with a single store of commit_revision, apply it to the view.
//
// Invariants, true between calls on the handle's thread:
//   - view is the dict at exactly view.revision (its snapshot plus every later change in the
//     overlay), and view.position is the log position just after view.revision's record;
//   - while writer_lock.depth() > 0, this handle holds the writer lock, and after CatchUp
//     view.revision is the committed revision and writer_tail == view.position;
//   - every change is committed by CommitLocked, under the lock, on a caught-up view;
//   - after Close() the handle owns nothing: the builder is joined, the lock identity, the
//     mappings and the descriptor are released.
//
// Thread-safety: one thread at a time (the handle is thread-compatible), except for the
// compactor's builder thread (compactor.h). Lifetime: owns its mappings; Close() joins the
// builder before unmapping.
#ifndef SHMDICT_CORE_DICT_IMPL_H_
#define SHMDICT_CORE_DICT_IMPL_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "change_record.h"
#include "compactor.h"
#include "layout.h"
#include "local_view.h"
#include "log_reader.h"
#include "log_ring.h"
#include "segment.h"
#include "shmdict/dict.h"
#include "writer_lock.h"

namespace shmdict {

struct LockGuard::Holder {};

namespace internal {
// A commit by a replica's feed (ReplicaFeed::Apply), the one writer a replica dict accepts: the
// upstream revision the commit records with its data (replica_block.h).
struct FeedCommit {
  uint64_t upstream_revision = 0;
  // The upstream's history started over (ReplicaFeed::ApplyRestartedHistory): the revision may go
  // back.
  bool history_restarted = false;
};
}  // namespace internal

class Dict::Impl : public LockGuard::Holder {
 public:
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();

  const std::string& Name() const { return name; }
  bool is_closed() const { return closed; }
  Status Corrupt(const std::string& what) const { return reader.Corrupt(what); }

 private:
  // Dict (dict.cc, and Dict::Watch in watcher.cc) and LockGuard are this class's public face: they
  // read the view and call the operations below; nothing else touches an Impl. Watchers share
  // nothing with it but handle_closed.
  friend class shmdict::Dict;
  friend class shmdict::LockGuard;
  friend class shmdict::ReplicaFeed;  // its Adopt and Apply (replica_feed.cc)

  // Binds the rooms to the mapped main segment (Open, after fd/map/header are set), then loads
  // the published snapshot and catches up.
  Status Attach();

  // Catching up with the log: one atomic load when nothing changed (docs/DESIGN.md, rule 7).
  Status CatchUp(bool force) {
    const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
    if (committed == view.revision && !force) return Status::Ok();
    return CatchUpSlow(force);
  }
  Status CatchUpSlow(bool force);
  // kDataLoss when the commit point lies behind the writer's record of its last commit (Attach).
  Status CheckCommitPoint() const;

  // The handle's writer lock (recursive for the handle). After a fork, first drops what belongs
  // to the parent's threads.
  Status AcquireWriteLock(std::chrono::nanoseconds timeout);
  void ReleaseWriteLock();
  // In a forked child: the parent's lock depth and builder thread are not the child's, and
  // auto_unlink stays with the creating process.
  void ForgetParentAfterFork();

  // Writing. Plan runs under the lock on the caught-up view and fills the ops to commit. `feed`:
  // the write is a replica feed's commit; null: an ordinary write, refused on a replica dict.
  template <typename Plan>
  Result<uint64_t> Write(Plan&& plan, const internal::FeedCommit* feed = nullptr);
  // Under the lock, before a plan runs: a replica dict refuses every write but its feed's
  // (FAILED_PRECONDITION naming the upstream and where to write instead); a feed's write is
  // checked against the upstream revision held (replica_block.h's step 0 is taken here).
  Status CheckReplicaWrite(const internal::FeedCommit* feed);
  // A feed's write that changed nothing: records its upstream revision at the current revision.
  void RecordFeedProgress(const internal::FeedCommit& feed);
  // Dict::Apply's plan (the feed's Apply is the same batch).
  Result<uint64_t> ApplyChanges(const std::vector<Change>& changes,
                                const internal::FeedCommit* feed);
  enum class CommitOutcome {
    kCommitted,
    // Nothing written: the ring is full and another snapshot builder is at work. The caller
    // releases the lock, waits for the builder and retries (rather than building a duplicate
    // snapshot under the lock).
    kRingFullWhileBuilding,
  };
  Result<CommitOutcome> CommitLocked(const std::vector<internal::OpRef>& ops,
                                     bool may_wait_for_builder, const internal::FeedCommit* feed);
  // Fills retired_children with the nested children `ops` drop the last reference to.
  void CollectRetiredChildren(const std::vector<internal::OpRef>& ops);
  // Under the lock: builds and publishes a snapshot of the view now (Dump, a truly full ring).
  Status CompactLocked() { return compactor.CompactLocked(&view); }

  Result<uint64_t> WaitForChange(uint64_t after, std::chrono::nanoseconds timeout) const;
  void Close();

  std::string name;
  Options options;
  bool created = false;
  bool closed = false;
  // Set (then the dict's waiters woken) when the handle closes: the watchers made by Watch hold it
  // and fail from then on. Shared because they may outlive the Impl.
  std::shared_ptr<std::atomic<bool>> handle_closed = std::make_shared<std::atomic<bool>>(false);
  uint64_t incarnation = 0;             // the main segment's inode
  bool inherited_through_fork = false;  // a forked child's copy of the handle
  internal::Fd fd;
  internal::Mapping map;
  internal::MainHeader* header = nullptr;
  internal::LogRing ring;
  internal::LogReader reader;
  internal::WriterLock writer_lock;
  internal::Compactor compactor;
  internal::LocalView view;
  std::string payload;  // scratch: the record being read or written
  std::vector<internal::OpRef> ops_scratch;
  std::vector<std::string> retired_children;  // of the commit in progress
  uint64_t last_commit = 0;
};

template <typename Plan>
Result<uint64_t> Dict::Impl::Write(Plan&& plan, const internal::FeedCommit* feed) {
  // A commit finding the ring full while another builder is at work steps out of the lock and
  // waits for that snapshot; the plan is then re-run, since other writers may have changed the
  // state meanwhile.
  for (int attempt = 0;; ++attempt) {
    {
      Status s = AcquireWriteLock(options.lock_timeout);
      if (!s.ok()) return s;
      struct Unlock {
        Impl* impl;
        ~Unlock() { impl->ReleaseWriteLock(); }
      } unlock{this};
      s = CatchUp(false);
      if (!s.ok()) return s;
      s = CheckReplicaWrite(feed);
      if (!s.ok()) return s;
      std::vector<internal::OpRef>& ops = ops_scratch;  // reused: no allocation per write
      ops.clear();
      s = plan(ops);
      if (!s.ok()) return s;
      if (ops.empty()) {
        if (feed != nullptr) RecordFeedProgress(*feed);
        return view.revision;
      }
      // Only the outermost lock can be released: inside a user Lock() the builder could not
      // publish.
      const bool may_wait_for_builder = writer_lock.depth() == 1 && attempt < 3;
      auto outcome = CommitLocked(ops, may_wait_for_builder, feed);
      if (!outcome.ok()) return outcome.status();
      if (*outcome == CommitOutcome::kCommitted) return view.revision;
    }
    compactor.WaitForBuilder();
  }
}

}  // namespace shmdict

#endif  // SHMDICT_CORE_DICT_IMPL_H_
