#include "dict_impl.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "blob_segment.h"
#include "change_notification.h"
#include "replica_block.h"

namespace shmdict {

using internal::OpRef;
using internal::RecordKind;

namespace {

// A handle switches to a newer snapshot (dropping its overlay) once its overlay holds this many
// keys: it bounds per-process memory by the log's size instead of the dict's. A reader switches
// early: every read looks in the overlay first, and a small one stays in cache.
constexpr size_t kOverlaySwitchEntries = 4096;
// A handle that writes switches later (an overlay holds at most a log's worth of changes: 64k of
// the smallest records fill the default 4 MiB log): it counts entries, so each key its overlay
// lacks costs a probe of the snapshot (cache and TLB misses in a big one), and every switch
// drops the keys it was rewriting. With 4096 here, writes to 100k keys of a 1M-key dict ran at
// 1.2-1.4 us/op (4-5 us in the first pass after a snapshot); with 64k, 0.66 us.
constexpr size_t kWriterOverlaySwitchEntries = 65536;

}  // namespace

Dict::Impl::~Impl() { Close(); }

Status Dict::Impl::Attach() {
  ring =
      internal::LogRing(header, map.data() + internal::kHeaderSize, header->identity.log_capacity);
  reader = internal::LogReader(name, header, &ring);
  Status s = writer_lock.Claim(fd.get(), header, &reader, options.log_sink);
  if (!s.ok()) return s;
  compactor.Bind({.mode = options.mode,
                  .background = options.background_compaction,
                  .lock_timeout = options.lock_timeout,
                  .log_sink = options.log_sink},
                 header, ring.capacity(), &reader, &writer_lock, incarnation);
  reader.UseBuiltSnapshots(&compactor.built_snapshots());
  s = CheckCommitPoint();
  if (!s.ok()) return s;
  s = reader.LoadLatestSnapshot(&view);
  if (!s.ok()) return s;
  return CatchUp(false);
}

Status Dict::Impl::CheckCommitPoint() const {
  // A writer stores writer_tail_revision (release) only after the commit point of that revision,
  // and repair only lowers it to the commit point: read in this order, it can never exceed the
  // commit point. When it does, the commit point was damaged (lowered), and the committed changes
  // past it would silently disappear.
  const uint64_t tail_revision =
      header->writer.writer_tail_revision.load(std::memory_order_acquire);
  const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
  if (committed < tail_revision) {
    return Corrupt("the commit point (revision " + std::to_string(committed) +
                   ") is behind the last committed record (revision " +
                   std::to_string(tail_revision) + ")");
  }
  return Status::Ok();
}

Status Dict::Impl::CatchUpSlow(bool force) {
  const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
  // The commit point never goes back: damaged after this handle attached (which checks it against
  // the writer's record, CheckCommitPoint), it would hide changes this handle already applied.
  // Checked here without reading the writer's cache line, which a reader polling a busy writer
  // would pull on every read (2% of a reader's samples).
  if (committed < view.revision) {
    return Corrupt("the commit point (revision " + std::to_string(committed) +
                   ") went back behind this handle's revision " + std::to_string(view.revision));
  }
  if (force) {
    Status s = reader.LoadLatestSnapshot(&view);
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
    auto newer = reader.OpenLatestSnapshot();
    if (!newer.ok()) return newer.status();
    if (!view.RebaseOnto(*newer)) view.ResetTo(std::move(*newer));
  }
  return reader.ReplayLog(&view, committed, &payload);
}

Status Dict::Impl::AcquireWriteLock(std::chrono::nanoseconds timeout) {
  if (writer_lock.inherited_through_fork()) ForgetParentAfterFork();
  return writer_lock.Acquire(timeout);
}

void Dict::Impl::ReleaseWriteLock() {
  if (writer_lock.inherited_through_fork()) ForgetParentAfterFork();
  writer_lock.Release();
}

void Dict::Impl::ForgetParentAfterFork() {
  writer_lock.ForgetParentsLock();
  compactor.ForgetParentsBuilder();
  inherited_through_fork = true;
}

Status Dict::Impl::CheckReplicaWrite(const internal::FeedCommit* feed) {
  internal::ReplicaBlock& r = header->replica;
  // One load under a lock already held: what every write pays for replicas.
  const uint64_t owner = r.owner_token.load(std::memory_order_acquire);
  if (feed == nullptr) {
    if (owner == 0) return Status::Ok();
    return internal::ReplicaRefusal(name, r);
  }
  if (owner != writer_lock.identity().token()) {
    return Status(StatusCode::kFailedPrecondition,
                  "dict " + QuoteForMessage(name) +
                      ": this replica feed no longer owns the dict (another shmdict-replica "
                      "adopted it)");
  }
  internal::NormalizePairs(&r, view.revision);
  const uint64_t held = internal::UpstreamOfCommitted(r, view.revision);
  if (feed->upstream_revision < held && !feed->history_restarted) {
    return Status(StatusCode::kFailedPrecondition,
                  "dict " + QuoteForMessage(name) + ": upstream revision " +
                      std::to_string(feed->upstream_revision) +
                      " is behind the one the replica already holds, " + std::to_string(held));
  }
  return Status::Ok();
}

void Dict::Impl::RecordFeedProgress(const internal::FeedCommit& feed) {
  internal::RecordWithoutCommit(&header->replica, feed.upstream_revision, view.revision);
}

Result<Dict::Impl::CommitOutcome> Dict::Impl::CommitLocked(const std::vector<OpRef>& ops,
                                                           bool may_wait_for_builder,
                                                           const internal::FeedCommit* feed) {
  payload.clear();
  for (const OpRef& op : ops) {
    if (op.key.size() > kMaxKeyBytes) {
      return Status(StatusCode::kResourceExhausted,
                    "dict " + QuoteForMessage(name) + ": a key of " +
                        std::to_string(op.key.size()) + " bytes exceeds the limit of " +
                        std::to_string(kMaxKeyBytes));
    }
    if (op.value.size() > kMaxValueBytes) {
      return Status(StatusCode::kResourceExhausted,
                    "dict " + QuoteForMessage(name) + ": a value of " +
                        std::to_string(op.value.size()) + " bytes exceeds the limit of " +
                        std::to_string(kMaxValueBytes));
    }
    internal::AppendOp(op, &payload);
  }
  auto& w = header->writer;
  if (w.nested_values_written.load(std::memory_order_relaxed) != 0) {
    CollectRetiredChildren(ops);
    for (const std::string& child : retired_children) internal::AppendRetireChild(child, &payload);
  }
  const uint64_t revision = view.revision + 1;
  const uint64_t tail = w.writer_tail.load(std::memory_order_relaxed);
  if (tail != view.position) return Corrupt("the writer's tail disagrees with the log");
  // Too big for the ring: the payload goes into its own immutable segment and the log carries a
  // reference. O(size of the change), not O(size of the dict).
  const bool external = payload.size() > ring.capacity() / 4;
  const uint64_t record_bytes = external ? sizeof(internal::BlobRef) : payload.size();
  const uint64_t needed = ring.SpaceNeeded(tail, record_bytes);
  if (tail + needed - w.snapshot_log_position.load(std::memory_order_relaxed) > ring.capacity()) {
    if (may_wait_for_builder && compactor.BuilderRunningAnywhere()) {
      return CommitOutcome::kRingFullWhileBuilding;
    }
    // The ring truly filled and nobody is freeing it: build a snapshot now (the rare, slow path
    // of docs/DESIGN.md's rule 5).
    Status s = CompactLocked();
    if (!s.ok()) return s;
    // A publication refused under the lock frees nothing. Only a snapshot at this very revision
    // can win that race, and it frees the ring as well; anything else is a broken invariant, and
    // writing on would overwrite the log that the published snapshot still needs.
    if (tail + needed - w.snapshot_log_position.load(std::memory_order_relaxed) > ring.capacity()) {
      return Status(StatusCode::kInternal,
                    "dict " + QuoteForMessage(name) +
                        ": the log is full and no snapshot could be published to free it");
    }
  }
  RecordKind kind = RecordKind::kChange;
  std::string_view record = payload;
  internal::BlobRef blob_ref;
  if (external) {
    auto written = internal::WriteBlobSegment(name, revision, payload, options.mode);
    if (!written.ok()) return written.status();
    blob_ref = *written;
    kind = RecordKind::kExternal;
    w.external_bytes.fetch_add(payload.size(), std::memory_order_relaxed);
    record = internal::EncodeBlobRef(blob_ref);
  }
  for (const OpRef& op : ops) {
    if (op.op == ChangeOp::kSet && op.type == ValueType::kNestedDict) {
      w.nested_values_written.store(1, std::memory_order_relaxed);  // before its commit
    }
  }
  const uint64_t new_tail = ring.Write(tail, revision, kind, record);
  for (const OpRef& op : ops) view.Apply(op, revision);
  view.revision = revision;
  view.position = new_tail;
  // A feed's upstream revision goes around the commit point (replica_block.h, the resume rule).
  if (feed != nullptr) internal::StorePending(&header->replica, feed->upstream_revision, revision);
  // THE commit point. seq_cst pairs with the waiters' flag (change_notification.h).
  header->commit.commit_revision.store(revision, std::memory_order_seq_cst);
  if (feed != nullptr) internal::StoreApplied(&header->replica, feed->upstream_revision, revision);
  w.writer_tail.store(new_tail, std::memory_order_relaxed);
  // Release, after the commit point: readers check that it never exceeds it (CheckCommitPoint).
  w.writer_tail_revision.store(revision, std::memory_order_release);
  header->commit.entry_count.store(view.Size(), std::memory_order_relaxed);
  internal::WakeChangeWaiters(header);
  last_commit = revision;
  // Retired children go now, under the lock; if this process dies first, the next lock holder's
  // repair finds the markers in this record and does it.
  if (w.nested_values_written.load(std::memory_order_relaxed) != 0) {
    for (const std::string& child : retired_children) internal::UnlinkDictSegments(child);
    retired_children.clear();
  }
  // Keep this handle's overlay (memory) bounded: move to a newer snapshot when there is one.
  if (view.overlay.size() >= kWriterOverlaySwitchEntries &&
      header->commit.snapshot_generation.load(std::memory_order_acquire) != view.generation()) {
    CatchUpSlow(false).IgnoreError();  // on failure the view stays valid, just larger
  }
  compactor.AfterCommit(&view);
  return CommitOutcome::kCommitted;
}

// A nested child is retired when a change drops the last reference to it: the key that held it
// is overwritten or erased, or the dict is cleared, and no key holds the same reference after the
// batch. Only a reference to one of this dict's own children counts (CheckNestedReference): one
// naming any other dict was stored by a writer who was never given that dict, and dropping it
// must not unlink it. Looks only at the keys the batch touches, except when a candidate exists:
// then the whole view is scanned once for other references (rare: it takes overwriting a nested
// dict), and when the batch clears: then the pre-batch view is scanned once, however many clears
// the batch holds (a batch of clears must cost what one clear costs).
void Dict::Impl::CollectRetiredChildren(const std::vector<OpRef>& ops) {
  retired_children.clear();
  // Views into the pre-batch view and into `ops`: neither changes before the commit.
  std::unordered_set<std::string_view> candidates;
  auto consider = [&](std::string_view child) {
    if (CheckNestedReference(name, child).ok()) candidates.insert(child);
  };
  bool clears = false;
  ValueView current;
  for (const OpRef& op : ops) {
    if (op.op == ChangeOp::kClear) {
      clears = true;
    } else if (view.Find(op.key, &current) && current.type == ValueType::kNestedDict) {
      consider(current.data);
    }
  }
  if (clears) {
    view.ForEach([&](std::string_view, ValueView v) {
      if (v.type == ValueType::kNestedDict) consider(v.data);
    });
  }
  if (candidates.empty()) return;
  // A reference the batch stores keeps its child; so does one under a key the batch leaves alone.
  for (const OpRef& op : ops) {
    if (op.op == ChangeOp::kSet && op.type == ValueType::kNestedDict) candidates.erase(op.value);
  }
  if (!clears && !candidates.empty()) {
    std::unordered_set<std::string_view> changed;
    for (const OpRef& op : ops) changed.insert(op.key);
    view.ForEach([&](std::string_view key, ValueView v) {
      // A key the batch changes: its old reference does not count.
      if (v.type == ValueType::kNestedDict && !changed.contains(key)) candidates.erase(v.data);
    });
  }
  retired_children.assign(candidates.begin(), candidates.end());
  std::sort(retired_children.begin(), retired_children.end());  // the same markers in every run
}

Result<uint64_t> Dict::Impl::WaitForChange(uint64_t after, std::chrono::nanoseconds timeout) const {
  return internal::WaitForRevisionAfter(header, name, after, timeout);
}

void Dict::Impl::Close() {
  if (closed) return;
  closed = true;
  if (writer_lock.inherited_through_fork()) ForgetParentAfterFork();
  // The lock first: a builder publishing its snapshot may be waiting for it.
  while (writer_lock.depth() > 0) writer_lock.Release();
  compactor.Stop();
  writer_lock.Close();  // after the builder: it used the identity too
  if (header != nullptr) {
    // Watchers map the segment themselves; waking them only makes a blocked Next fail now.
    handle_closed->store(true, std::memory_order_seq_cst);
    internal::InterruptChangeWaiters(header);
  }
  view = internal::LocalView{};
  map = internal::Mapping();
  header = nullptr;
  fd = internal::Fd();  // also drops the shared flock that marks the dict as attached
  // Only while the name still means this dict: unlinked meanwhile and created again, it is
  // another dict's now.
  if (created && options.auto_unlink && !inherited_through_fork &&
      internal::SegmentHasInode(name, incarnation)) {
    Dict::UnlinkByName(name).IgnoreError();
  }
}

}  // namespace shmdict
