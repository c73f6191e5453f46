// Futex: the one wrapper over the futex system call, for words in shared memory.
//
// Deliberately never FUTEX_PRIVATE_FLAG: waiters and wakers are different processes (libstdc++'s
// std::atomic::wait uses private futexes and does not work across processes).
#ifndef SHMDICT_CORE_FUTEX_H_
#define SHMDICT_CORE_FUTEX_H_

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

namespace shmdict::internal {

// FUTEX_WAIT (relative timeout, null: forever) or FUTEX_WAKE on `word`.
inline long Futex(std::atomic<uint32_t>* word, int op, uint32_t value, const timespec* timeout) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_FUTEX_H_
