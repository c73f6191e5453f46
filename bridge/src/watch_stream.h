// WatchStream: the server side of one Watch call (a gRPC callback reactor on raw bytes).
//
// A stream sends the frames of its dict's WatchPump (watch_pump.h): the changes read from the log
// once and encoded once for every stream of the dict; the stream keeps a cursor into the pump's
// window and hands gRPC another reference to a frame's bytes, so a subscriber costs no copy and no
// encoding. It reads the log with a Watcher of its own only while it is outside the window: when
// it starts behind it (a resume from an old revision), when its limits differ from the pump's
// (a smaller max_changes_per_message), and when it fell behind the window (a slow subscriber);
// that Watcher resyncs it from a snapshot (sent in chunks) if the log lapped it, and the stream
// rejoins the window as soon as it caught up. Memory per stream is, either way, one message,
// whatever the subscriber's speed. Each message is built or taken only when the previous one was
// written (exactly one write in flight, as gRPC's callback API requires), so many changes travel
// per message under load. Progress messages are sent only after every change up to their
// revision, so they can never overtake one (etcd #15220).
//
// The method is registered raw (v1::Dict::WithRawCallbackMethod_Watch): requests are parsed here,
// responses are serialized shmdict.v1.WatchResponse messages, the wire format a typed method
// sends.
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
#include <optional>
#include <string>

#include "authorizer.h"
#include "call_limits.h"
#include "dict_registry.h"
#include "metrics.h"
#include "shmdict/store.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "watch_pump.h"

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
  // The bytes of encoded changes the dict's pump keeps for its streams (WatchPump::Limits): a
  // stream whose next message is older than this reads on its own until it caught up.
  size_t window_bytes = size_t{16} << 20;
};

class WatchStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                          public Subscriber {
 public:
  // Checks the caller's token (authorizer) first: a refused stream finishes at once; the dict of
  // its start message is checked against the allow-list when it arrives.
  // `metrics` (may be null) counts the stream as a call in flight until it is done.
  // `waiting` (may be null: no cap) is the bridge's gate on waiting calls: the stream holds a
  // slot of it for its life, and finishes at once with RESOURCE_EXHAUSTED when none is free.
  WatchStream(DictRegistry* registry, const StreamLimits& limits, const Authorizer* authorizer,
              Metrics* metrics, grpc::CallbackServerContext& context,
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
  // Puts the next message into out_; false when there is nothing to send yet (or the stream
  // finished).
  bool FillLocked();
  enum class Shared { kReady, kIdle, kBehind };
  // The next message from the pump's window.
  Shared FillSharedLocked();
  // The next message from the stream's own watcher.
  bool FillOwnLocked();
  void FillChangesLocked();
  void FillSnapshotLocked(const ChangeBatch& batch);
  bool ProgressDueLocked() const;
  void FillProgressLocked(uint64_t revision);
  // Serializes response_ into out_; true.
  bool SerializeLocked();
  // Moves from the stream's own watcher to the pump's window when the stream is at a revision the
  // window covers.
  void TryJoinLocked();
  // Back to a watcher of its own, from sent_revision_; false (the stream finished) when the dict
  // cannot be read.
  bool LeaveWindowLocked();
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
  grpc::CallbackServerContext* const context_;  // gRPC's, alive until OnDone
  WaitingCalls::Slot slot_;                     // set in the constructor, released in OnDone

  std::mutex mu_;
  // The token the stream opened with (empty without a token file), and the authorizer's
  // generation it was last checked against. Held in memory only; never logged.
  std::string token_;
  uint64_t token_generation_ = 0;
  std::chrono::steady_clock::time_point start_deadline_;
  grpc::ByteBuffer request_bytes_;
  v1::WatchRequest request_;
  v1::WatchResponse response_;  // a message of the stream's own, before it is serialized
  grpc::ByteBuffer out_;        // the message in flight (a frame's shared bytes, or our own)
  std::string dict_name_;
  std::shared_ptr<DictEntry> entry_;  // set once subscribed
  // The dict's pump, while the stream is subscribed (null if it could not start, or when the
  // stream's limits differ from the pump's: the stream then reads on its own for good).
  std::shared_ptr<WatchPump> pump_;
  bool shared_ = false;  // reading the pump's window (cursor_), not watcher_
  uint64_t cursor_ = 0;
  // Changes of revision sent_revision_ + 1 already sent as fragments from the window: a stream
  // leaving the window in the middle of a revision must not send them twice.
  size_t fragment_sent_ = 0;
  // ... and how many of them the next batch of its own watcher skips.
  size_t skip_ = 0;
  bool in_snapshot_ = false;  // between a snapshot's first and last chunk
  uint64_t start_after_ = 0;  // the start's after_revision (a start ahead of the dict waits)
  // Held only while the stream reads on its own. Declared before watcher_, so destroyed after it:
  // the watcher fails once its handle closes.
  std::optional<DictRegistry::Lease> lease_;
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
