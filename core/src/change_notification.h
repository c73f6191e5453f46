// Change notification: "wait until the published revision exceeds R" on the dict's shared futex,
// and the writer's wake after a commit. Writers pay for a wake only when someone may be waiting
// (docs/DESIGN.md, rule 8); the protocol is in docs/LAYOUT.md (WaitBlock).
//
// Thread-safety: free functions, safe from any thread of any process mapping the header.
#ifndef SHMDICT_CORE_CHANGE_NOTIFICATION_H_
#define SHMDICT_CORE_CHANGE_NOTIFICATION_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "layout.h"
#include "shmdict/status.h"

namespace shmdict::internal {

// Called by a writer right after its commit store (which must be seq_cst).
void WakeChangeWaiters(MainHeader* header);
// Blocks until commit_revision > after and returns it; kDeadlineExceeded (naming `dict`) when the
// timeout passes first; kCancelled as soon as one of `interrupts` reads true (whoever sets one
// then calls InterruptChangeWaiters, so the wait cannot sleep through it).
Result<uint64_t> WaitForRevisionAfter(
    MainHeader* header, std::string_view dict, uint64_t after, std::chrono::nanoseconds timeout,
    std::initializer_list<const std::atomic<bool>*> interrupts = {});
// Wakes every waiter of the dict (on this host) so that it re-checks its interrupt flags; those
// not interrupted go back to sleep. Call after setting a flag (seq_cst).
void InterruptChangeWaiters(MainHeader* header);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_CHANGE_NOTIFICATION_H_
