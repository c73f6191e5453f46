// LocalWatcher: the Watcher of a local Dict. A change stream with its own mapping of the main
// segment, its own log reader and position, independent of the Dict handle that made it:
//   - a slow consumer never holds anyone back: if writers lap it, it resyncs from the newest
//     snapshot, which it keeps mapped and hands out in chunks through a resumable cursor, so its
//     memory is one chunk, not the dict;
//   - it touches nothing of the handle, so several watchers run on their own threads next to the
//     handle, and a watcher may outlive the handle: it then fails with kFailedPrecondition
//     (handle_closed, shared with Dict::Impl) while its own mapping keeps every read safe.
//
// Thread-safety: thread-compatible; Cancel() from any thread. Lifetime: owns its mappings.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "change_notification.h"
#include "dict_impl.h"

namespace shmdict {

using internal::LocalView;
using internal::OpRef;
using internal::ReadOutcome;
using internal::SnapshotView;

namespace {

class LocalWatcher final : public Watcher {
 public:
  // `fd` is the dict handle's descriptor: the watcher maps the segment again and keeps only the
  // mapping.
  static Result<std::unique_ptr<LocalWatcher>> Create(const std::string& name, int fd, size_t bytes,
                                                      std::shared_ptr<std::atomic<bool>> closed);

  using Watcher::Next;
  Result<ChangeBatch> Next(const WatchLimits& limits, std::chrono::nanoseconds timeout) override;
  void Cancel() override;
  uint64_t revision() const override { return revision_; }

  // Where the stream starts (Dict::Watch): replaying the log from `position` (just after
  // `revision`'s record), delivering the changes after `deliver_after`; or, when the log no
  // longer holds them, with a snapshot.
  void StartAt(uint64_t revision, uint64_t position, uint64_t deliver_after) {
    revision_ = revision;
    position_ = position;
    deliver_after_ = deliver_after;
  }
  void StartWithSnapshot(uint64_t revision) {
    revision_ = revision;
    needs_snapshot_ = true;
  }
  const internal::LogReader& reader() const { return reader_; }

 private:
  LocalWatcher(std::string name, internal::Mapping map, std::shared_ptr<std::atomic<bool>> closed)
      : name_(std::move(name)),
        map_(std::move(map)),
        header_(reinterpret_cast<internal::MainHeader*>(map_.data())),
        ring_(header_, map_.data() + internal::kHeaderSize, header_->identity.log_capacity),
        reader_(name_, header_, &ring_),
        handle_closed_(std::move(closed)) {}

  Status Closed() const {
    return Status(StatusCode::kFailedPrecondition,
                  "the handle of dict " + QuoteForMessage(name_) + " was closed");
  }
  Status Cancelled() const {
    return Status(StatusCode::kCancelled,
                  "the watcher of dict " + QuoteForMessage(name_) + " was cancelled");
  }
  // Pins the newest snapshot and fills the first chunk of it into *batch.
  Status BeginSnapshot(const WatchLimits& limits, ChangeBatch* batch);
  // Fills the next chunk of the pinned snapshot; after the last one, moves to its revision.
  void NextSnapshotChunk(const WatchLimits& limits, ChangeBatch* batch);

  const std::string name_;
  internal::Mapping map_;  // our own: valid whatever the handle does
  internal::MainHeader* header_;
  internal::LogRing ring_;
  internal::LogReader reader_;  // points at ring_: a LocalWatcher never moves (heap, unique_ptr)
  std::shared_ptr<std::atomic<bool>> handle_closed_;
  std::atomic<bool> cancelled_{false};

  uint64_t revision_ = 0;       // delivered up to here
  uint64_t position_ = 0;       // log position after `revision_`'s record
  uint64_t deliver_after_ = 0;  // changes at or below this revision are read but not delivered
  bool needs_snapshot_ = false;
  // The snapshot being sent (null when none is, or for the empty dict of generation 0) and how
  // far. A published snapshot has no overlay: its entries are the dict at its revision.
  bool sending_snapshot_ = false;
  std::shared_ptr<const SnapshotView> snapshot_;
  SnapshotView::Cursor cursor_;
  uint64_t snapshot_revision_ = 0;
  uint64_t snapshot_position_ = 0;
  std::string payload_;
};

Result<std::unique_ptr<LocalWatcher>> LocalWatcher::Create(
    const std::string& name, int fd, size_t bytes, std::shared_ptr<std::atomic<bool>> closed) {
  // Writable: waiting sets the header's maybe_waiting flag.
  auto map = internal::MapSegment(fd, bytes, /*writable=*/true);
  if (!map.ok()) {
    return Status(map.status().code(),
                  "dict " + QuoteForMessage(name) +
                      ": cannot map it for a watcher: " + map.status().message());
  }
  return std::unique_ptr<LocalWatcher>(new LocalWatcher(name, std::move(*map), std::move(closed)));
}

void LocalWatcher::Cancel() {
  cancelled_.store(true, std::memory_order_seq_cst);
  internal::InterruptChangeWaiters(header_);
}

Status LocalWatcher::BeginSnapshot(const WatchLimits& limits, ChangeBatch* batch) {
  LocalView base;
  Status st = reader_.LoadLatestSnapshot(&base);
  if (!st.ok()) return st;
  snapshot_ = std::move(base.snapshot);
  cursor_ = SnapshotView::Cursor{};
  snapshot_revision_ = base.revision;
  snapshot_position_ = base.position;
  sending_snapshot_ = true;
  needs_snapshot_ = false;
  batch->snapshot_begins = true;
  NextSnapshotChunk(limits, batch);
  return Status::Ok();
}

void LocalWatcher::NextSnapshotChunk(const WatchLimits& limits, ChangeBatch* batch) {
  batch->is_snapshot = true;
  batch->snapshot_revision = snapshot_revision_;
  size_t bytes = 0;
  bool more = snapshot_ != nullptr;
  while (more) {
    // Peek at the next entry on a copy of the cursor: it is taken only if it fits (or is the
    // chunk's first).
    SnapshotView::Cursor next = cursor_;
    std::string_view key;
    ValueView value;
    if (!snapshot_->Next(&next, &key, &value)) {
      more = false;
      break;
    }
    const size_t entry_bytes = key.size() + value.data.size();
    if (!batch->snapshot_items.empty() &&
        (batch->snapshot_items.size() >= limits.max_changes ||
         entry_bytes > limits.max_bytes - std::min(bytes, limits.max_bytes))) {
      break;
    }
    batch->snapshot_items.emplace_back(std::string(key), Value(value));
    bytes += entry_bytes;
    cursor_ = next;
  }
  if (more) {
    // Whether this chunk is the last: only a further entry says so.
    SnapshotView::Cursor probe = cursor_;
    std::string_view key;
    ValueView value;
    more = snapshot_->Next(&probe, &key, &value);
  }
  if (more) {
    batch->revision = revision_;
    return;
  }
  batch->snapshot_ends = true;
  sending_snapshot_ = false;
  snapshot_.reset();
  revision_ = snapshot_revision_;
  position_ = snapshot_position_;
  deliver_after_ = snapshot_revision_;
  batch->revision = revision_;
}

Result<ChangeBatch> LocalWatcher::Next(const WatchLimits& limits,
                                       std::chrono::nanoseconds timeout) {
  if (cancelled_.load(std::memory_order_acquire)) return Cancelled();
  if (handle_closed_->load(std::memory_order_acquire)) return Closed();
  ChangeBatch batch;
  batch.revision = revision_;
  if (sending_snapshot_) {
    NextSnapshotChunk(limits, &batch);
    return batch;
  }
  if (needs_snapshot_) {
    Status st = BeginSnapshot(limits, &batch);
    if (!st.ok()) return st;
    return batch;
  }
  uint64_t committed = header_->commit.commit_revision.load(std::memory_order_acquire);
  if (committed <= revision_) {
    auto waited = internal::WaitForRevisionAfter(header_, name_, revision_, timeout,
                                                 {&cancelled_, handle_closed_.get()});
    if (!waited.ok()) {
      if (cancelled_.load(std::memory_order_acquire)) return Cancelled();
      if (handle_closed_->load(std::memory_order_acquire)) return Closed();
      if (waited.status().code() != StatusCode::kDeadlineExceeded) return waited.status();
      return batch;  // the timeout passed with nothing new
    }
    committed = *waited;
  }
  size_t bytes = 0;
  std::vector<Change> record;  // one revision's changes: delivered whole or not at all
  while (revision_ < committed) {
    uint64_t next = 0;
    switch (reader_.ReadRecord(position_, revision_ + 1, &payload_, &next)) {
      case ReadOutcome::kOk: {
        const uint64_t revision = revision_ + 1;
        const bool deliver = revision > deliver_after_;
        record.clear();
        size_t record_bytes = 0;
        bool valid = internal::ForEachOp(payload_, [&](const OpRef& op) {
          if (!deliver) return;
          Change c;
          c.revision = revision;
          c.op = op.op;
          c.key = std::string(op.key);
          if (op.op == ChangeOp::kSet) c.value = Value(op.type, std::string(op.value));
          record_bytes += c.key.size() + c.value.data().size();
          record.push_back(std::move(c));
        });
        if (!valid) {
          return reader_.Corrupt("the change record of revision " + std::to_string(revision) +
                                 " does not decode");
        }
        // A revision that does not fit waits for the next call (which reads it again), unless the
        // batch is empty: one atomic batch is never split.
        if (!batch.changes.empty() &&
            (record.size() > limits.max_changes - batch.changes.size() ||
             record_bytes > limits.max_bytes - std::min(bytes, limits.max_bytes))) {
          batch.revision = revision_;
          return batch;
        }
        for (Change& c : record) batch.changes.push_back(std::move(c));
        bytes += record_bytes;
        revision_ = revision;
        position_ = next;
        if (batch.changes.size() >= limits.max_changes || bytes >= limits.max_bytes) {
          batch.revision = revision_;
          return batch;
        }
        break;
      }
      case ReadOutcome::kLapped: {
        // Too slow: the log moved on. Deliver what we have; then resync from a snapshot.
        needs_snapshot_ = true;
        batch.revision = revision_;
        if (!batch.changes.empty()) return batch;
        Status st = BeginSnapshot(limits, &batch);
        if (!st.ok()) return st;
        return batch;
      }
      case ReadOutcome::kCorrupt:
        return reader_.Corrupt("the log record of revision " + std::to_string(revision_ + 1) +
                               " is invalid");
    }
  }
  batch.revision = revision_;
  return batch;
}

}  // namespace

Result<std::unique_ptr<Watcher>> Dict::Watch(uint64_t from_revision) {
  if (!impl_ || impl_->closed) std::abort();
  Impl& d = *impl_;
  auto created = LocalWatcher::Create(d.name, d.fd.get(), d.map.size(), d.handle_closed);
  if (!created.ok()) return created.status();
  std::unique_ptr<LocalWatcher> w = std::move(*created);
  d.CatchUp(false).IgnoreError();
  if (from_revision >= d.view.revision) {
    // From now (or a future revision): start at the handle's position.
    w->StartAt(d.view.revision, d.view.position, from_revision);
  } else {
    // Replay from the latest snapshot's position; if that is already past from_revision, the
    // first batch is the snapshot itself. Revision 0 with no snapshot replays the whole log.
    LocalView base;
    if (!w->reader().LoadLatestSnapshot(&base).ok() || base.revision > from_revision ||
        (from_revision == 0 && base.snapshot)) {
      w->StartWithSnapshot(from_revision);
    } else {
      w->StartAt(base.revision, base.position, from_revision);
    }
  }
  return std::unique_ptr<Watcher>(std::move(w));
}

}  // namespace shmdict
