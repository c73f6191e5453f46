// WaitingCalls: the bridge-wide cap on calls that wait for the dict rather than work (Get with a
// min_revision ahead of the dict, Watch streams). Each costs little while it waits, but without a
// cap any client -- a read-only token is enough -- can open them until memory runs out.
//
// Thread-safety: every member may be called from any thread. Lifetime: outlives every Slot.
#ifndef SHMDICT_BRIDGE_CALL_LIMITS_H_
#define SHMDICT_BRIDGE_CALL_LIMITS_H_

#include <atomic>
#include <cstddef>
#include <string>
#include <utility>

#include "shmdict/status.h"

namespace shmdict::bridge {

class WaitingCalls {
 public:
  // One admitted waiting call; leaves the count when destroyed (or Release()d).
  class Slot {
   public:
    Slot() = default;
    explicit Slot(WaitingCalls* owner) : owner_(owner) {}
    Slot(Slot&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
    Slot& operator=(Slot&& other) noexcept {
      if (this != &other) {
        Release();
        owner_ = std::exchange(other.owner_, nullptr);
      }
      return *this;
    }
    ~Slot() { Release(); }
    void Release() {
      if (owner_ != nullptr) owner_->in_use_.fetch_sub(1, std::memory_order_relaxed);
      owner_ = nullptr;
    }

   private:
    WaitingCalls* owner_ = nullptr;
  };

  // `cap`: how many calls may wait at once (--max-waiting-calls); 0: none may.
  explicit WaitingCalls(size_t cap) : cap_(cap) {}

  // A slot, or kResourceExhausted naming the flag when `cap` calls already wait. `what` names the
  // call in the message ("Watch", "Get with min_revision").
  Result<Slot> Enter(const std::string& what) {
    size_t now = in_use_.load(std::memory_order_relaxed);
    do {
      if (now >= cap_) {
        return Status(StatusCode::kResourceExhausted,
                      what + " refused: " + std::to_string(cap_) +
                          " calls already wait on this bridge (--max-waiting-calls); retry later");
      }
    } while (!in_use_.compare_exchange_weak(now, now + 1, std::memory_order_relaxed));
    return Slot(this);
  }

  size_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  size_t cap() const { return cap_; }

 private:
  const size_t cap_;
  std::atomic<size_t> in_use_{0};
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_CALL_LIMITS_H_
