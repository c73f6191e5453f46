// RobustLock: a process-shared lock in shared memory that survives its holder and is correct
// between processes of different pid namespaces (the containers of a pod sharing /dev/shm).
//
// It does not use glibc's robust mutex: that names its owner by a namespace-local thread id, and
// the kernel's own death handling compares such ids, so with colliding ids a SIGKILLed *waiter*
// marks a live holder's lock dead (docs/WRITER_LOCK.md has the analysis and the reproduction).
// Here the owner is a token no other handle ever had, and "is the holder alive" is an
// open-file-description lock the holder keeps on the byte 2^40 + token of the dict's segment,
// which the kernel drops when the holder's process dies, whatever its namespace.
//
// Thread-safety: the free functions are safe from any thread of any process mapping the word. A
// HolderIdentity is thread-compatible and may be used by several threads at once for
// Acquire/Release (the handle's user thread and its snapshot builder share one).
// Lifetime: a HolderIdentity must outlive every lock it holds; it must not be moved once claimed
// (it is registered for the fork handler by address).
#ifndef SHMDICT_CORE_ROBUST_LOCK_H_
#define SHMDICT_CORE_ROBUST_LOCK_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "layout.h"
#include "shmdict/status.h"

namespace shmdict::internal {

enum class LockResult {
  kAcquired,
  kOwnerDied,    // acquired; the previous holder died holding it (or left a repair owed)
  kTimedOut,     // not acquired
  kBusy,         // not acquired (try-lock only)
  kAlreadyHeld,  // not acquired: this thread holds this very lock through another handle
  kDamaged,      // not acquired: the owner word holds a token no handle was ever given
};

// The calling process's identity as the diagnostics record it (refreshed after fork).
struct ProcessIdentity {
  uint32_t pid = 0;
  uint64_t pid_namespace = 0;  // 0: unknown (/proc not mounted)
  uint64_t start_time = 0;     // clock ticks after boot; 0: unknown
};
ProcessIdentity CurrentProcessIdentity();

// A lock's holder as its diagnostic fields tell (never used to decide anything).
struct LockHolderInfo {
  bool held = false;
  uint32_t pid = 0;  // in the holder's own pid namespace; 0: not recorded yet
  uint64_t pid_namespace = 0;
  uint64_t start_time = 0;
  bool in_this_pid_namespace = true;  // so `pid` means what the caller's getpid() would
};

// A handle's identity as a lock holder: its token and the liveness lock that proves it alive.
class HolderIdentity {
 public:
  HolderIdentity() = default;
  HolderIdentity(const HolderIdentity&) = delete;
  HolderIdentity& operator=(const HolderIdentity&) = delete;
  ~HolderIdentity();

  // Takes a new token from `header->writer.next_holder_token` and its liveness lock through a new
  // open file description of `segment_fd` (the main segment). kInternal (naming the system call)
  // if the description cannot be opened or locked; kDataLoss if the token counter is damaged
  // (its tokens are already in use). `dict` names the dict in errors.
  Status Claim(const std::string& dict, int segment_fd, MainHeader* header);
  // True in a forked child until Renew(): the inherited liveness lock was given up at fork.
  bool stale() const;
  // Claim() again (in a forked child). Same errors.
  Status Renew();
  // Gives up the token and its liveness lock (locks still held become "held by a dead holder").
  void Release();

  uint64_t token() const { return token_; }
  // Whether `token` (taken from an owner word) belongs to a live handle of any process.
  bool IsAlive(uint64_t token) const;

 private:
  friend LockResult AcquireRobustLock(RobustLockWord*, HolderIdentity&, std::chrono::nanoseconds);
  friend bool ReleaseRobustLock(RobustLockWord*, HolderIdentity&, bool);
  std::string dict_;
  int segment_fd_ = -1;
  MainHeader* header_ = nullptr;
  int liveness_fd_ = -1;
  uint64_t token_ = 0;
  uint64_t fork_epoch_ = 0;
  ProcessIdentity process_;  // what acquisitions record as the holder
  dev_t segment_dev_ = 0;    // with segment_ino_: which dict a held lock belongs to, process-wide
  ino_t segment_ino_ = 0;
};

// Whether `token` belongs to a live handle of any process, asked through `segment_fd` (any open
// file description of the dict's main segment that holds no liveness lock itself, read-only is
// enough). A query that fails counts as alive: a death is never assumed on doubt.
bool HolderTokenIsAlive(int segment_fd, uint64_t token);

// Initializes a lock word to "free" (creator only, before the segment is published).
void InitRobustLock(RobustLockWord* lock);
// Acquires for `me`. timeout < 0: wait forever; 0: try once. Never returns with the lock held
// unless the result is kAcquired or kOwnerDied; after kOwnerDied the caller repairs what the dead
// holder left, then releases with repaired = whether that worked.
LockResult AcquireRobustLock(RobustLockWord* lock, HolderIdentity& me,
                             std::chrono::nanoseconds timeout);
// Releases a lock `me` acquired. repaired = false leaves a repair owed to the next acquirer. Does
// nothing and returns false if `me` does not hold it (another process judged it dead).
bool ReleaseRobustLock(RobustLockWord* lock, HolderIdentity& me, bool repaired = true);
// Whether some handle holds it (a dead holder counts until someone takes over).
bool RobustLockIsHeld(const RobustLockWord& lock);
LockHolderInfo ReadRobustLockHolder(const RobustLockWord& lock);
// "held by pid 12", "held by pid 12 (this process)", "held by pid 1 of another pid namespace
// (pid:[4026532301], a process started 35.20 s after boot)", or "held by another process (it has
// not recorded its pid yet)".
std::string DescribeRobustLockHolder(const RobustLockWord& lock);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_ROBUST_LOCK_H_
