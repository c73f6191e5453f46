// RemoteWatcher: a Watcher fed by the bridge's Watch stream, which it keeps open across bridge
// restarts: a reader thread reconnects with jittered exponential backoff and resumes after the
// last complete revision it received, so the caller sees one stream with no gap and no duplicate.
// Fragments of one revision are assembled before delivery (an atomic batch is never split), and
// only a bounded number of batches wait for the caller (the stream's flow control holds the
// rest), so a slow caller costs bounded memory here and is resynced by the bridge.
//
// With a Sink, batches are not queued: the reader thread hands each one to the sink as soon as it
// is complete, on the thread that read it from gRPC (RemoteDict's mirror: no hand-off between the
// stream and the map); Next is then not to be called.
//
// A dict deleted and created again under its name starts its revisions over. The watcher notices
// it from a stream ending with ABORTED, or from a bridge naming another incarnation
// (wire::kIncarnationMetadata) than the stream before it when it resumes (the dict was replaced
// while the bridge was unreachable). With a Sink it then watches the new dict from revision 0
// (a few tries when the name holds no dict yet: unlinking and creating again is not atomic),
// and the sink's owner is told first (OnDict) so that it can drop its copy. Without one (a
// caller's watcher, RemoteDict::Watch) it first resumes once after an ABORTED that named no new
// dict (the bridge ends streams so too when it fails to open its own handle), and ends when the
// bridge names another dict than before (even from revision 0) or aborts again: Next returns
// kAborted naming the incarnations, then and on every later call, and revision() stays at the
// last revision of the old dict it delivered; the caller watches again from 0 if it wants the
// new dict.
//
// Thread-safety: Next and revision from one thread at a time; Cancel from any thread. A Sink is
// called from the reader thread only, one batch at a time.
// Lifetime: owns its thread and stream; the destructor cancels and joins (after which the sink is
// never called again).
#ifndef SHMDICT_CLIENTS_CPP_REMOTE_WATCHER_H_
#define SHMDICT_CLIENTS_CPP_REMOTE_WATCHER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "shmdict/remote_dict.h"
#include "shmdict/store.h"
#include "shmdict/v1/dict.grpc.pb.h"

namespace shmdict::client {

// The channel, stub and options shared by a RemoteDict and its watchers.
struct Connection {
  RemoteOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Dict::Stub> stub;
  // "dict 'orders' via unix:/run/shmdict.sock": prefixes transport errors.
  std::string description;
  // A transport error (UNAVAILABLE "failed to connect"...) rewritten to name the dict.
  Status Describe(const grpc::Status& status) const;
  // Prepares a call's context: the deadline (none when `timeout` is zero) and the token.
  void Prepare(grpc::ClientContext* context, std::chrono::milliseconds timeout) const;
};

// A channel to options.address with the client's keepalive, backoff and credentials (TLS files
// or options.credentials). kInvalidArgument for unreadable TLS files. Connects lazily.
Result<std::shared_ptr<grpc::Channel>> OpenChannel(const RemoteOptions& options);
// A connection about options.dict over an existing channel (a stub of its own).
std::shared_ptr<Connection> ConnectionOver(std::shared_ptr<grpc::Channel> channel,
                                           const RemoteOptions& options);

// The dict incarnation a bridge named in `metadata` (wire::kIncarnationMetadata): its value when
// the key has exactly one, made of decimal digits only (leading zeros allowed) and at most
// UINT64_MAX. 0 ("unknown", as from an older bridge that names none) for anything else: no key,
// two values, an empty value, a sign, whitespace, any other byte (a NUL included), an overflow.
// Never a partial parse.
uint64_t IncarnationIn(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata);

class RemoteWatcher final : public Watcher {
 public:
  // Takes every complete batch, in order; a not-OK one is the stream's terminal error (the last
  // call). It owns the batch: moving its keys and values out copies nothing.
  using Sink = std::function<void(Result<ChangeBatch> batch)>;
  // Called with a Sink, on the reader thread, before the first batch of a stream whose dict is
  // not the one the batches before came from, or whose incarnation the bridge names for the
  // first time. `replaced`: the dict was deleted and created again since the batches before, so
  // drop what they built; the batches after start over from the new dict's first revision (or a
  // snapshot of it). `incarnation`: the new dict's (0: the bridge did not say).
  using OnDict = std::function<void(uint64_t incarnation, bool replaced)>;

  RemoteWatcher(std::shared_ptr<const Connection> connection, uint64_t after_revision,
                uint32_t max_changes_per_message, bool from_current = false, Sink sink = nullptr,
                OnDict on_dict = nullptr);
  ~RemoteWatcher() override;

  using Watcher::Next;
  Result<ChangeBatch> Next(const WatchLimits& limits, std::chrono::nanoseconds timeout) override;
  void Cancel() override;
  uint64_t revision() const override;

  bool connected() const { return connected_.load(std::memory_order_acquire); }
  // Whether the stream has received anything yet (a first connection may take until the bridge's
  // first message: a progress interval for a dict with nothing to send).
  bool ever_connected() const { return ever_connected_.load(std::memory_order_acquire); }

 private:
  void Run();
  // Queues a complete batch (waits while the queue is full), or hands it to sink_. False once
  // cancelled.
  bool Deliver(Result<ChangeBatch> batch);
  // At the first message of a stream from the dict with `incarnation` (0: not named): tells
  // on_dict_ when the dict is another than before. False when the stream must start over from
  // revision 0 instead (it resumed after a revision of the dict before).
  bool StartOn(uint64_t incarnation);
  // The terminal status of a watcher without a Sink whose dict was replaced: kAborted naming the
  // incarnation it watched and, when a resumed stream named it, `new_incarnation`.
  Status Replaced(uint64_t new_incarnation) const;
  // Sleeps for the backoff, or until cancelled. False once cancelled.
  bool Backoff(std::chrono::milliseconds wait);

  const std::shared_ptr<const Connection> connection_;
  const uint32_t max_changes_per_message_;
  const bool from_current_;
  const Sink sink_;
  const OnDict on_dict_;
  uint64_t resume_after_;  // reader thread only: the last complete revision received
  // Reader thread only: the incarnation of the dict the batches so far came from (0: unknown),
  // and whether the stream ended because that dict was replaced.
  uint64_t incarnation_ = 0;
  bool replaced_ = false;
  std::atomic<bool> connected_{false};
  std::atomic<bool> ever_connected_{false};

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Result<ChangeBatch>> queue_;
  bool cancelled_ = false;
  bool ended_ = false;  // a terminal error was queued; the reader thread stopped
  grpc::ClientContext* live_context_ = nullptr;
  uint64_t delivered_ = 0;
  std::thread reader_;
};

}  // namespace shmdict::client

#endif  // SHMDICT_CLIENTS_CPP_REMOTE_WATCHER_H_
