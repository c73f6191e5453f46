#include "robust_lock.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "futex.h"
#include "segment.h"

namespace shmdict::internal {
namespace {

constexpr uint64_t kFree = 0;
constexpr uint64_t kRepairOwed = 1;
constexpr uint64_t kFirstToken = 2;
constexpr uint64_t kWaiters = uint64_t{1} << 63;
// Liveness locks sit on bytes 2^40 + token of the main segment: far past its end (fcntl locks may
// cover bytes a file does not have), so they never meet a lock on its contents.
constexpr off_t kLivenessBase = off_t{1} << 40;
// How often a waiter asks whether the holder is still alive: a holder's death is noticed within
// this; a normal release wakes a waiter at once.
constexpr auto kLivenessPeriod = std::chrono::milliseconds(10);
// Tokens a Claim tries when the counter hands out tokens already in use (a damaged counter).
constexpr int kClaimAttempts = 8;

// ---- Fork: a child must not keep the parent's liveness locks (see docs/WRITER_LOCK.md).
// Guards live_liveness_fds; held across fork() by the prepare handler, so no liveness descriptor
// can be opened and not yet registered while a fork copies the descriptor table.
std::mutex registry_mutex;
std::vector<int> live_liveness_fds;
std::atomic<uint64_t> fork_epoch{1};

// Locks this thread holds, by dict (device, inode) and the lock's offset in the header: "do I
// hold it" is process-local state, never a comparison of ids in the shared word.
struct HeldLock {
  dev_t dev;
  ino_t ino;
  uintptr_t offset;
  bool operator==(const HeldLock&) const = default;
};
thread_local std::vector<HeldLock> held_by_this_thread;

void BeforeFork() { registry_mutex.lock(); }
void AfterForkInParent() { registry_mutex.unlock(); }
void AfterForkInChild() {
  // Closing drops only the child's reference: the parent keeps its liveness locks.
  for (int fd : live_liveness_fds) close(fd);
  live_liveness_fds.clear();
  held_by_this_thread.clear();  // the child never holds its parent's locks
  fork_epoch.fetch_add(1, std::memory_order_relaxed);
  registry_mutex.unlock();
}

void InstallForkHandlers() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(BeforeFork, AfterForkInParent, AfterForkInChild); });
}

uint64_t ReadPidNamespace() {
  struct stat st;
  return stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

uint64_t ReadStartTime() {
  FILE* f = fopen("/proc/self/stat", "re");
  if (f == nullptr) return 0;
  char buf[1024];
  const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  // Field 2 (comm) may hold spaces and parentheses: fields are counted after its last ')'.
  const char* p = strrchr(buf, ')');
  if (p == nullptr) return 0;
  uint64_t start = 0;
  // After ')': field 3 (state) ... field 22 (starttime): skip 19 fields.
  for (int field = 3; field < 22 && p != nullptr; ++field) p = strchr(p + 1, ' ');
  if (p == nullptr || sscanf(p + 1, "%" SCNu64, &start) != 1) return 0;
  return start;
}

off_t LivenessByte(uint64_t token) { return kLivenessBase + static_cast<off_t>(token); }

struct flock LivenessRange(short type, uint64_t token) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = LivenessByte(token);
  fl.l_len = 1;
  fl.l_pid = 0;  // required by the F_OFD_* commands
  return fl;
}

}  // namespace

ProcessIdentity CurrentProcessIdentity() {
  // Per thread, so that no lock is needed (a lock held by another thread at fork() would hang the
  // child); recomputed after a fork, where pid, namespace and start time all change.
  thread_local ProcessIdentity identity;
  thread_local uint64_t identity_epoch = 0;
  const uint64_t epoch = fork_epoch.load(std::memory_order_relaxed);
  if (identity_epoch != epoch) {
    identity.pid = static_cast<uint32_t>(getpid());
    identity.pid_namespace = ReadPidNamespace();
    identity.start_time = ReadStartTime();
    identity_epoch = epoch;
  }
  return identity;
}

// ------------------------------------------------------------------------------ HolderIdentity

HolderIdentity::~HolderIdentity() { Release(); }

Status HolderIdentity::Claim(const std::string& dict, int segment_fd, MainHeader* header) {
  InstallForkHandlers();
  dict_ = dict;
  segment_fd_ = segment_fd;
  header_ = header;
  struct stat st;
  if (fstat(segment_fd, &st) != 0)
    return ErrnoStatus(errno, "dict " + QuoteForMessage(dict) + ": fstat");
  segment_dev_ = st.st_dev;
  segment_ino_ = st.st_ino;
  return Renew();
}

bool HolderIdentity::stale() const {
  return fork_epoch_ != fork_epoch.load(std::memory_order_relaxed);
}

Status HolderIdentity::Renew() {
  Release();
  process_ = CurrentProcessIdentity();  // read now, outside the registry lock
  std::lock_guard<std::mutex> lock(registry_mutex);
  // A description of our own, so that the liveness lock is ours alone (not shared with the handle's
  // flock or with a forked child); /proc/self/fd reopens the segment even if it was unlinked.
  const std::string self_path = "/proc/self/fd/" + std::to_string(segment_fd_);
  int fd = open(self_path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    auto by_name = OpenSegment(dict_, O_RDWR | O_CLOEXEC, 0);
    struct stat st;
    if (!by_name.ok() || fstat(by_name->get(), &st) != 0 || st.st_ino != segment_ino_ ||
        st.st_dev != segment_dev_) {
      return Status(StatusCode::kInternal,
                    "dict " + QuoteForMessage(dict_) +
                        ": cannot open a descriptor for the writer lock's liveness record "
                        "(neither /proc/self/fd nor the dict's name leads to its segment)");
    }
    fd = dup(by_name->get());
    if (fd < 0) return ErrnoStatus(errno, "dict " + QuoteForMessage(dict_) + ": dup");
    fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  for (int attempt = 0; attempt < kClaimAttempts; ++attempt) {
    const uint64_t token =
        header_->writer.next_holder_token.fetch_add(1, std::memory_order_relaxed);
    if (token < kFirstToken || (token & kWaiters) != 0) break;
    struct flock fl = LivenessRange(F_WRLCK, token);
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) {
      liveness_fd_ = fd;
      token_ = token;
      fork_epoch_ = fork_epoch.load(std::memory_order_relaxed);
      live_liveness_fds.push_back(fd);
      return Status::Ok();
    }
    if (errno != EAGAIN && errno != EACCES) {
      const int err = errno;
      close(fd);
      return ErrnoStatus(
          err, "dict " + QuoteForMessage(dict_) + ": taking the writer lock's liveness lock");
    }
    // Somebody holds this token already: the counter went backwards. Try the next one.
  }
  close(fd);
  return Status(StatusCode::kDataLoss, "dict " + QuoteForMessage(dict_) +
                                           ": the writer lock's token counter is damaged (it "
                                           "hands out tokens in use): unlink the dict");
}

void HolderIdentity::Release() {
  if (token_ == 0) return;
  std::lock_guard<std::mutex> lock(registry_mutex);
  // In a forked child the fork handler already closed the descriptor (its number may have been
  // reused since): only a descriptor of this epoch is ours to close.
  if (fork_epoch_ == fork_epoch.load(std::memory_order_relaxed)) {
    std::erase(live_liveness_fds, liveness_fd_);
    close(liveness_fd_);
  }
  liveness_fd_ = -1;
  token_ = 0;
}

bool HolderIdentity::IsAlive(uint64_t token) const {
  if (token == token_) return true;  // our own lock never conflicts with itself
  // Asked through the handle's main descriptor, which holds no byte-range lock itself.
  return HolderTokenIsAlive(segment_fd_, token);
}

bool HolderTokenIsAlive(int segment_fd, uint64_t token) {
  struct flock fl = LivenessRange(F_WRLCK, token);
  // A query that fails cannot prove a death: never take a lock over on doubt.
  if (fcntl(segment_fd, F_OFD_GETLK, &fl) != 0) return true;
  return fl.l_type != F_UNLCK;
}

// ---------------------------------------------------------------------------------- the lock

void InitRobustLock(RobustLockWord* lock) {
  lock->owner.store(kFree, std::memory_order_relaxed);
  lock->wake_futex.store(0, std::memory_order_relaxed);
  lock->holder_pid.store(0, std::memory_order_relaxed);
  lock->holder_pid_namespace.store(0, std::memory_order_relaxed);
  lock->holder_start_time.store(0, std::memory_order_relaxed);
}

namespace {

HeldLock KeyOf(const RobustLockWord* lock, const MainHeader* header, dev_t dev, ino_t ino) {
  return {dev, ino, reinterpret_cast<uintptr_t>(lock) - reinterpret_cast<uintptr_t>(header)};
}

}  // namespace

// The uncontended path is one CAS plus the diagnostic stores: no system call, no clock read.
LockResult AcquireRobustLock(RobustLockWord* lock, HolderIdentity& me,
                             std::chrono::nanoseconds timeout) {
  const HeldLock key = KeyOf(lock, me.header_, me.segment_dev_, me.segment_ino_);
  auto acquired = [&](LockResult result) {
    lock->holder_pid.store(me.process_.pid, std::memory_order_relaxed);
    lock->holder_pid_namespace.store(me.process_.pid_namespace, std::memory_order_relaxed);
    lock->holder_start_time.store(me.process_.start_time, std::memory_order_relaxed);
    held_by_this_thread.push_back(key);
    return result;
  };
  uint64_t seen = kFree;
  if (lock->owner.compare_exchange_strong(seen, me.token_, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
    return acquired(LockResult::kAcquired);
  }
  // Same thread, another handle: waiting would wait for ourselves.
  if (std::find(held_by_this_thread.begin(), held_by_this_thread.end(), key) !=
      held_by_this_thread.end()) {
    return LockResult::kAlreadyHeld;
  }
  using std::chrono::steady_clock;
  const bool forever = timeout.count() < 0;
  const auto start = steady_clock::now();
  const auto deadline = forever ? steady_clock::time_point::max() : start + timeout;
  // A try-lock asks at once; a waiter first gives the holder a liveness period to release, so
  // that ordinary contention costs no system call beyond the futex.
  auto next_liveness_check = timeout.count() == 0 ? start : start + kLivenessPeriod;
  bool slept = false;
  while (true) {
    // The futex value is read before the owner: a release after this read changes it, so the
    // wait below cannot sleep through that release.
    const uint32_t seq = lock->wake_futex.load(std::memory_order_acquire);
    uint64_t cur = lock->owner.load(std::memory_order_acquire);
    const uint64_t holder = cur & ~kWaiters;
    if (holder == kFree || holder == kRepairOwed) {
      // One who slept keeps the flag: others may still be asleep (glibc's "contended" state).
      const uint64_t mine = me.token_ | (slept ? kWaiters : (cur & kWaiters));
      if (lock->owner.compare_exchange_strong(cur, mine, std::memory_order_acq_rel,
                                              std::memory_order_relaxed)) {
        return acquired(holder == kFree ? LockResult::kAcquired : LockResult::kOwnerDied);
      }
      continue;
    }
    if (holder >= me.header_->writer.next_holder_token.load(std::memory_order_acquire)) {
      return LockResult::kDamaged;  // no handle was ever given this token
    }
    const auto now = steady_clock::now();
    if (now >= next_liveness_check) {
      if (!me.IsAlive(holder)) {
        // Its process is gone (its liveness lock with it), and tokens are never reused: the
        // CAS can only fail if another waiter took it over first.
        if (lock->owner.compare_exchange_strong(cur, me.token_ | (cur & kWaiters),
                                                std::memory_order_acq_rel,
                                                std::memory_order_relaxed)) {
          return acquired(LockResult::kOwnerDied);
        }
        continue;
      }
      next_liveness_check = now + kLivenessPeriod;
    }
    if (timeout.count() == 0) return LockResult::kBusy;
    if (now >= deadline) return LockResult::kTimedOut;
    if ((cur & kWaiters) == 0 &&
        !lock->owner.compare_exchange_strong(cur, cur | kWaiters, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
      continue;  // the owner changed meanwhile: look again
    }
    const auto slice = std::min<steady_clock::duration>(kLivenessPeriod, deadline - now);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(slice).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    Futex(&lock->wake_futex, FUTEX_WAIT, seq, &ts);
    slept = true;
  }
}

bool ReleaseRobustLock(RobustLockWord* lock, HolderIdentity& me, bool repaired) {
  const HeldLock key = KeyOf(lock, me.header_, me.segment_dev_, me.segment_ino_);
  if (auto it = std::find(held_by_this_thread.begin(), held_by_this_thread.end(), key);
      it != held_by_this_thread.end()) {
    held_by_this_thread.erase(it);
  }
  uint64_t cur = lock->owner.load(std::memory_order_relaxed);
  if ((cur & ~kWaiters) != me.token_) return false;
  // Cleared first: once the CAS below lands, the next holder writes its own.
  lock->holder_pid.store(0, std::memory_order_relaxed);
  lock->holder_pid_namespace.store(0, std::memory_order_relaxed);
  lock->holder_start_time.store(0, std::memory_order_relaxed);
  const uint64_t next = repaired ? kFree : kRepairOwed;
  while (!lock->owner.compare_exchange_weak(cur, next, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
    if ((cur & ~kWaiters) != me.token_) return false;
  }
  if ((cur & kWaiters) != 0) {
    lock->wake_futex.fetch_add(1, std::memory_order_release);
    Futex(&lock->wake_futex, FUTEX_WAKE, 1, nullptr);
  }
  return true;
}

bool RobustLockIsHeld(const RobustLockWord& lock) {
  return (lock.owner.load(std::memory_order_acquire) & ~kWaiters) >= kFirstToken;
}

LockHolderInfo ReadRobustLockHolder(const RobustLockWord& lock) {
  LockHolderInfo info;
  info.held = RobustLockIsHeld(lock);
  if (!info.held) return info;
  info.pid = lock.holder_pid.load(std::memory_order_relaxed);
  info.pid_namespace = lock.holder_pid_namespace.load(std::memory_order_relaxed);
  info.start_time = lock.holder_start_time.load(std::memory_order_relaxed);
  const uint64_t ours = CurrentProcessIdentity().pid_namespace;
  // Unknown on either side (no /proc): a pid is shown as it is, as before layout 3.
  info.in_this_pid_namespace = info.pid_namespace == 0 || ours == 0 || info.pid_namespace == ours;
  return info;
}

std::string DescribeRobustLockHolder(const RobustLockWord& lock) {
  const LockHolderInfo info = ReadRobustLockHolder(lock);
  if (!info.held) return "free";
  if (info.pid == 0) return "held by another process (it has not recorded its pid yet)";
  if (info.in_this_pid_namespace) {
    const bool ours = info.pid == CurrentProcessIdentity().pid;
    return "held by pid " + std::to_string(info.pid) + (ours ? " (this process)" : "");
  }
  std::string text = "held by pid " + std::to_string(info.pid) +
                     " of another pid namespace (pid:[" + std::to_string(info.pid_namespace) + "]";
  if (const long ticks = sysconf(_SC_CLK_TCK); ticks > 0 && info.start_time != 0) {
    char started[64];
    snprintf(started, sizeof(started), ", a process started %.2f s after boot",
             static_cast<double>(info.start_time) / static_cast<double>(ticks));
    text += started;
  }
  return text + ")";
}

}  // namespace shmdict::internal
