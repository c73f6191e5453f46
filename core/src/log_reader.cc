#include "log_reader.h"

#include <algorithm>
#include <utility>

#include "blob_segment.h"
#include "change_record.h"
#include "segment.h"

namespace shmdict::internal {
namespace {

// Retries when snapshots are replaced faster than a reader can map them; practically never hit.
constexpr int kSnapshotRetries = 1000;
// ReplayLog's guess of the overlay's growth: the log bytes of one small change (a record's op
// header, a short key, a short value: 58 bytes for a 14-byte key and a 32-byte value), and a cap
// on the guess (two 32-byte slots per key: 1 MiB of slots).
constexpr uint64_t kReplayBytesPerKey = 64;
constexpr uint64_t kMaxReplayReservation = 1 << 14;
constexpr uint64_t kReplayReserveRevisions = 8;

}  // namespace

Status LogReader::Corrupt(const std::string& what) const {
  return Status(StatusCode::kDataLoss, "dict " + QuoteForMessage(name_) + ": " + what +
                                           ": the segment is corrupted; unlink the dict");
}

Result<std::shared_ptr<const SnapshotView>> LogReader::OpenLatestSnapshot() const {
  uint64_t missing_generation = 0;
  int missing_count = 0;
  for (int attempt = 0; attempt < kSnapshotRetries; ++attempt) {
    const uint64_t generation = header_->commit.snapshot_generation.load(std::memory_order_acquire);
    // Generations come from next_generation, so a published one can never be past it.
    if (generation > header_->compaction.next_generation.load(std::memory_order_relaxed)) {
      return Corrupt("the published snapshot generation " + std::to_string(generation) +
                     " was never issued");
    }
    if (generation == 0) return std::shared_ptr<const SnapshotView>();
    if (built_ != nullptr) {
      if (auto ours = built_->Find(generation)) return ours;
    }
    auto snap = SnapshotView::Open(name_, generation);
    if (snap.ok()) return snap;
    // Not found: a newer snapshot replaced it between our load and the open; try the newer one.
    // The same generation missing again and again is not a race: its segment is gone.
    if (snap.status().code() != StatusCode::kNotFound) return snap.status();
    missing_count = generation == missing_generation ? missing_count + 1 : 1;
    missing_generation = generation;
    if (missing_count >= 3) {
      return Corrupt("the published snapshot " +
                     QuoteForMessage(SnapshotSegment(name_, generation)) + " is missing");
    }
  }
  return Status(
      StatusCode::kUnavailable,
      "dict " + QuoteForMessage(name_) + ": snapshots are replaced faster than they can be mapped");
}

Status LogReader::LoadLatestSnapshot(LocalView* view) const {
  const uint64_t generation = header_->commit.snapshot_generation.load(std::memory_order_acquire);
  if (generation != 0 && view->snapshot && view->snapshot->generation() == generation) {
    view->ResetTo(view->snapshot);  // already mapped
    return Status::Ok();
  }
  auto snap = OpenLatestSnapshot();
  if (!snap.ok()) return snap.status();
  view->ResetTo(std::move(*snap));
  return Status::Ok();
}

ReadOutcome LogReader::ReadRecord(uint64_t position, uint64_t expected_revision,
                                  std::string* payload, uint64_t* next) const {
  RecordHeader h;
  for (int records = 0; records < 2; ++records) {
    switch (ring_->Read(position, &h, payload)) {
      case LogRing::ReadResult::kLapped:
        return ReadOutcome::kLapped;
      case LogRing::ReadResult::kCorrupt:
        return ReadOutcome::kCorrupt;
      case LogRing::ReadResult::kPadding:
        position += h.length;
        continue;
      case LogRing::ReadResult::kRecord:
        break;
    }
    if (h.revision != expected_revision) return ReadOutcome::kCorrupt;
    *next = position + RecordLength(RecordBodyBytes(h));
    if (h.kind != static_cast<uint8_t>(RecordKind::kExternal)) return ReadOutcome::kOk;
    // A large change lives in its own segment; the record carries its size and checksum.
    const std::string reference = std::move(*payload);
    switch (ReadBlobSegment(name_, h.revision, reference, payload)) {
      case BlobReadOutcome::kOk:
        return ReadOutcome::kOk;
      case BlobReadOutcome::kGone:
        return ReadOutcome::kLapped;
      case BlobReadOutcome::kCorrupt:
        return ReadOutcome::kCorrupt;
    }
  }
  return ReadOutcome::kCorrupt;  // two paddings in a row cannot happen
}

Status LogReader::ReplayLog(LocalView* view, uint64_t target, std::string* scratch) const {
  // An attacher (or a reader far behind) replays up to a log's worth of changes: size the overlay
  // for them once. The estimate, one key per kReplayBytesPerKey log bytes, errs low for tiny
  // changes (the overlay then grows once more) and is capped, so big values over-reserve little.
  // A reader a few revisions behind (the common catch-up) skips it: the writer's line is hot.
  const uint64_t tail = target - view->revision >= kReplayReserveRevisions
                            ? header_->writer.writer_tail.load(std::memory_order_relaxed)
                            : 0;
  if (tail > view->position) {
    view->overlay.Reserve(
        view->overlay.size() +
        std::min<uint64_t>((tail - view->position) / kReplayBytesPerKey, kMaxReplayReservation));
  }
  int laps = 0;
  while (view->revision < target) {
    uint64_t next = 0;
    switch (ReadRecord(view->position, view->revision + 1, scratch, &next)) {
      case ReadOutcome::kOk: {
        const uint64_t revision = view->revision + 1;
        const bool valid = ForEachOp(*scratch, [&](const OpRef& op) { view->Apply(op, revision); });
        if (!valid) {
          return Corrupt("the change record of revision " + std::to_string(revision) +
                         " does not decode");
        }
        view->revision = revision;
        view->position = next;
        break;
      }
      case ReadOutcome::kLapped: {
        if (++laps > kSnapshotRetries) {
          return Status(StatusCode::kUnavailable,
                        "dict " + QuoteForMessage(name_) + ": writers keep lapping this reader");
        }
        Status s = LoadLatestSnapshot(view);
        if (!s.ok()) return s;
        // Writers never reclaim past the published snapshot, so being lapped right at the
        // snapshot that is still the published one means the header is damaged.
        if (view->position < header_->commit.reclaim_position.load(std::memory_order_acquire) &&
            header_->commit.snapshot_generation.load(std::memory_order_acquire) ==
                view->generation()) {
          return Corrupt("the log's reclaim position is past the published snapshot");
        }
        break;
      }
      case ReadOutcome::kCorrupt:
        return Corrupt("the log record of revision " + std::to_string(view->revision + 1) +
                       " at position " + std::to_string(view->position) + " is invalid");
    }
  }
  return Status::Ok();
}

}  // namespace shmdict::internal
