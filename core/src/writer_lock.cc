#include "writer_lock.h"

#include <cstdlib>

#include "blob_segment.h"
#include "change_record.h"
#include "segment.h"
#include "shmdict/value.h"

namespace shmdict::internal {

Status WriterLock::Claim(int segment_fd, MainHeader* header, const LogReader* reader,
                         std::shared_ptr<LogSink> log_sink) {
  header_ = header;
  reader_ = reader;
  log_sink_ = std::move(log_sink);
  return identity_.Claim(reader->name(), segment_fd, header);
}

Status WriterLock::Acquire(std::chrono::nanoseconds timeout) {
  if (identity_.stale()) {
    // A forked child takes a token (and a liveness lock) of its own before using the lock.
    depth_ = 0;
    Status renewed = identity_.Renew();
    if (!renewed.ok()) return renewed;
  }
  if (depth_ > 0) {
    ++depth_;
    return Status::Ok();
  }
  Status s = AcquireUncounted(timeout);
  if (s.ok()) depth_ = 1;
  return s;
}

void WriterLock::Release() {
  if (identity_.stale()) {
    depth_ = 0;  // a guard from before the fork, released in the child: the parent's lock
    return;
  }
  if (depth_ <= 0) std::abort();  // unbalanced: a bug in the engine
  if (--depth_ > 0) return;
  ReleaseUncounted();
}

Status WriterLock::AcquireUncounted(std::chrono::nanoseconds timeout) {
  const std::string& name = reader_->name();
  switch (AcquireRobustLock(&header_->writer.write_lock, identity_, timeout)) {
    case LockResult::kAcquired:
      return Status::Ok();
    case LockResult::kOwnerDied: {
      Status repaired = RepairAfterDeadHolder();
      // A failed repair leaves it owed: the next acquirer tries again (and reports the same).
      if (!repaired.ok()) ReleaseRobustLock(&header_->writer.write_lock, identity_, false);
      return repaired;
    }
    case LockResult::kTimedOut:
      return Status(StatusCode::kDeadlineExceeded,
                    "dict " + QuoteForMessage(name) + ": the writer lock is " + DescribeHolder() +
                        " and was not released within " +
                        std::to_string(timeout.count() / 1000000) + " ms");
    case LockResult::kBusy:
      return Status(StatusCode::kUnavailable,
                    "dict " + QuoteForMessage(name) + ": the writer lock is " + DescribeHolder());
    case LockResult::kAlreadyHeld:
      return Status(StatusCode::kFailedPrecondition,
                    "dict " + QuoteForMessage(name) +
                        ": this thread already holds the writer lock through another handle");
    case LockResult::kDamaged:
      return Status(StatusCode::kDataLoss,
                    "the writer lock of dict " + QuoteForMessage(name) +
                        " is held by no live process and cannot be recovered (its owner word "
                        "names no handle ever opened): unlink the dict");
  }
  std::abort();
}

void WriterLock::ReleaseUncounted() {
  if (!ReleaseRobustLock(&header_->writer.write_lock, identity_) && log_sink_) {
    log_sink_->Log(LogLevel::kError,
                   "dict " + QuoteForMessage(reader_->name()) +
                       ": another process took over the writer lock while this handle held it "
                       "(was its liveness descriptor closed behind its back?)");
  }
}

std::string WriterLock::DescribeHolder() const {
  return DescribeRobustLockHolder(header_->writer.write_lock);
}

// Everything the dead holder committed is complete (the commit store is the last step of a
// change); what it did not commit is invisible. Only the writer-side bookkeeping is re-derived.
Status WriterLock::RepairAfterDeadHolder() {
  auto& w = header_->writer;
  const uint64_t committed = header_->commit.commit_revision.load(std::memory_order_acquire);
  // A writer may die between the stores that publish a snapshot: take the published generation's
  // own header as the truth.
  const uint64_t generation = header_->commit.snapshot_generation.load(std::memory_order_acquire);
  uint64_t snap_position = 0;
  uint64_t snap_revision = 0;
  uint64_t chain_base = 0;
  if (generation != 0) {
    auto snap = SnapshotView::Open(reader_->name(), generation);
    if (!snap.ok()) return snap.status();
    snap_position = (*snap)->log_position();
    snap_revision = (*snap)->revision();
    chain_base = (*snap)->base_generation() != 0 ? (*snap)->base_generation() : generation;
  }
  if (snap_revision > committed) {
    return reader_->Corrupt("the published snapshot is ahead of the commit");
  }
  // The writer's tail and its revision are two stores, and the dead writer may have made one and
  // not the other: neither is trusted. The end of the log is re-derived by stepping over the
  // committed records from the published snapshot, which writers never reclaim past (at most a
  // log's worth of records, once per dead holder).
  // The same walk finishes the dead writer's unlinking of nested children its last change
  // retired (kRetireChildOp): unlinking is idempotent, so earlier records' markers cost nothing.
  // A marker naming anything but one of this dict's own children was never written by a commit
  // (CollectRetiredChildren checks the same rule): it is not trusted to unlink another dict.
  const std::string& dict = reader_->name();
  auto tail = reader_->EndOfRecords(snap_position, snap_revision, committed,
                                    [&dict](std::string_view payload) {
                                      ForEachRetiredChild(payload, [&dict](std::string_view child) {
                                        if (CheckNestedReference(dict, child).ok())
                                          UnlinkDictSegments(child);
                                      });
                                    });
  if (!tail.ok()) return tail.status();
  // Large values no reader needs: one the dead writer stored for a revision it never committed
  // (the next change of that revision replaces it only when it is large too), and those covered
  // by the published snapshot when its publisher was killed before sweeping them.
  UnlinkUnneededBlobSegments(reader_->name(), snap_revision, committed);
  w.writer_tail.store(*tail, std::memory_order_relaxed);
  w.writer_tail_revision.store(committed, std::memory_order_relaxed);
  w.snapshot_log_position.store(snap_position, std::memory_order_relaxed);
  w.snapshot_revision.store(snap_revision, std::memory_order_relaxed);
  // Killed after storing a new base as the chain's base but before its generation, a publisher
  // leaves a chain base that refuses every delta over the published chain's real base: until a
  // build happens to fold, nothing is published and a full ring has no room.
  w.snapshot_chain_base.store(chain_base, std::memory_order_relaxed);
  const uint64_t recoveries = w.lock_recoveries.fetch_add(1, std::memory_order_relaxed) + 1;
  if (log_sink_) {
    log_sink_->Log(LogLevel::kWarning, "dict " + QuoteForMessage(reader_->name()) +
                                           ": recovered the writer lock from a dead holder at "
                                           "revision " +
                                           std::to_string(committed) + " (recovery #" +
                                           std::to_string(recoveries) + ")");
  }
  return Status::Ok();
}

}  // namespace shmdict::internal
