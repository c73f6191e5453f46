#include "watch_pump.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "log_text.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {

namespace {

// Bytes a change adds to a message beyond its key and value (tags, lengths, revision).
constexpr size_t kPerItemOverhead = 32;

std::atomic<int64_t> live_frames{0};

// The slices' destroy callback: gRPC calls it when the last reference to a frame's bytes goes,
// on whichever thread dropped it.
void ReleaseFrameBytes(void* bytes) {
  delete static_cast<std::string*>(bytes);
  live_frames.fetch_sub(1, std::memory_order_relaxed);
}

// The serialized message in one slice that owns its string: every copy of the ByteBuffer shares
// it, and LiveFrames counts it until the last reference is gone.
grpc::ByteBuffer Serialize(const v1::WatchResponse& message) {
  auto* bytes = new std::string();
  message.SerializeToString(bytes);
  live_frames.fetch_add(1, std::memory_order_relaxed);
  grpc::Slice slice(bytes->data(), bytes->size(), &ReleaseFrameBytes, bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

EncodedChanges EncodeChanges(ChangeBatch* batch, size_t* next, size_t max_message_bytes,
                             v1::WatchResponse* out) {
  out->Clear();
  out->set_kind(v1::WatchResponse::KIND_CHANGES);
  // The changes are moved into the message: each is encoded once, and copies of every key and
  // value were a third of the bridge's time at full fan-out.
  std::vector<Change>& changes = batch->changes;
  EncodedChanges encoded;
  size_t bytes = 0;
  size_t i = *next;
  for (; i < changes.size(); ++i) {
    Change& change = changes[i];
    const size_t value_bytes = change.value.data().size();
    const bool too_large = change.op == ChangeOp::kSet &&
                           value_bytes + change.key.size() + kPerItemOverhead > max_message_bytes;
    const size_t size = change.key.size() + kPerItemOverhead + (too_large ? 0 : value_bytes);
    if (i > *next && bytes + size > max_message_bytes) break;
    bytes += size;
    v1::Change* proto = out->add_changes();
    proto->set_revision(change.revision);
    proto->set_op(wire::ToProto(change.op));
    proto->set_key(std::move(change.key));
    if (change.op != ChangeOp::kSet) continue;
    if (too_large) {
      proto->set_value_too_large(true);
      proto->set_value_size(value_bytes);
      proto->set_value_type(static_cast<uint32_t>(change.value.type()));
    } else {
      wire::ToProto(std::move(change.value), proto->mutable_value());
    }
  }
  encoded.count = i - *next;
  encoded.last_revision = changes[i - 1].revision;
  for (size_t j = i; j > *next && changes[j - 1].revision == encoded.last_revision; --j) {
    ++encoded.last_revision_changes;
  }
  if (i == changes.size()) {
    encoded.complete = batch->revision;
    *batch = ChangeBatch();
    *next = 0;
  } else {
    encoded.more_fragments = changes[i].revision == changes[i - 1].revision;
    out->set_more_fragments(encoded.more_fragments);
    encoded.complete = encoded.more_fragments ? changes[i].revision - 1 : changes[i - 1].revision;
    *next = i;
  }
  return encoded;
}

Result<std::shared_ptr<WatchPump>> WatchPump::Start(std::unique_ptr<Dict> dict,
                                                    const Limits& limits) {
  const uint64_t revision = dict->revision();
  Result<std::unique_ptr<Watcher>> watcher = dict->Watch(revision);
  if (!watcher.ok()) return watcher.status();
  return std::shared_ptr<WatchPump>(
      new WatchPump(std::move(dict), std::move(*watcher), limits, revision));
}

WatchPump::WatchPump(std::unique_ptr<Dict> dict, std::unique_ptr<Watcher> watcher,
                     const Limits& limits, uint64_t revision)
    : limits_(limits),
      watch_limits_{limits.max_changes, limits.batch_bytes},
      dict_(std::move(dict)),
      watcher_(std::move(watcher)),
      encoded_revision_(revision),
      head_(revision) {}

WatchPump::~WatchPump() = default;

int64_t WatchPump::LiveFrames() { return live_frames.load(std::memory_order_relaxed); }

uint64_t WatchPump::Fill() {
  if (stopped_) return 0;
  uint64_t restarts = 0;
  std::vector<WatchFrame> frames;
  size_t bytes = 0;
  v1::WatchResponse message;
  // Bounded per call, so that a writer faster than the encoding cannot keep the notifier from
  // poking the streams: what is left is read on the next call.
  while (bytes < limits_.window_bytes) {
    Result<ChangeBatch> batch = watcher_->Next(watch_limits_, std::chrono::nanoseconds::zero());
    if (!batch.ok()) {
      spdlog::warn("watch pump stopped dict={} revision={}: {}", LogText(dict_->name()),
                   encoded_revision_, batch.status().ToString());
      stopped_ = true;
      std::lock_guard lock(mu_);
      failed_ = true;
      frames_.clear();
      window_bytes_ = 0;
      return restarts;
    }
    if (batch->is_snapshot) {
      // Lapped by the log: the changes since encoded_revision_ are gone. The window restarts at
      // the dict's revision; streams behind it resync on their own, as before the pump.
      const uint64_t now = dict_->revision();
      Result<std::unique_ptr<Watcher>> restarted = dict_->Watch(now);
      if (!restarted.ok()) {
        watcher_->Cancel();
        continue;  // the next Next fails (kCancelled): the pump stops above
      }
      watcher_ = std::move(*restarted);
      spdlog::info("watch pump lapped by the log dict={} revision={}: restarting at {}",
                   LogText(dict_->name()), encoded_revision_, now);
      frames.clear();  // their changes are in no window a stream can join
      bytes = 0;
      encoded_revision_ = now;
      last_was_fragment_ = false;
      Restart(now);
      ++restarts;
      continue;
    }
    if (batch->changes.empty()) {
      encoded_revision_ = std::max(encoded_revision_, batch->revision);
      break;
    }
    size_t next = 0;
    while (!batch->changes.empty()) {
      WatchFrame& frame = frames.emplace_back();
      const EncodedChanges encoded =
          EncodeChanges(&*batch, &next, limits_.max_message_bytes, &message);
      frame.after = encoded_revision_;
      frame.complete = std::max(encoded_revision_, encoded.complete);
      frame.last_revision = encoded.last_revision;
      frame.starts_mid_revision = last_was_fragment_;
      frame.more_fragments = encoded.more_fragments;
      frame.changes = encoded.count;
      frame.last_revision_changes = encoded.last_revision_changes;
      message.set_revision(frame.complete);
      frame.bytes = Serialize(message);
      bytes += frame.bytes.Length();
      encoded_revision_ = frame.complete;
      last_was_fragment_ = encoded.more_fragments;
    }
  }
  Append(std::move(frames), bytes, encoded_revision_);
  return restarts;
}

void WatchPump::Append(std::vector<WatchFrame> frames, size_t bytes, uint64_t head) {
  std::lock_guard lock(mu_);
  for (WatchFrame& frame : frames) {
    frame.seq = next_seq_++;
    frames_.push_back(std::move(frame));
  }
  window_bytes_ += bytes;
  head_ = std::max(head_, head);
  // The oldest go first; the newest stays even alone over the bound (a stream must be able to
  // take it). Their bytes live on while a stream's write holds them.
  while (frames_.size() > 1 && window_bytes_ > limits_.window_bytes) {
    window_bytes_ -= frames_.front().bytes.Length();
    frames_.pop_front();
    ++first_seq_;
  }
}

void WatchPump::Restart(uint64_t head) {
  std::lock_guard lock(mu_);
  frames_.clear();
  window_bytes_ = 0;
  // A gap in the sequence: every cursor into the old window is now behind it.
  next_seq_ += 1;
  first_seq_ = next_seq_;
  head_ = head;
}

bool WatchPump::failed() const {
  std::lock_guard lock(mu_);
  return failed_;
}

bool WatchPump::Join(uint64_t revision, uint64_t* cursor) const {
  std::lock_guard lock(mu_);
  if (failed_) return false;
  // Every change after `base` is in the window or in frames still to come.
  uint64_t base = head_;
  if (!frames_.empty()) {
    const WatchFrame& oldest = frames_.front();
    // Its revision's first fragment was dropped: only a stream past that revision can join.
    base = oldest.starts_mid_revision ? oldest.after + 1 : oldest.after;
  }
  if (revision < base) return false;
  *cursor = first_seq_;
  return true;
}

WatchPump::Take WatchPump::Next(uint64_t* cursor, WatchFrame* frame, uint64_t* head) const {
  std::lock_guard lock(mu_);
  if (failed_ || *cursor < first_seq_) return Take::kBehind;
  if (*cursor >= next_seq_) {
    *head = head_;
    return Take::kNone;
  }
  *frame = frames_[*cursor - first_seq_];
  ++*cursor;
  return Take::kFrame;
}

}  // namespace shmdict::bridge
