#include "robust_lock.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>
#include <new>

namespace shmdict::internal {
namespace {

pthread_mutex_t* AsMutex(void* storage) { return static_cast<pthread_mutex_t*>(storage); }

LockResult FromErrno(int rc) {
  switch (rc) {
    case 0:
      return LockResult::kAcquired;
    case EOWNERDEAD:
      return LockResult::kOwnerDied;
    case ETIMEDOUT:
      return LockResult::kTimedOut;
    case EBUSY:
      return LockResult::kBusy;
    case EDEADLK:
      return LockResult::kAlreadyHeld;
    case ENOTRECOVERABLE:
      return LockResult::kUnrecoverable;
    default:
      std::abort();  // EINVAL etc.: the storage is not a mutex we initialized
  }
}

int InitWithAttributes(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  int rc = pthread_mutexattr_init(&attr);
  if (rc != 0) return rc;
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Error-checking: a thread locking twice gets EDEADLK instead of hanging forever.
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  return rc;
}

// glibc aborts the process (rather than returning EINVAL) on some damaged `kind` words, so the
// kind in shared memory is compared with the kind glibc gives a mutex of our attributes.
bool KindIsIntact(const pthread_mutex_t* m) {
  static const int expected_kind = [] {
    pthread_mutex_t reference;
    InitWithAttributes(&reference);
    const int kind = reference.__data.__kind;
    pthread_mutex_destroy(&reference);
    return kind;
  }();
  return m->__data.__kind == expected_kind;
}

}  // namespace

int InitRobustLock(void* storage) { return InitWithAttributes(new (storage) pthread_mutex_t); }

LockResult AcquireRobustLock(void* storage, std::chrono::nanoseconds timeout) {
  pthread_mutex_t* m = AsMutex(storage);
  if (!KindIsIntact(m)) return LockResult::kInvalid;
  if (timeout.count() < 0) return FromErrno(pthread_mutex_lock(m));
  // Uncontended fast path: no clock read for a deadline that is not needed.
  const int first = pthread_mutex_trylock(m);
  if (first != EBUSY || timeout.count() == 0) return FromErrno(first);
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer builds only (CI's race checking, never shipped): GCC 12's TSan intercepts
  // neither pthread_mutex_clocklock nor an EOWNERDEAD result of pthread_mutex_timedlock, and would
  // report every such acquisition's unlock as unpaired. Its trylock interceptor models both, so
  // the timed wait is a trylock loop here.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const int rc = pthread_mutex_trylock(m);
    if (rc != EBUSY) return FromErrno(rc);
    if (std::chrono::steady_clock::now() >= deadline) return LockResult::kTimedOut;
    timespec pause{0, 100000};
    nanosleep(&pause, nullptr);
  }
#else
  // CLOCK_MONOTONIC: a wall-clock jump must not shorten or stretch the wait.
  timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  int64_t ns = deadline.tv_nsec + timeout.count() % 1000000000;
  deadline.tv_sec += timeout.count() / 1000000000 + ns / 1000000000;
  deadline.tv_nsec = ns % 1000000000;
  return FromErrno(pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &deadline));
#endif
}

void MarkRobustLockConsistent(void* storage) { pthread_mutex_consistent(AsMutex(storage)); }

void ReleaseRobustLock(void* storage) { pthread_mutex_unlock(AsMutex(storage)); }

}  // namespace shmdict::internal
