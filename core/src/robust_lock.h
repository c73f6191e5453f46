// RobustLock: a process-shared, robust, error-checking pthread mutex placed in shared memory.
//
// Why glibc's robust mutex: the kernel walks a dying thread's robust list and marks the lock
// owner-dead, so a holder SIGKILLed at any instant never blocks anyone; the next acquirer gets
// kOwnerDied and must repair what the dead holder left before calling MarkConsistent(). This works
// between unrelated processes and across pid namespaces sharing /dev/shm (the kernel, not pid
// polling, detects the death). The lock word's layout is glibc's: all users must be glibc
// programs of the same ABI (the container image is Debian-based for this reason).
//
// Thread-safety: all functions are safe from any thread of any process mapping the storage.
#ifndef SHMDICT_CORE_ROBUST_LOCK_H_
#define SHMDICT_CORE_ROBUST_LOCK_H_

#include <chrono>
#include <cstdint>

namespace shmdict::internal {

enum class LockResult {
  kAcquired,
  kOwnerDied,      // acquired; the previous holder died while holding it
  kTimedOut,       // not acquired
  kBusy,           // not acquired (try-lock only)
  kAlreadyHeld,    // this thread holds it already (EDEADLK)
  kUnrecoverable,  // a holder died and nobody marked it consistent (ENOTRECOVERABLE)
  kInvalid,        // the storage does not hold a valid mutex (EINVAL: corrupted segment)
};

// Initializes the mutex in `storage` (at least sizeof(pthread_mutex_t), 8-aligned). Creator only,
// before the segment is published. Returns 0 or an errno value.
int InitRobustLock(void* storage);
// timeout < 0: wait forever; 0: try once.
LockResult AcquireRobustLock(void* storage, std::chrono::nanoseconds timeout);
void MarkRobustLockConsistent(void* storage);
void ReleaseRobustLock(void* storage);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_ROBUST_LOCK_H_
