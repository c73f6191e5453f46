#include "dict_impl.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <utility>

#include "futex.h"
#include "robust_lock.h"

namespace shmdict {

using internal::BlobHeader;
using internal::Futex;
using internal::LocalView;
using internal::LogRing;
using internal::OpRef;
using internal::ReadOutcome;
using internal::RecordHeader;
using internal::RecordKind;
using internal::SnapshotView;

namespace {

// A handle switches to a newer snapshot (dropping its overlay) once its overlay holds this many
// keys: it bounds per-process memory by the log's size instead of the dict's.
constexpr size_t kOverlaySwitchEntries = 4096;
// Old snapshot segments kept for their pages: the handle that just moved on may still map the
// previous one, so two let a builder nearly always find one free; each holds one snapshot's
// worth of /dev/shm.
constexpr size_t kRetiredSnapshots = 2;
// A log holding this fraction of its capacity since the published snapshot gets a snapshot once
// writes pause for kIdleSnapshotQuiet: attaching to a quiet dict then costs a mapping, not a
// replay. Watching for the pause gives up after kIdleSnapshotPatience of continuous writing.
constexpr uint64_t kIdleSnapshotFraction = 16;
constexpr auto kIdleSnapshotQuiet = std::chrono::milliseconds(10);
constexpr auto kIdleSnapshotPatience = std::chrono::seconds(1);
// Retries when snapshots are replaced faster than a reader can map them; practically never hit.
constexpr int kSnapshotRetries = 1000;

}  // namespace

namespace internal {

void LocalView::Apply(const OpRef& op, uint64_t op_revision) {
  ValueView existing;
  switch (op.op) {
    case ChangeOp::kSet: {
      const uint64_t hash = Hash64(op.key);
      const ValueView value{op.type, op.value};
      bool had_entry = false;
      bool was_present = false;
      overlay.Put(op.key, hash, op_revision, &value, &had_entry, &was_present);
      if (!count_entries) break;
      const bool existed =
          had_entry ? was_present
                    : !snapshot_hidden && snapshot && snapshot->Find(op.key, hash, &existing);
      if (!existed) ++size;
      break;
    }
    case ChangeOp::kErase: {
      if (!Find(op.key, &existing)) break;
      const uint64_t hash = Hash64(op.key);
      if (snapshot_hidden || !snapshot) {
        overlay.Erase(op.key, hash);
      } else {
        bool had_entry = false;
        bool was_present = false;
        overlay.Put(op.key, hash, op_revision, nullptr, &had_entry, &was_present);
      }
      --size;
      break;
    }
    case ChangeOp::kClear:
      overlay.Clear();
      snapshot_hidden = snapshot != nullptr;
      size = 0;
      break;
  }
}

void LocalView::ResetTo(std::shared_ptr<const SnapshotView> snap) {
  overlay.Clear();
  snapshot_hidden = false;
  revision = snap ? snap->revision() : 0;
  position = snap ? snap->log_position() : 0;
  size = snap ? snap->entry_count() : 0;
  snapshot = std::move(snap);
}

bool LocalView::RebaseOnto(std::shared_ptr<const SnapshotView> newer) {
  if (!snapshot || snapshot_hidden || !newer || newer->revision() > revision ||
      newer->revision() < snapshot->revision()) {
    return false;
  }
  overlay.DropUpTo(newer->revision());
  snapshot = std::move(newer);
  return true;
}

}  // namespace internal

Dict::Impl::~Impl() { Close(); }

Status Dict::Impl::Corrupt(const std::string& what) const {
  return Status(StatusCode::kDataLoss,
                "dict '" + name + "': " + what + ": the segment is corrupted; unlink the dict");
}

Result<std::shared_ptr<const SnapshotView>> Dict::Impl::OpenLatestSnapshot() const {
  uint64_t missing_generation = 0;
  int missing_count = 0;
  for (int attempt = 0; attempt < kSnapshotRetries; ++attempt) {
    const uint64_t generation = header->commit.snapshot_generation.load(std::memory_order_acquire);
    // Generations come from next_generation, so a published one can never be past it.
    if (generation > header->compaction.next_generation.load(std::memory_order_relaxed)) {
      return Corrupt("the published snapshot generation " + std::to_string(generation) +
                     " was never issued");
    }
    if (generation == 0) return std::shared_ptr<const SnapshotView>();
    auto snap = SnapshotView::Open(name, generation);
    if (snap.ok()) return snap;
    // Not found: a newer snapshot replaced it between our load and the open; try the newer one.
    // The same generation missing again and again is not a race: its segment is gone.
    if (snap.status().code() != StatusCode::kNotFound) return snap.status();
    missing_count = generation == missing_generation ? missing_count + 1 : 1;
    missing_generation = generation;
    if (missing_count >= 3) {
      return Corrupt("the published snapshot '" + internal::SnapshotSegment(name, generation) +
                     "' is missing");
    }
  }
  return Status(StatusCode::kUnavailable,
                "dict '" + name + "': snapshots are replaced faster than they can be mapped");
}

Status Dict::Impl::LoadLatestSnapshot(LocalView* v) const {
  const uint64_t generation = header->commit.snapshot_generation.load(std::memory_order_acquire);
  if (generation != 0 && v->snapshot && v->snapshot->generation() == generation) {
    v->ResetTo(v->snapshot);  // already mapped
    return Status::Ok();
  }
  auto snap = OpenLatestSnapshot();
  if (!snap.ok()) return snap.status();
  v->ResetTo(std::move(*snap));
  return Status::Ok();
}

ReadOutcome Dict::Impl::ReadRecord(uint64_t position, uint64_t expected_revision, std::string* out,
                                   uint64_t* next) const {
  RecordHeader h;
  for (int records = 0; records < 2; ++records) {
    switch (ring.Read(position, &h, out)) {
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
    *next = position + internal::RecordLength(h.length - sizeof(RecordHeader));
    if (h.kind != static_cast<uint8_t>(RecordKind::kExternal)) return ReadOutcome::kOk;
    // A large change lives in its own segment; the record carries its size and checksum.
    uint64_t ref[2];
    if (out->size() != sizeof(ref)) return ReadOutcome::kCorrupt;
    std::memcpy(ref, out->data(), sizeof(ref));
    auto blob_fd = internal::OpenSegment(internal::BlobSegment(name, h.revision), O_RDONLY, 0);
    // Gone: a snapshot at or after this revision replaced it, so the reader reloads from that.
    if (!blob_fd.ok()) return ReadOutcome::kLapped;
    auto size = internal::SegmentSize(blob_fd->get());
    if (!size.ok() || *size != sizeof(BlobHeader) + ref[0]) return ReadOutcome::kCorrupt;
    auto blob = internal::MapSegment(blob_fd->get(), *size, false);
    if (!blob.ok()) return ReadOutcome::kCorrupt;
    const auto* bh = reinterpret_cast<const BlobHeader*>(blob->data());
    if (bh->magic != internal::kBlobMagic ||
        bh->layout_version.load(std::memory_order_acquire) != internal::kLayoutVersion ||
        bh->revision != h.revision || bh->payload_bytes != ref[0]) {
      return ReadOutcome::kCorrupt;
    }
    out->assign(reinterpret_cast<const char*>(blob->data() + sizeof(BlobHeader)), ref[0]);
    if (internal::Hash64(out->data(), out->size(), h.revision) != ref[1]) {
      return ReadOutcome::kCorrupt;
    }
    return ReadOutcome::kOk;
  }
  return ReadOutcome::kCorrupt;  // two paddings in a row cannot happen
}

Status Dict::Impl::CatchUpSlow(bool force) {
  const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
  if (force) {
    Status s = LoadLatestSnapshot(&view);
    if (!s.ok()) return s;
    // A forced reload (UltraDict's load(force=True)) is also the deep check of the snapshot.
    if (view.snapshot) {
      s = view.snapshot->VerifyContents(name);
      if (!s.ok()) return s;
    }
  } else if (view.overlay.size() >= kOverlaySwitchEntries &&
             header->commit.snapshot_generation.load(std::memory_order_acquire) !=
                 view.generation()) {
    // Keep the overlay (memory) bounded by moving to the newer snapshot: cheaply by dropping
    // what it covers when the view is at or past it, by reloading and replaying otherwise.
    auto newer = OpenLatestSnapshot();
    if (!newer.ok()) return newer.status();
    if (!view.RebaseOnto(*newer)) view.ResetTo(std::move(*newer));
  }
  return ReplayLog(&view, committed, &payload);
}

Status Dict::Impl::ReplayLog(LocalView* v, uint64_t target, std::string* scratch) const {
  int laps = 0;
  while (v->revision < target) {
    uint64_t next = 0;
    switch (ReadRecord(v->position, v->revision + 1, scratch, &next)) {
      case ReadOutcome::kOk: {
        const uint64_t revision = v->revision + 1;
        bool valid =
            internal::ForEachOp(*scratch, [&](const OpRef& op) { v->Apply(op, revision); });
        if (!valid) {
          return Corrupt("the change record of revision " + std::to_string(revision) +
                         " does not decode");
        }
        v->revision = revision;
        v->position = next;
        break;
      }
      case ReadOutcome::kLapped: {
        if (++laps > kSnapshotRetries) {
          return Status(StatusCode::kUnavailable,
                        "dict '" + name + "': writers keep lapping this reader");
        }
        Status s = LoadLatestSnapshot(v);
        if (!s.ok()) return s;
        // Writers never reclaim past the published snapshot, so being lapped right at the
        // snapshot that is still the published one means the header is damaged.
        if (v->position < header->commit.reclaim_position.load(std::memory_order_acquire) &&
            header->commit.snapshot_generation.load(std::memory_order_acquire) == v->generation()) {
          return Corrupt("the log's reclaim position is past the published snapshot");
        }
        break;
      }
      case ReadOutcome::kCorrupt:
        return Corrupt("the log record of revision " + std::to_string(v->revision + 1) +
                       " at position " + std::to_string(v->position) + " is invalid");
    }
  }
  return Status::Ok();
}

std::string Dict::Impl::HolderDescription() const {
  return internal::DescribeRobustLockHolder(header->writer.write_lock);
}

Status Dict::Impl::AcquireWriteLock(std::chrono::nanoseconds timeout) {
  if (lock_identity.stale()) {
    // A forked child takes a token (and a liveness lock) of its own before using the lock.
    ForgetParentAfterFork();
    Status renewed = lock_identity.Renew();
    if (!renewed.ok()) return renewed;
  }
  if (lock_depth > 0) {
    ++lock_depth;
    return Status::Ok();
  }
  Status s = LockWriterRepairing(timeout);
  if (s.ok()) lock_depth = 1;
  return s;
}

void Dict::Impl::ReleaseWriteLock() {
  if (lock_identity.stale()) {
    // A guard taken before fork, released in the child: the parent's lock, never the child's.
    ForgetParentAfterFork();
    return;
  }
  if (lock_depth <= 0) std::abort();  // unbalanced: a bug in this file
  if (--lock_depth > 0) return;
  UnlockWriter();
}

Status Dict::Impl::LockWriterRepairing(std::chrono::nanoseconds timeout) {
  using internal::LockResult;
  switch (internal::AcquireRobustLock(&header->writer.write_lock, lock_identity, timeout)) {
    case LockResult::kAcquired:
      return Status::Ok();
    case LockResult::kOwnerDied: {
      Status repaired = RepairAfterDeadHolder();
      // A failed repair leaves it owed: the next acquirer tries again (and reports the same).
      if (!repaired.ok()) {
        internal::ReleaseRobustLock(&header->writer.write_lock, lock_identity,
                                    /*repaired=*/false);
      }
      return repaired;
    }
    case LockResult::kTimedOut:
      return Status(StatusCode::kDeadlineExceeded,
                    "dict '" + name + "': the writer lock is " + HolderDescription() +
                        " and was not released within " +
                        std::to_string(timeout.count() / 1000000) + " ms");
    case LockResult::kBusy:
      return Status(StatusCode::kUnavailable,
                    "dict '" + name + "': the writer lock is " + HolderDescription());
    case LockResult::kAlreadyHeld:
      return Status(
          StatusCode::kFailedPrecondition,
          "dict '" + name + "': this thread already holds the writer lock through another handle");
    case LockResult::kDamaged:
      return Status(StatusCode::kDataLoss,
                    "the writer lock of dict '" + name +
                        "' is held by no live process and cannot be recovered (its owner word "
                        "names no handle ever opened): unlink the dict");
  }
  std::abort();
}

void Dict::Impl::UnlockWriter() {
  if (!internal::ReleaseRobustLock(&header->writer.write_lock, lock_identity) && options.logger) {
    options.logger->error(
        "dict '{}': another process took over the writer lock while this handle held it (was "
        "its liveness descriptor closed behind its back?)",
        name);
  }
}

// The previous holder died somewhere between taking the lock and releasing it. Everything it
// committed is complete (the commit store is the last step of a change); what it did not commit is
// invisible. Re-derive the writer-side bookkeeping from what is committed and published.
Status Dict::Impl::RepairAfterDeadHolder() {
  auto& w = header->writer;
  const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
  // A writer may die between the stores that publish a snapshot: take the published generation's
  // own header as the truth.
  const uint64_t generation = header->commit.snapshot_generation.load(std::memory_order_acquire);
  uint64_t snap_position = 0;
  uint64_t snap_revision = 0;
  if (generation != 0) {
    auto snap = SnapshotView::Open(name, generation);
    if (!snap.ok()) return snap.status();
    snap_position = (*snap)->log_position();
    snap_revision = (*snap)->revision();
  }
  if (snap_revision > committed) return Corrupt("the published snapshot is ahead of the commit");
  // The writer's tail and its revision are two stores, and the dead writer may have made one and
  // not the other: neither is trusted. The end of the log is re-derived by stepping over the
  // committed records from the published snapshot, which writers never reclaim past (at most a
  // log's worth of records, once per dead holder).
  uint64_t tail = snap_position;
  uint64_t tail_revision = snap_revision;
  std::string scratch;
  while (tail_revision < committed) {
    uint64_t next = 0;
    // (A missing large-value segment reads as lapped but still tells where the record ends.)
    if (ReadRecord(tail, tail_revision + 1, &scratch, &next) == ReadOutcome::kCorrupt ||
        next == 0) {
      return Corrupt("the record of revision " + std::to_string(tail_revision + 1) +
                     " left by a dead writer is invalid");
    }
    tail = next;
    ++tail_revision;
  }
  w.writer_tail.store(tail, std::memory_order_relaxed);
  w.writer_tail_revision.store(tail_revision, std::memory_order_relaxed);
  w.snapshot_log_position.store(snap_position, std::memory_order_relaxed);
  w.snapshot_revision.store(snap_revision, std::memory_order_relaxed);
  const uint64_t recoveries = w.lock_recoveries.fetch_add(1, std::memory_order_relaxed) + 1;
  if (options.logger) {
    options.logger->warn(
        "dict '{}': recovered the writer lock from a dead holder at revision {} "
        "(recovery #{})",
        name, committed, recoveries);
  }
  return Status::Ok();
}

Result<uint64_t> Dict::Impl::CommitLocked(const std::vector<OpRef>& ops,
                                          bool may_wait_for_builder) {
  payload.clear();
  for (const OpRef& op : ops) {
    if (op.key.size() > kMaxKeyBytes) {
      return Status(StatusCode::kResourceExhausted,
                    "dict '" + name + "': a key of " + std::to_string(op.key.size()) +
                        " bytes exceeds the limit of " + std::to_string(kMaxKeyBytes));
    }
    if (op.value.size() > kMaxValueBytes) {
      return Status(StatusCode::kResourceExhausted,
                    "dict '" + name + "': a value of " + std::to_string(op.value.size()) +
                        " bytes exceeds the limit of " + std::to_string(kMaxValueBytes));
    }
    internal::AppendOp(op, &payload);
  }
  const uint64_t revision = view.revision + 1;
  RecordKind kind = RecordKind::kChange;
  std::string_view record = payload;
  uint64_t external_ref[2];
  if (payload.size() > ring.capacity() / 4) {
    // Too big for the ring: the payload goes into its own immutable segment and the log carries
    // a reference. O(size of the change), not O(size of the dict).
    const std::string segment = internal::BlobSegment(name, revision);
    auto blob = internal::CreateSegment(segment, sizeof(BlobHeader) + payload.size(), options.mode,
                                        /*replace_existing=*/true);
    if (!blob.ok()) return blob.status();
    uint8_t* base = blob->second.data();
    auto* bh = new (base) BlobHeader{};
    bh->magic = internal::kBlobMagic;
    bh->header_size = sizeof(BlobHeader);
    bh->revision = revision;
    bh->payload_bytes = payload.size();
    bh->payload_checksum = internal::Hash64(payload.data(), payload.size(), revision);
    std::memcpy(base + sizeof(BlobHeader), payload.data(), payload.size());
    bh->layout_version.store(internal::kLayoutVersion, std::memory_order_release);
    external_ref[0] = payload.size();
    external_ref[1] = bh->payload_checksum;
    kind = RecordKind::kExternal;
    header->writer.external_bytes.fetch_add(payload.size(), std::memory_order_relaxed);
    record = std::string_view(reinterpret_cast<const char*>(external_ref), sizeof(external_ref));
  }
  auto& w = header->writer;
  uint64_t tail = w.writer_tail.load(std::memory_order_relaxed);
  if (tail != view.position) return Corrupt("the writer's tail disagrees with the log");
  const uint64_t needed = ring.SpaceNeeded(tail, record.size());
  if (tail + needed - w.snapshot_log_position.load(std::memory_order_relaxed) > ring.capacity()) {
    if (may_wait_for_builder && internal::RobustLockIsHeld(header->compaction.compaction_lock)) {
      return Status(StatusCode::kAborted, "ring full while a snapshot is being built");
    }
    // The ring truly filled and nobody is freeing it: build a snapshot now (the rare, slow path
    // of invariant 5).
    Status s = CompactLocked();
    if (!s.ok()) return s;
  }
  const uint64_t new_tail = ring.Write(tail, revision, kind, record);
  for (const OpRef& op : ops) view.Apply(op, revision);
  view.revision = revision;
  view.position = new_tail;
  // THE commit point. seq_cst pairs with WaitForChange's waiter registration (Dekker).
  header->commit.commit_revision.store(revision, std::memory_order_seq_cst);
  w.writer_tail.store(new_tail, std::memory_order_relaxed);
  w.writer_tail_revision.store(revision, std::memory_order_relaxed);
  header->commit.entry_count.store(view.size, std::memory_order_relaxed);
  WakeWaiters();
  last_commit = revision;
  MaybeCompact();
  return revision;
}

void Dict::Impl::WaitForBuilder() {
  using internal::LockResult;
  // A dead builder's claim is taken over here and given back: it left nothing to repair (its
  // unpublished segment is removed by the next publication).
  const LockResult r = internal::AcquireRobustLock(&header->compaction.compaction_lock,
                                                   lock_identity, options.lock_timeout);
  if (r == LockResult::kAcquired || r == LockResult::kOwnerDied) {
    internal::ReleaseRobustLock(&header->compaction.compaction_lock, lock_identity);
  }
}

void Dict::Impl::WakeWaiters() {
  if (header->wait.waiters.load(std::memory_order_seq_cst) == 0) return;
  header->wait.change_futex.fetch_add(1, std::memory_order_release);
  Futex(&header->wait.change_futex, FUTEX_WAKE, INT_MAX, nullptr);
}

Result<uint64_t> Dict::Impl::WaitForChange(uint64_t after, std::chrono::nanoseconds timeout) const {
  auto& commit = header->commit.commit_revision;
  uint64_t current = commit.load(std::memory_order_acquire);
  if (current > after) return current;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto& wait = header->wait;
  while (true) {
    wait.waiters.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t seq = wait.change_futex.load(std::memory_order_seq_cst);
    current = commit.load(std::memory_order_seq_cst);
    if (current <= after) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left > std::chrono::nanoseconds::zero()) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        Futex(&wait.change_futex, FUTEX_WAIT, seq, &ts);
      }
    }
    wait.waiters.fetch_sub(1, std::memory_order_seq_cst);
    current = commit.load(std::memory_order_acquire);
    if (current > after) return current;
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(StatusCode::kDeadlineExceeded,
                    "dict '" + name + "': no change after revision " + std::to_string(after) +
                        " within the timeout");
    }
  }
}

bool Dict::Impl::PublishLocked(const std::shared_ptr<const SnapshotView>& snap) {
  auto& w = header->writer;
  if (snap->revision() <= w.snapshot_revision.load(std::memory_order_relaxed) &&
      header->commit.snapshot_generation.load(std::memory_order_relaxed) != 0) {
    return false;  // a newer snapshot won the race
  }
  w.snapshot_log_position.store(snap->log_position(), std::memory_order_relaxed);
  w.snapshot_revision.store(snap->revision(), std::memory_order_relaxed);
  // Large changes committed after the snapshot's revision are forgotten too: the count only
  // schedules compaction, and the next one comes at most a log's worth of changes later.
  w.external_bytes.store(0, std::memory_order_relaxed);
  header->commit.snapshot_generation.store(snap->generation(), std::memory_order_release);
  header->compaction.snapshots_built.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Older snapshots and large-value segments the new snapshot covers are no longer needed: a
// reader that still looks for one gets NOT_FOUND and moves to the newest snapshot. The newest
// kRetiredSnapshots old snapshots are renamed rather than unlinked, so that the next builders
// reuse their pages (see RecycleSegment); readers that still map one keep it from being reused.
void Dict::Impl::CleanUpAfterPublish(uint64_t generation, uint64_t revision) const {
  for (const auto& [old, segment] : internal::ListNumberedSegments(name + "@s")) {
    if (old >= generation) break;
    if (!internal::RenameSegment(segment, internal::RetiredSegment(name, old)).ok()) {
      internal::UnlinkSegmentQuietly(segment);
    }
  }
  const auto retired = internal::ListNumberedSegments(name + "@r");
  for (size_t i = 0; i + kRetiredSnapshots < retired.size(); ++i) {
    internal::UnlinkSegmentQuietly(retired[i].second);
  }
  for (const auto& [blob_revision, segment] : internal::ListNumberedSegments(name + "@b")) {
    if (blob_revision > revision) break;
    internal::UnlinkSegmentQuietly(segment);
  }
}

Status Dict::Impl::CompactLocked() {
  const uint64_t generation =
      header->compaction.next_generation.fetch_add(1, std::memory_order_relaxed) + 1;
  auto snap = SnapshotView::Build(name, generation, view.revision, view.position, options.mode,
                                  view.SnapshotBase(), view.OverlayDelta());
  if (!snap.ok()) return snap.status();
  if (!PublishLocked(*snap)) {
    internal::UnlinkSegmentQuietly(internal::SnapshotSegment(name, generation));
    return Status::Ok();
  }
  view.ResetTo(*snap);
  CleanUpAfterPublish(generation, view.revision);
  if (options.logger) {
    options.logger->info("dict '{}': snapshot generation {} at revision {} ({} entries, inline)",
                         name, generation, view.revision, view.size);
  }
  return Status::Ok();
}

uint64_t Dict::Impl::UnpublishedBytes() const {
  const auto& w = header->writer;
  return w.writer_tail.load(std::memory_order_relaxed) -
         w.snapshot_log_position.load(std::memory_order_relaxed) +
         w.external_bytes.load(std::memory_order_relaxed);
}

void Dict::Impl::MaybeCompact() {
  // Keep this handle's overlay (memory) bounded: move to a newer snapshot when there is one.
  if (view.overlay.size() >= kOverlaySwitchEntries &&
      header->commit.snapshot_generation.load(std::memory_order_acquire) != view.generation()) {
    CatchUpSlow(false).IgnoreError();  // on failure the view stays valid, just larger
  }
  // Invariant 5: start the snapshot when the log is half full, long before writers must wait.
  const uint64_t pending = UnpublishedBytes();
  if (pending < ring.capacity() / 2) {
    if (options.background_compaction && pending >= ring.capacity() / kIdleSnapshotFraction &&
        !builder_running.load(std::memory_order_acquire)) {
      StartBuilder(view.revision, /*wait_for_quiet=*/true);
    }
    return;
  }
  if (!options.background_compaction) {
    CompactLocked().IgnoreError();  // a failure leaves the old snapshot; the next write retries
    return;
  }
  if (builder_running.load(std::memory_order_acquire)) {
    // A builder waiting for quiet builds now. One already building is not told: its snapshot
    // is about to lower the pending bytes, and a second build right after it would be wasted.
    if (builder_waiting.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(builder_mutex);
      builder_urgent_target = view.revision;
      builder_wake.notify_all();
    }
    return;
  }
  StartBuilder(view.revision, /*wait_for_quiet=*/false);
}

void Dict::Impl::StartBuilder(uint64_t target_revision, bool wait_for_quiet) {
  if (builder.joinable()) builder.join();
  {
    std::lock_guard<std::mutex> lock(builder_mutex);
    builder_urgent_target = 0;
  }
  builder_running.store(true, std::memory_order_release);
  builder = std::thread([this, target_revision, wait_for_quiet] {
    // After a build forced by a half-full log, the writes that came in meanwhile still get a
    // snapshot once writers pause: the end of a burst is exactly when attachers tend to come.
    if (!wait_for_quiet) BuildInBackground(target_revision);
    IdleThenBuild();
    builder_running.store(false, std::memory_order_release);
  });
}

void Dict::Impl::IdleThenBuild() {
  using std::chrono::steady_clock;
  const auto& committed = header->commit.commit_revision;
  std::unique_lock<std::mutex> lock(builder_mutex);
  uint64_t seen = committed.load(std::memory_order_acquire);
  auto give_up = steady_clock::now() + kIdleSnapshotPatience;
  while (true) {
    builder_waiting.store(true, std::memory_order_release);
    builder_wake.wait_for(lock, kIdleSnapshotQuiet,
                          [this] { return builder_closing || builder_urgent_target != 0; });
    builder_waiting.store(false, std::memory_order_release);
    if (builder_closing) return;
    if (builder_urgent_target != 0) {
      // The log reached half: build now, then keep watching for the pause that follows.
      const uint64_t target = std::exchange(builder_urgent_target, 0);
      lock.unlock();
      BuildInBackground(target);
      lock.lock();
      seen = committed.load(std::memory_order_acquire);
      give_up = steady_clock::now() + kIdleSnapshotPatience;
      continue;
    }
    const uint64_t now = committed.load(std::memory_order_acquire);
    if (now == seen) break;  // quiet
    seen = now;
    // Writers are busy: the half-full trigger (urgent) covers them; a later commit starts
    // another quiet watch.
    if (steady_clock::now() >= give_up) return;
  }
  lock.unlock();
  // Someone else built meanwhile, or a user's Lock() is held (the publication would queue
  // behind it): nothing to do now.
  if (UnpublishedBytes() < ring.capacity() / kIdleSnapshotFraction ||
      internal::RobustLockIsHeld(header->writer.write_lock)) {
    return;
  }
  BuildInBackground(seen);
  // Writers paused: the retired snapshots kept for the next builds' pages are given back, so an
  // idle dict holds one snapshot's worth of /dev/shm, not three. (A mapper keeps its mapping.)
  for (const auto& [old, segment] : internal::ListNumberedSegments(name + "@r")) {
    internal::UnlinkSegmentQuietly(segment);
  }
}

void Dict::Impl::BuildInBackground(uint64_t target_revision) {
  using internal::LockResult;
  internal::RobustLockWord* claim = &header->compaction.compaction_lock;
  // One builder at a time host-wide; others skip (their writers keep appending meanwhile). A
  // builder that died mid-way left nothing to repair: its unpublished segment is removed by the
  // next publication.
  switch (internal::AcquireRobustLock(claim, lock_identity, std::chrono::nanoseconds(0))) {
    case LockResult::kAcquired:
    case LockResult::kOwnerDied:
      break;
    default:
      return;
  }
  // The builder's own view: the published snapshot plus the log up to the target. The log there
  // cannot be reclaimed before a newer snapshot is published, and then a lapped read just moves
  // the view to that snapshot.
  LocalView frozen;
  frozen.count_entries = false;
  std::string scratch;
  Status caught_up = LoadLatestSnapshot(&frozen);
  if (caught_up.ok()) caught_up = ReplayLog(&frozen, target_revision, &scratch);
  const uint64_t generation =
      header->compaction.next_generation.fetch_add(1, std::memory_order_relaxed) + 1;
  Result<std::shared_ptr<const SnapshotView>> snap =
      caught_up.ok()
          ? SnapshotView::Build(name, generation, frozen.revision, frozen.position, options.mode,
                                frozen.SnapshotBase(), frozen.OverlayDelta())
          : Result<std::shared_ptr<const SnapshotView>>(caught_up);
  bool published = false;
  if (snap.ok()) {
    // Not through AcquireWriteLock: the handle's depth belongs to the handle's own thread.
    if (LockWriterRepairing(options.lock_timeout).ok()) {
      published = PublishLocked(*snap);
      UnlockWriter();
    }
  } else if (options.logger) {
    options.logger->error("dict '{}': building snapshot generation {} failed: {}", name, generation,
                          snap.status().ToString());
  }
  internal::ReleaseRobustLock(claim, lock_identity);
  if (published) {
    CleanUpAfterPublish(generation, frozen.revision);
    if (options.logger) {
      options.logger->info("dict '{}': snapshot generation {} at revision {} ({} entries)", name,
                           generation, frozen.revision, (*snap)->entry_count());
    }
  } else {
    internal::UnlinkSegmentQuietly(internal::SnapshotSegment(name, generation));
  }
}

void Dict::Impl::ForgetParentAfterFork() {
  // Whatever depth the child inherited is its parent's lock, not its own.
  lock_depth = 0;
  // The parent's builder thread does not exist in the child: joining its std::thread would wait
  // on a thread of another process. The object is overwritten without being destroyed (its
  // destructor would terminate), and the builder's mutex and condition variable are made anew,
  // since a parent thread may have held the mutex at the fork.
  new (&builder) std::thread();
  new (&builder_mutex) std::mutex();
  new (&builder_wake) std::condition_variable();
  builder_running.store(false, std::memory_order_relaxed);
  builder_waiting.store(false, std::memory_order_relaxed);
  builder_closing = false;
  builder_urgent_target = 0;
  // auto_unlink belongs to the creating process: a forked child closing its copy of the handle
  // must not unlink the dict under its parent.
  inherited_through_fork = true;
}

void Dict::Impl::Close() {
  if (closed) return;
  closed = true;
  if (lock_identity.stale()) ForgetParentAfterFork();
  // The lock first: a builder publishing its snapshot may be waiting for it.
  if (lock_depth > 0) {
    lock_depth = 1;
    ReleaseWriteLock();
  }
  {
    std::lock_guard<std::mutex> lock(builder_mutex);
    builder_closing = true;
    builder_wake.notify_all();
  }
  if (builder.joinable()) builder.join();
  lock_identity.Release();  // after the builder: it used the identity too
  view = LocalView{};
  map = internal::Mapping();
  fd = internal::Fd();  // also drops the shared flock that marks the dict as attached
  if (created && options.auto_unlink && !inherited_through_fork) {
    Dict::UnlinkByName(name).IgnoreError();
  }
}

}  // namespace shmdict
