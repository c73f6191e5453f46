#include "compactor.h"

#include <sys/stat.h>

#include <chrono>
#include <new>
#include <utility>

#include "blob_segment.h"
#include "crash_point.h"
#include "robust_lock.h"
#include "segment.h"

namespace shmdict::internal {
namespace {

// Old snapshot segments kept for their pages: the handle that just moved on may still map the
// previous one, so two let a builder nearly always find one free. Besides these newest two, the
// biggest retired segment is kept too (usually the previous base): with layered snapshots the
// newest retired ones are small deltas, and a fold into a new base that finds no segment of its
// size faults in every page of a fresh one (a 240 ms stall of the writer for 1M keys on the VMs
// we measured, where a page's first touch costs 10-20 us). So are those the builder's process
// still maps for its next builds (BuiltSnapshots, at most kHeld). While writers are busy, a dict
// thus holds up to about twice its snapshot in /dev/shm; IdleThenBuild gives the retired ones
// back when they pause.
constexpr size_t kRetiredSnapshots = 2;
// A log holding this fraction of its capacity since the published snapshot gets a snapshot once
// writes pause for kIdleSnapshotQuiet: attaching to a quiet dict then costs a mapping, not a
// replay. Watching for the pause gives up after kIdleSnapshotPatience of continuous writing.
constexpr uint64_t kIdleSnapshotFraction = 16;
constexpr auto kIdleSnapshotQuiet = std::chrono::milliseconds(10);
constexpr auto kIdleSnapshotPatience = std::chrono::seconds(1);
// After a quiet-period snapshot, how long writers must stay paused before the retired snapshots
// kept for their pages are given back (IdleThenBuild).
constexpr auto kGiveBackQuiet = std::chrono::seconds(1);
// With background compaction, a build starts once the log holds this fraction of its capacity
// since the published snapshot, pause or not — when the chain's base is at least this many logs
// big. Snapshots are layered (snapshot.h): a build then costs O(changes since the base), and a
// fold into a new base comes once an eighth of the base is overwritten or erased (or, while the
// dict grows, once half of it is added: SnapshotView::KeepsDelta), so building early is cheap and
// an attacher right after a burst replays about this fraction of the log. A smaller dict would
// fold into a new base (O(dict)) almost every build: it keeps the half-log trigger. (Inline
// builds, under the writer lock, always wait for half the log.)
constexpr uint64_t kEarlyBuildFraction = 8;

}  // namespace

void Compactor::Bind(const CompactorOptions& options, MainHeader* header, uint64_t log_capacity,
                     const LogReader* reader, WriterLock* lock, uint64_t incarnation) {
  name_ = reader->name();
  incarnation_ = incarnation;
  mode_ = options.mode;
  background_ = options.background;
  lock_timeout_ = options.lock_timeout;
  log_sink_ = options.log_sink;
  header_ = header;
  log_capacity_ = log_capacity;
  reader_ = reader;
  lock_ = lock;
}

uint64_t Compactor::UnpublishedBytes() const {
  const auto& w = header_->writer;
  return w.writer_tail.load(std::memory_order_relaxed) -
         w.snapshot_log_position.load(std::memory_order_relaxed) +
         w.external_bytes.load(std::memory_order_relaxed);
}

bool Compactor::BuilderRunningAnywhere() const {
  return RobustLockIsHeld(header_->compaction.compaction_lock);
}

uint64_t Compactor::NextGeneration() {
  return header_->compaction.next_generation.fetch_add(1, std::memory_order_relaxed) + 1;
}

void Compactor::AfterCommit(LocalView* writer_view) {
  // Rule 5 (docs/DESIGN.md): start the snapshot long before writers must wait.
  const uint64_t pending = UnpublishedBytes();
  const SnapshotView* snap = writer_view->snapshot.get();
  const uint64_t base_bytes = snap == nullptr ? 0 : (snap->base() ? snap->base() : snap)->bytes();
  const bool early = background_ && base_bytes >= kEarlyBuildFraction * log_capacity_;
  if (pending < log_capacity_ / (early ? kEarlyBuildFraction : 2)) {
    if (background_ && pending >= log_capacity_ / kIdleSnapshotFraction &&
        !running_.load(std::memory_order_acquire)) {
      StartBuilder(writer_view->revision, /*wait_for_quiet=*/true);
    }
    return;
  }
  if (!background_) {
    CompactLocked(writer_view).IgnoreError();  // a failure keeps the old snapshot; retried later
    return;
  }
  if (running_.load(std::memory_order_acquire)) {
    // A builder waiting for quiet builds now. One already building is not told: its snapshot
    // is about to lower the pending bytes, and a second build right after it would be wasted.
    if (waiting_for_quiet_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(mu_);
      urgent_target_ = writer_view->revision;
      wake_.notify_all();
    }
    return;
  }
  StartBuilder(writer_view->revision, /*wait_for_quiet=*/false);
}

Status Compactor::CompactLocked(LocalView* view) {
  Status moved = MoveOntoPublishedSnapshot(view);
  if (!moved.ok()) return moved;
  const uint64_t generation = NextGeneration();
  const HeldSegmentSource held = HeldRetiredSegments();
  auto snap = SnapshotView::Build(name_, generation, view->revision, view->position, mode_,
                                  view->SnapshotBase(), view->OverlayDelta(), &held);
  if (!snap.ok()) return snap.status();
  // Built and named, under the writer lock, nothing of it published.
  CrashPoint((*snap)->base_generation() != 0 ? CrashPointName("compactor.inline.delta_built")
                                             : CrashPointName("compactor.inline.base_built"));
  if (!PublishLocked(*snap)) {
    // Under the lock only a snapshot at this very revision, built in the background, beats this
    // one. Its publisher may have been killed before its cleanup: the large values it covers
    // are swept here, since no later publication may come for them.
    UnlinkUnneededBlobSegments(
        name_, header_->writer.snapshot_revision.load(std::memory_order_relaxed), UINT64_MAX);
    return Status::Ok();
  }
  built_.Add(*snap);
  view->ResetTo(*snap);
  // Published, the writer lock still held, nothing retired.
  CrashPoint("compactor.inline.published");
  AfterPublish(**snap, "inline");
  return Status::Ok();
}

std::function<bool(uint64_t)> Compactor::RetiredGenerations() const {
  // Neither the published snapshot nor its chain's base, nor anything newer, is retired; anything
  // else is, or its retired name is gone (TakeRetired then drops it).
  const uint64_t published = header_->commit.snapshot_generation.load(std::memory_order_acquire);
  const uint64_t chain_base = header_->writer.snapshot_chain_base.load(std::memory_order_relaxed);
  return [published, chain_base](uint64_t generation) {
    return generation < published && generation != chain_base;
  };
}

HeldSegmentSource Compactor::HeldRetiredSegments() {
  return [this](const std::string& segment, uint64_t bytes) {
    return built_.TakeRetired(
        RetiredGenerations(),
        [&](uint64_t generation) { return RetiredSegment(name_, generation); }, segment, bytes);
  };
}

// A handle's view stays on the snapshot it loaded until its overlay grows or a read is lapped,
// while other processes publish newer ones. Built from such a view, a delta lies over a base that
// is no longer the published chain's: PublishLocked refuses it, so however often the handle dumps
// nothing is published, and nothing a publication retires (covered large values, old snapshots)
// is reclaimed. The published chain cannot change under the writer lock: move onto it first.
Status Compactor::MoveOntoPublishedSnapshot(LocalView* view) const {
  const uint64_t published = header_->commit.snapshot_generation.load(std::memory_order_acquire);
  if (published == 0 || view->generation() == published) return Status::Ok();
  auto newer = reader_->OpenLatestSnapshot();
  if (!newer.ok()) return newer.status();
  if (view->RebaseOnto(*newer)) return Status::Ok();
  const uint64_t revision = view->revision;
  view->ResetTo(std::move(*newer));
  std::string scratch;
  return reader_->ReplayLog(view, revision, &scratch);
}

void Compactor::WaitForBuilder() {
  // A dead builder's claim is taken over here and given back: it left nothing to repair (its
  // unpublished segment is removed by the next publication).
  RobustLockWord* claim = &header_->compaction.compaction_lock;
  const LockResult r = AcquireRobustLock(claim, lock_->identity(), lock_timeout_);
  // The dead builder's claim is ours now, not yet given back.
  if (r == LockResult::kOwnerDied) CrashPoint("compactor.claim_taken_over");
  if (r == LockResult::kAcquired || r == LockResult::kOwnerDied) {
    ReleaseRobustLock(claim, lock_->identity());
  }
}

bool Compactor::PublishLocked(const std::shared_ptr<const SnapshotView>& snap) {
  auto& w = header_->writer;
  const uint64_t published = header_->commit.snapshot_generation.load(std::memory_order_relaxed);
  // Generations are published in increasing order (cleanup relies on it: whatever it retires
  // below a published generation can never become a published chain's base again), and a delta
  // only over the base of the published chain, which cleanup keeps (AfterPublish).
  const bool stale =
      published != 0 && (snap->revision() <= w.snapshot_revision.load(std::memory_order_relaxed) ||
                         snap->generation() <= published);
  const bool orphan = snap->base_generation() != 0 &&
                      (published == 0 || snap->base_generation() !=
                                             w.snapshot_chain_base.load(std::memory_order_relaxed));
  if (stale || orphan) {
    UnlinkSegmentQuietly(SnapshotSegment(name_, snap->generation()));
    return false;  // a newer snapshot won the race
  }
  // The writer's bookkeeping first, then the chain base, then the generation: the one store that
  // publishes. A crash between any two leaves the generation (and the snapshot it names) the
  // truth, which the next lock holder re-derives the rest from (WriterLock::RepairAfterDeadHolder).
  w.snapshot_log_position.store(snap->log_position(), std::memory_order_relaxed);
  CrashPoint("compactor.publish.log_position_stored");
  w.snapshot_revision.store(snap->revision(), std::memory_order_relaxed);
  // Large changes committed after the snapshot's revision are forgotten too: the count only
  // schedules compaction, and the next one comes at most a log's worth of changes later.
  w.external_bytes.store(0, std::memory_order_relaxed);
  CrashPoint("compactor.publish.bookkeeping_stored");
  // Before the generation (layout.h): a publisher killed in between leaves a chain base that
  // refuses deltas until the next lock holder's repair, never one that accepts a delta over a
  // retired base.
  w.snapshot_chain_base.store(
      snap->base_generation() != 0 ? snap->base_generation() : snap->generation(),
      std::memory_order_relaxed);
  // Only a new base changes the chain base: then it names a base that is not published yet.
  if (snap->base_generation() == 0) CrashPoint("compactor.publish.new_chain_base_stored");
  header_->commit.snapshot_generation.store(snap->generation(), std::memory_order_release);
  CrashPoint("compactor.publish.generation_stored");
  header_->compaction.snapshots_built.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Older snapshots and large-value segments the new snapshot covers are no longer needed: a
// reader that still looks for one gets NOT_FOUND and moves to the newest snapshot. The newest
// kRetiredSnapshots old snapshots are renamed rather than unlinked, so that the next builders
// reuse their pages (see RecycleSegment); readers that still map one keep it from being reused.
//
// Never retired: the new snapshot's base (the published chain's base until a newer base is
// published, and every later delta lies over it), nor anything at or above the new generation.
// Retired newest first: a chain's deltas (newer than their base) lose their names before the
// base does, even with several processes cleaning up at once, so a reader that mapped a delta
// and then cannot find its base knows the delta was retired and retries (SnapshotView::Open).
// A cleanup running late cannot hit a newer chain's base: generations are published in
// increasing order, so that base lies above this publication.
bool Compactor::StillNamed() const { return SegmentHasInode(name_, incarnation_); }

void Compactor::AfterPublish(const SnapshotView& snap, const char* how) const {
  if (!StillNamed()) {
    // Unlinked while we built: the unlink's sweep may have run before our segment existed, so
    // remove it ourselves, and leave every other segment of the name alone (it may belong to a
    // dict created again under that name).
    UnlinkSegmentQuietly(SnapshotSegment(name_, snap.generation()));
    return;
  }
  const auto published = ListNumberedSegments(name_ + "@s");
  for (auto it = published.rbegin(); it != published.rend(); ++it) {
    const auto& [old, segment] = *it;
    if (old >= snap.generation() || old == snap.base_generation()) continue;
    if (!RenameSegment(segment, RetiredSegment(name_, old)).ok()) UnlinkSegmentQuietly(segment);
    // This one retired, older ones still named (a delta may be retired, its base not yet).
    CrashPoint("compactor.retire.snapshot_renamed");
  }
  const auto retired = ListNumberedSegments(name_ + "@r");
  size_t biggest = retired.size();
  uint64_t biggest_bytes = 0;
  for (size_t i = 0; i + kRetiredSnapshots < retired.size(); ++i) {
    struct stat st {};
    if (stat(SegmentPath(retired[i].second).c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) > biggest_bytes) {
      biggest = i;
      biggest_bytes = static_cast<uint64_t>(st.st_size);
    }
  }
  for (size_t i = 0; i + kRetiredSnapshots < retired.size(); ++i) {
    // The biggest, and those this process's builder still maps for its next builds, stay.
    if (i == biggest || built_.Holds(retired[i].first)) continue;
    UnlinkSegmentQuietly(retired[i].second);
    CrashPoint("compactor.retire.retired_unlinked");  // more than kRetiredSnapshots still kept
  }
  UnlinkUnneededBlobSegments(name_, snap.revision(), UINT64_MAX);
  if (log_sink_) {
    log_sink_->Log(LogLevel::kInfo, "dict " + QuoteForMessage(name_) + ": snapshot generation " +
                                        std::to_string(snap.generation()) + " at revision " +
                                        std::to_string(snap.revision()) + " (" +
                                        std::to_string(snap.entry_count()) + " entries, " +
                                        (snap.base_generation() != 0 ? "delta" : "base") + ", " +
                                        how + ")");
  }
}

void Compactor::StartBuilder(uint64_t target_revision, bool wait_for_quiet) {
  if (builder_.joinable()) builder_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    urgent_target_ = 0;
  }
  running_.store(true, std::memory_order_release);
  builder_ = std::thread([this, target_revision, wait_for_quiet] {
    // After a build forced by the log's fill, the writes that came in meanwhile still get a
    // snapshot once writers pause: the end of a burst is exactly when attachers tend to come.
    if (!wait_for_quiet) BuildInBackground(target_revision);
    IdleThenBuild();
    running_.store(false, std::memory_order_release);
  });
}

void Compactor::IdleThenBuild() {
  using std::chrono::steady_clock;
  const auto& committed = header_->commit.commit_revision;
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t seen = committed.load(std::memory_order_acquire);
  auto give_up = steady_clock::now() + kIdleSnapshotPatience;
  while (true) {
    waiting_for_quiet_.store(true, std::memory_order_release);
    wake_.wait_for(lock, kIdleSnapshotQuiet, [this] { return closing_ || urgent_target_ != 0; });
    waiting_for_quiet_.store(false, std::memory_order_release);
    if (closing_) return;
    if (urgent_target_ != 0) {
      // The log reached the early-build mark: build now, then keep watching for the pause that
      // follows.
      const uint64_t target = std::exchange(urgent_target_, 0);
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
    // Writers are busy: the early-build trigger (urgent) covers them; a later commit starts
    // another quiet watch.
    if (steady_clock::now() >= give_up) return;
  }
  lock.unlock();
  // Someone else built meanwhile, or a user's Lock() is held (the publication would queue
  // behind it): nothing to do now.
  if (UnpublishedBytes() < log_capacity_ / kIdleSnapshotFraction ||
      RobustLockIsHeld(header_->writer.write_lock)) {
    return;
  }
  BuildInBackground(seen);
  // Writers paused. The retired snapshots kept for the next builds' pages are given back once the
  // pause lasts kGiveBackQuiet: a burst that resumes sooner reuses them (and this process's
  // mappings of them) instead of faulting fresh pages in — with an immediate give-back, every
  // burst of a bursty writer started with cold builds (shmdict_bench's overwrite row: 1.2-1.5 us
  // per write instead of 0.9-1.2).
  {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t at = committed.load(std::memory_order_acquire);
    waiting_for_quiet_.store(true, std::memory_order_release);
    wake_.wait_for(lock, kGiveBackQuiet, [this] { return closing_ || urgent_target_ != 0; });
    waiting_for_quiet_.store(false, std::memory_order_release);
    if (urgent_target_ != 0) {
      const uint64_t target = std::exchange(urgent_target_, 0);
      lock.unlock();
      BuildInBackground(target);  // writers are back; the next commit starts a new watch
      return;
    }
    if (!closing_ && committed.load(std::memory_order_acquire) != at) return;  // writers are back
  }
  // An idle (or closing) dict holds one snapshot's worth of /dev/shm, not three. (A mapper keeps
  // its mapping.)
  for (const auto& [old, segment] : ListNumberedSegments(name_ + "@r")) {
    UnlinkSegmentQuietly(segment);
  }
  built_.Clear(RetiredGenerations());
  builder_view_ = LocalView{};
}

void Compactor::BuildInBackground(uint64_t target_revision) {
  if (!StillNamed()) return;  // nobody can attach to it any more: a snapshot would be garbage
  RobustLockWord* claim = &header_->compaction.compaction_lock;
  // One builder at a time host-wide; others skip (their writers keep appending meanwhile). A
  // builder that died mid-way left nothing to repair: its unpublished segment is removed by the
  // next publication.
  switch (AcquireRobustLock(claim, lock_->identity(), std::chrono::nanoseconds(0))) {
    case LockResult::kAcquired:
      break;
    case LockResult::kOwnerDied:
      // The dead builder's claim is ours now, and nothing is built yet.
      CrashPoint("compactor.claim_taken_over");
      break;
    default:
      return;
  }
  // The builder's own view: the published snapshot plus the log up to the target. The log there
  // cannot be reclaimed before a newer snapshot is published, and then a lapped read just moves
  // the view to that snapshot.
  LocalView& frozen = builder_view_;
  std::string scratch;
  Status caught_up = reader_->LoadLatestSnapshot(&frozen);
  if (caught_up.ok()) caught_up = reader_->ReplayLog(&frozen, target_revision, &scratch);
  const uint64_t generation = NextGeneration();
  const HeldSegmentSource held = HeldRetiredSegments();
  Result<std::shared_ptr<const SnapshotView>> snap =
      caught_up.ok()
          ? SnapshotView::Build(name_, generation, frozen.revision, frozen.position, mode_,
                                frozen.SnapshotBase(), frozen.OverlayDelta(), &held)
          : Result<std::shared_ptr<const SnapshotView>>(caught_up);
  bool published = false;
  if (!snap.ok()) {
    if (log_sink_) {
      log_sink_->Log(LogLevel::kError,
                     "dict " + QuoteForMessage(name_) + ": building snapshot generation " +
                         std::to_string(generation) + " failed: " + snap.status().ToString());
    }
  } else {
    // Built and named, the claim held, the writer lock not yet taken.
    CrashPoint((*snap)->base_generation() != 0 ? CrashPointName("compactor.background.delta_built")
                                               : CrashPointName("compactor.background.base_built"));
    if (lock_->AcquireUncounted(lock_timeout_).ok()) {
      published = PublishLocked(*snap);
      lock_->ReleaseUncounted();
      // Published (or refused), the writer lock released, the claim still held, nothing retired.
      if (published) CrashPoint("compactor.background.published");
    }
  }
  ReleaseRobustLock(claim, lock_->identity());
  // The overlay's memory is kept for the next build; the snapshot is not: holding it would keep
  // it from being recycled once retired.
  frozen.ResetTo(nullptr);
  if (published) {
    built_.Add(*snap);
    AfterPublish(**snap, "background");
  } else {
    UnlinkSegmentQuietly(SnapshotSegment(name_, generation));  // never published (or half built)
  }
}

void Compactor::Stop() {
  if (header_ == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
    wake_.notify_all();
  }
  if (builder_.joinable()) builder_.join();
  built_.Clear();
}

void Compactor::ForgetParentsBuilder() {
  // The parent's builder thread does not exist in the child: joining its std::thread would wait
  // on a thread of another process. The object is overwritten without being destroyed (its
  // destructor would terminate), and the builder's mutex and condition variable are made anew,
  // since a parent thread may have held the mutex at the fork.
  new (&builder_) std::thread();
  new (&mu_) std::mutex();
  new (&wake_) std::condition_variable();
  running_.store(false, std::memory_order_relaxed);
  waiting_for_quiet_.store(false, std::memory_order_relaxed);
  closing_ = false;
  urgent_target_ = 0;
  built_.ForgetAfterFork();
  new (&builder_view_) LocalView();  // the parent's builder may have been changing it
}

}  // namespace shmdict::internal
