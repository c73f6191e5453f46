#include "change_notification.h"

#include <climits>
#include <string>

#include "futex.h"

namespace shmdict::internal {

void WakeChangeWaiters(MainHeader* header) {
  auto& wait = header->wait;
  // The common case, nobody waiting, is one load. The exchange makes one writer the waker.
  if (wait.maybe_waiting.load(std::memory_order_seq_cst) == 0) return;
  if (wait.maybe_waiting.exchange(0, std::memory_order_seq_cst) == 0) return;
  wait.change_futex.fetch_add(1, std::memory_order_release);
  Futex(&wait.change_futex, FUTEX_WAKE, INT_MAX, nullptr);
}

void InterruptChangeWaiters(MainHeader* header) {
  // Bumping the value makes a waiter that read the old one before the flag was set return from
  // FUTEX_WAIT at once instead of sleeping through this wake.
  header->wait.change_futex.fetch_add(1, std::memory_order_seq_cst);
  Futex(&header->wait.change_futex, FUTEX_WAKE, INT_MAX, nullptr);
}

Result<uint64_t> WaitForRevisionAfter(MainHeader* header, std::string_view dict, uint64_t after,
                                      std::chrono::nanoseconds timeout,
                                      std::initializer_list<const std::atomic<bool>*> interrupts) {
  auto& commit = header->commit.commit_revision;
  uint64_t current = commit.load(std::memory_order_acquire);
  if (current > after) return current;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto& wait = header->wait;
  while (true) {
    // The futex value first, then the flag: a writer that clears the flag after this read also
    // bumps the value, so the wait below cannot sleep through its wake.
    const uint32_t seq = wait.change_futex.load(std::memory_order_seq_cst);
    wait.maybe_waiting.store(1, std::memory_order_seq_cst);
    current = commit.load(std::memory_order_seq_cst);
    if (current > after) return current;
    for (const std::atomic<bool>* interrupt : interrupts) {
      if (interrupt->load(std::memory_order_seq_cst)) {
        return Status(StatusCode::kCancelled,
                      "dict " + QuoteForMessage(dict) + ": the wait was interrupted");
      }
    }
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::nanoseconds::zero()) {
      return Status(StatusCode::kDeadlineExceeded,
                    "dict " + QuoteForMessage(dict) + ": no change after revision " +
                        std::to_string(after) + " within the timeout");
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    Futex(&wait.change_futex, FUTEX_WAIT, seq, &ts);
  }
}

}  // namespace shmdict::internal
