// WatchPump: one reader of a dict's log for all of its Watch streams, and the shared window of
// encoded messages they send.
//
// Why: a stream that reads the log with a Watcher of its own copies every change into a Change,
// into protobuf and through gRPC's serializer once per subscriber; with eight subscribers the
// slowest got 0.30 of one subscriber's rate, and 500 streams took the bridge past 1 GB. The pump
// reads the log once, encodes each batch once into a serialized shmdict.v1.WatchResponse held in
// reference-counted gRPC slices (a "frame"), and every stream writes the same bytes: a write hands
// gRPC another reference to the slices, never a copy. The wire format is the WatchResponse the
// streams always sent, so clients do not notice.
//
// Bounds: the window keeps the newest frames up to Limits::window_bytes (at least the newest
// frame); older frames are dropped from it whatever the subscribers' pace. A stream keeps a cursor
// (the sequence number of the next frame it sends) and, while a write is in flight, a reference to
// that one frame: memory per stream does not grow with its lag. What a slow subscriber costs:
// once its cursor falls out of the window it reads the log with a Watcher of its own again (as
// every stream did before the pump), which resyncs it from a snapshot if the log lapped it too,
// and it rejoins the window once it caught up. The pump itself never waits for a subscriber.
//
// A frame carries, besides its bytes, the revisions it covers, so that a stream can join the
// window at a revision inside a frame (it then sends that frame's changes after its revision,
// encoded once for itself, and the following frames shared).
//
// Thread-safety: Fill is called by one thread at a time (the dict's notifier); every other method
// may be called from any thread. The pump's lock is the innermost lock of the bridge: nothing is
// called while it is held. Lifetime: shared by the registry entry (from the first Watch stream of
// the dict to the last) and by each stream that uses it; the frames' bytes live as long as gRPC or
// a stream holds a reference (LiveFrames counts them).
#ifndef SHMDICT_BRIDGE_WATCH_PUMP_H_
#define SHMDICT_BRIDGE_WATCH_PUMP_H_

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "shmdict/dict.h"
#include "shmdict/store.h"
#include "shmdict/v1/dict.pb.h"

namespace shmdict::bridge {

// What EncodeChanges put into a message.
struct EncodedChanges {
  size_t count = 0;                  // changes moved into the message
  uint64_t complete = 0;             // every revision up to here is complete after the message
  uint64_t last_revision = 0;        // the revision of its last change
  size_t last_revision_changes = 0;  // how many of its changes are of that revision
  bool more_fragments = false;       // it ends inside a revision (the rest follows)
};

// Moves the changes of `batch` from index *next on into `out` (cleared first, kind CHANGES, its
// revision field left unset), as many as fit in `max_message_bytes` (at least one), and advances
// *next past them; when the last one is sent, `batch` is reset. A value larger than the limit
// travels as a "too large" marker. The one encoder of changes: the pump's frames and a stream
// reading on its own produce the same messages.
EncodedChanges EncodeChanges(ChangeBatch* batch, size_t* next, size_t max_message_bytes,
                             v1::WatchResponse* out);

// One encoded WatchResponse of kind CHANGES in the window.
struct WatchFrame {
  uint64_t seq = 0;
  uint64_t after = 0;                // every revision up to here was complete before this frame
  uint64_t complete = 0;             // ... and up to here after it (its revision field)
  uint64_t last_revision = 0;        // the revision of its last change
  bool starts_mid_revision = false;  // the previous frame was a fragment of the same revision
  bool more_fragments = false;
  size_t changes = 0;
  size_t last_revision_changes = 0;
  grpc::ByteBuffer bytes;  // copies share the slices
};

class WatchPump {
 public:
  struct Limits {
    size_t max_message_bytes = size_t{64} << 20;
    size_t batch_bytes = size_t{1} << 20;
    uint32_t max_changes = 4096;
    size_t window_bytes = size_t{16} << 20;
    bool operator==(const Limits&) const = default;
  };

  // Starts reading `dict` (a handle of its own, kept for the pump's life) after its current
  // revision. The dict's errors from Watch otherwise.
  static Result<std::shared_ptr<WatchPump>> Start(std::unique_ptr<Dict> dict, const Limits& limits);
  ~WatchPump();
  WatchPump(const WatchPump&) = delete;
  WatchPump& operator=(const WatchPump&) = delete;

  const Limits& limits() const { return limits_; }

  // Reads what the log holds beyond the pump's revision into the window (at most about
  // window_bytes per call). When the log lapped the pump itself (it was not called for too long),
  // the window restarts at the dict's revision and every cursor into the old one is behind.
  // A failing watcher (the handle closed, the log corrupted) stops the pump: every cursor is then
  // behind, and the streams read on their own (and meet the error themselves).
  // Returns how many times the log lapped the pump during the call (the metrics' restarts).
  uint64_t Fill();

  // A stream at revision `revision` (every revision up to it sent completely, nothing of a later
  // one) joins: true with *cursor set when the window (and the frames to come) hold every change
  // after `revision`; false when they do not (the stream reads on its own).
  bool Join(uint64_t revision, uint64_t* cursor) const;

  enum class Take { kFrame, kNone, kBehind };
  // The frame at *cursor (a copy sharing its bytes), advancing *cursor: kFrame. kNone when the
  // stream has every frame; *head then is the revision up to which the pump read the log.
  // kBehind when the frame was dropped from the window (or the pump stopped or restarted).
  Take Next(uint64_t* cursor, WatchFrame* frame, uint64_t* head) const;

  // Whether the pump stopped for good (its watcher failed): the registry starts a new one for the
  // next stream, which may meet the dict again readable (a transient error) or fail the same way.
  bool failed() const;

  // Frames whose bytes are still referenced by anyone (the window, a stream, gRPC), across all
  // pumps of the process: a test's proof that the shared buffers are released.
  static int64_t LiveFrames();

 private:
  WatchPump(std::unique_ptr<Dict> dict, std::unique_ptr<Watcher> watcher, const Limits& limits,
            uint64_t revision);
  // Appends frames (under mu_), dropping the oldest beyond the window's bytes.
  void Append(std::vector<WatchFrame> frames, size_t bytes, uint64_t head);
  void Restart(uint64_t head);

  const Limits limits_;
  const WatchLimits watch_limits_;

  // Read only by Fill (one thread at a time).
  std::unique_ptr<Dict> dict_;  // declared before watcher_: outlives it
  std::unique_ptr<Watcher> watcher_;
  uint64_t encoded_revision_ = 0;  // complete revision after the last frame encoded
  bool last_was_fragment_ = false;
  bool stopped_ = false;

  mutable std::mutex mu_;
  std::deque<WatchFrame> frames_;  // GUARDED_BY(mu_), frames_[i].seq == first_seq_ + i
  uint64_t first_seq_ = 0;         // GUARDED_BY(mu_)
  uint64_t next_seq_ = 0;          // GUARDED_BY(mu_): the seq of the next frame appended
  size_t window_bytes_ = 0;        // GUARDED_BY(mu_)
  uint64_t head_ = 0;              // GUARDED_BY(mu_): every change up to here is in a frame
  bool failed_ = false;            // GUARDED_BY(mu_)
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_WATCH_PUMP_H_
