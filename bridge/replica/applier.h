// Applier: the feed thread of one replica dict. It adopts the local dict (ReplicaFeed), follows
// its Upstream from the revision the dict records, and commits every upstream step as one local
// revision; when the upstream can no longer resume it lists again and replaces the contents as
// one batch of real changes (local watchers never see a gap). While the upstream is unreachable
// the dict keeps its last state ("fail static") and the status says how stale it is; the applier
// follows again with backoff (0.8 s doubling to 30 s, +-20% jitter), from the next endpoint.
//
// Thread-safety: Start/Stop from the owner's thread; WaitApplied, counters and Ready from any
// thread. Lifetime: the Upstream outlives the Applier; the Dict passed to Start need not (the
// applier attaches handles of its own).
#ifndef SHMDICT_BRIDGE_REPLICA_APPLIER_H_
#define SHMDICT_BRIDGE_REPLICA_APPLIER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "shmdict/dict.h"
#include "shmdict/replica_feed.h"
#include "upstream.h"

namespace shmdict::replica {

struct ApplierOptions {
  std::chrono::milliseconds initial_backoff{800};
  std::chrono::milliseconds max_backoff{30000};
};

struct ApplierCounters {
  uint64_t relists = 0;        // kReplace steps applied (the first list included)
  uint64_t steps_applied = 0;  // upstream revisions committed locally
  uint64_t reconnects = 0;     // times the upstream was followed again after an error
};

class Applier {
 public:
  // Adopts `dict` for `upstream` and starts the feed thread. Errors: those of ReplicaFeed::Adopt
  // (kAlreadyExists: another live shmdict-replica keeps this dict).
  static Result<std::unique_ptr<Applier>> Start(Dict& dict, Upstream& upstream,
                                                ApplierOptions options);
  ~Applier();  // stops the feed thread

  // Stops following (idempotent); the dict keeps its contents and stays a replica.
  void Stop();

  // Whether the first step from the upstream has been applied since Start (the local dict then
  // mirrors the upstream as of that moment).
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  bool WaitReady(std::chrono::steady_clock::time_point deadline);

  // Waits until upstream revision `upstream_revision` has been applied locally and returns the
  // local revision that applied it (the current local revision when it can no longer tell).
  // kDeadlineExceeded at `deadline` ("committed upstream at revision R, not applied here within
  // ..."), kUnavailable once stopped.
  Result<uint64_t> WaitApplied(uint64_t upstream_revision,
                               std::chrono::steady_clock::time_point deadline);

  uint64_t upstream_revision() const { return applied_upstream_.load(std::memory_order_acquire); }

  // Set when the feed stopped for good: another shmdict-replica took the dict over (this one was
  // judged dead). The process should exit; its --listen writes could only time out.
  std::optional<Status> fatal() const;
  // Waits until ready(), fatal(), Stop() or `deadline`.
  ApplierCounters counters() const;

  // The feed, for SetListen (the process sets it once listening).
  Status SetListen(std::string_view address);

 private:
  Applier(Dict own_handle, Upstream& upstream, ApplierOptions options, ReplicaFeed feed,
          const ReplicaResumePoint& resume);
  void Run();
  // Commits one step; returns an error only when the local dict refuses it (then the feed stops
  // following until the next Follow).
  Status ApplyStep(UpstreamStep& step);
  // `relist`: counted as one (under the same lock as the revision, so that a waiter that sees
  // the revision sees the count).
  Result<uint64_t> Commit(const std::vector<Change>& changes, uint64_t upstream_revision,
                          bool relist = false, bool history_restarted = false);
  // Compares the upstream's identity with the one recorded before following it: another one
  // means a new history (listed again from nothing). False when the upstream cannot be reached.
  bool CheckIdentity();
  void Sleep(std::chrono::milliseconds duration);

  // A handle of the feed thread's own (for listing the local contents before a replacement): a
  // Dict handle is not shared between threads, and the caller's stays the caller's.
  Dict dict_;
  std::atomic<uint64_t> last_local_{0};  // the local revision of the latest commit
  Upstream& upstream_;
  const ApplierOptions options_;
  // The feed is one thread's at a time (replica_feed.h): the feed thread commits while the owner
  // sets the listen address. SetContact, safe from any thread, needs no lock.
  std::mutex feed_mu_;
  ReplicaFeed feed_;

  std::atomic<bool> stopping_{false};
  std::atomic<bool> ready_{false};
  std::atomic<uint64_t> applied_upstream_{0};
  uint64_t recorded_identity_ = 0;  // feed thread only
  // The next Follow starts from nothing and its replacement may go back in revision: the
  // upstream's history started over (feed thread only).
  bool history_restarted_ = false;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  // (upstream revision, local revision) of recent commits, oldest first, for WaitApplied.
  std::deque<std::pair<uint64_t, uint64_t>> recent_;
  ApplierCounters counters_;
  std::optional<Status> fatal_;
  std::unique_ptr<UpstreamStream> stream_;  // guarded by mu_ (Stop cancels it)

  std::thread thread_;
};

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_APPLIER_H_
