// WatchStream: the server side of one Watch call (a gRPC callback reactor).
//
// It reads the dict's shared log with a Watcher of its own, at its own pace: memory per stream is
// one message, whatever the subscriber's speed, and a subscriber lapped by the log is resynced
// from a snapshot (sent in chunks) instead of queued. Each message is built only when the previous
// one was written (exactly one write in flight, as gRPC's callback API requires), so many changes
// travel per message under load. Progress messages are built by the same path, after every change
// already sent, so they can never overtake one (etcd #15220).
//
// Who calls Pump: gRPC's reactions (a read or a write done) and the registry's notifier thread
// (the dict changed, or a tick passed). All state is under one mutex; nothing blocks inside it.
//
// The registry also tracks every stream from its creation (DictRegistry::Track): the housekeeping
// pokes are what end a stream whose start message never comes (StreamLimits::start_timeout), and
// what make a token reload reach open streams: each stream keeps the token it opened with and
// asks the authorizer again whenever its token generation moved, ending with UNAUTHENTICATED once
// the token is gone (a Watch needs read access only, so a token downgraded to "ro" keeps it).
//
// Lifetime: gRPC owns the reactor; OnDone unsubscribes, untracks and deletes it.
#ifndef SHMDICT_BRIDGE_WATCH_STREAM_H_
#define SHMDICT_BRIDGE_WATCH_STREAM_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "authorizer.h"
#include "call_limits.h"
#include "dict_registry.h"
#include "metrics.h"
#include "shmdict/store.h"
#include "shmdict/v1/dict.grpc.pb.h"

namespace shmdict::bridge {

// How far ahead of the dict's revision a Watch may start: a start after_revision more than this
// ahead of the dict when the stream opens ends with OUT_OF_RANGE (a client that far ahead is
// confused, not early). Within it, the stream waits for the dict, as etcd's future start revision.
constexpr uint64_t kWatchStartHorizon = uint64_t{1} << 32;

struct StreamLimits {
  // Values larger than this are sent as "too large" markers; a message holding more than this
  // many bytes of changes of one revision is split into fragments.
  size_t max_message_bytes = size_t{64} << 20;
  // How much a message gathers under load before it is sent.
  size_t batch_bytes = size_t{1} << 20;
  uint32_t default_max_changes = 4096;
  std::chrono::milliseconds default_progress_interval{1000};
  std::chrono::milliseconds min_progress_interval{50};
  // A stream whose `start` message has not come this long after it opened ends with
  // DEADLINE_EXCEEDED (it would otherwise hold its slot, and keep --idle-exit away, forever).
  std::chrono::milliseconds start_timeout{10000};
};

class WatchStream final : public grpc::ServerBidiReactor<v1::WatchRequest, v1::WatchResponse>,
                          public Subscriber {
 public:
  // Checks the caller's token (authorizer) first: a refused stream finishes at once; the dict of
  // its start message is checked against the allow-list when it arrives.
  // `metrics` (may be null) counts the stream as a call in flight until it is done.
  // `waiting` (may be null: no cap) is the bridge's gate on waiting calls: the stream holds a
  // slot of it for its life, and finishes at once with RESOURCE_EXHAUSTED when none is free.
  WatchStream(DictRegistry* registry, const StreamLimits& limits, const Authorizer* authorizer,
              Metrics* metrics, const grpc::CallbackServerContext& context,
              WaitingCalls* waiting = nullptr);

  void Pump() override;
  void End(const Status& status) override;
  uint64_t SentRevision() const override {
    return published_sent_revision_.load(std::memory_order_relaxed);
  }

 private:
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

  Status Start(const v1::WatchRequest::Start& start);
  // Builds the next message into response_; false when there is nothing to send yet.
  bool FillLocked();
  void FillChangesLocked();
  void FillSnapshotLocked(const ChangeBatch& batch);
  void PumpLocked();
  // False (and the stream finishing) when the token it opened with was revoked since.
  bool CredentialsValidLocked();
  void FinishLocked(const grpc::Status& status);

  DictRegistry* const registry_;
  const StreamLimits limits_;
  const Authorizer* const authorizer_;
  Metrics* const metrics_;
  Metrics::Call call_;
  const std::string peer_;
  WaitingCalls::Slot slot_;  // set in the constructor, released in OnDone

  std::mutex mu_;
  // The token the stream opened with (empty without a token file), and the authorizer's
  // generation it was last checked against. Held in memory only; never logged.
  std::string token_;
  uint64_t token_generation_ = 0;
  std::chrono::steady_clock::time_point start_deadline_;
  v1::WatchRequest request_;
  v1::WatchResponse response_;
  std::string dict_name_;
  std::shared_ptr<DictEntry> entry_;  // set once subscribed
  // Declared before watcher_, so destroyed after it: the watcher fails once its handle closes.
  std::unique_ptr<Dict> dict_;
  std::unique_ptr<Watcher> watcher_;
  WatchLimits watch_limits_;
  std::chrono::milliseconds progress_interval_{1000};
  std::chrono::steady_clock::time_point last_sent_;
  bool started_ = false;
  bool write_in_flight_ = false;
  bool progress_requested_ = false;
  bool finished_ = false;
  bool finish_after_write_ = false;
  grpc::Status finish_status_;
  // Changes read from the watcher but not yet sent (a revision larger than a message).
  ChangeBatch pending_;
  size_t pending_next_ = 0;
  uint64_t sent_revision_ = 0;  // every revision up to here went out completely
  std::atomic<uint64_t> published_sent_revision_{0};  // sent_revision_, for SentRevision()
  grpc::Status final_status_;                         // how the stream finished (metrics)
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_WATCH_STREAM_H_
