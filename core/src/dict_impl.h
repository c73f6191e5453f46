// Dict::Impl: the engine behind a Dict handle. Internal; see shmdict/dict.h for the contract and
// docs/LAYOUT.md for the bytes.
//
// A handle keeps a LocalView: the newest snapshot it mapped plus an overlay of the changes it
// replayed since, at exactly one revision. Reads consult the overlay, then the snapshot. Writes
// take the cross-process writer lock, catch the view up, append one record, publish the commit
// with a single release-store of commit_revision, and apply the change to the view.
//
// Thread-safety: an Impl is used by one thread at a time (the handle is thread-compatible), except
// for its background snapshot builder, which touches only the shared header and a frozen copy of
// the view. Lifetime: owns its mappings; the background builder is joined by Close().
#ifndef SHMDICT_CORE_DICT_IMPL_H_
#define SHMDICT_CORE_DICT_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hash.h"
#include "layout.h"
#include "log_ring.h"
#include "overlay.h"
#include "robust_lock.h"
#include "segment.h"
#include "shmdict/dict.h"
#include "snapshot.h"

namespace shmdict {

struct LockGuard::Holder {};

namespace internal {

// The state of a dict at one revision, as one handle sees it.
struct LocalView {
  std::shared_ptr<const SnapshotView> snapshot;  // null: the empty dict at revision 0
  Overlay overlay;
  bool snapshot_hidden = false;  // a clear() since the snapshot: only the overlay counts
  uint64_t revision = 0;
  uint64_t position = 0;  // log position just after `revision`'s record
  uint64_t size = 0;
  // False for a view that never reports its size (the background builder's: the snapshot counts
  // its own entries). A set of a key the overlay lacks then skips probing the snapshot for it.
  bool count_entries = true;

  uint64_t generation() const { return snapshot ? snapshot->generation() : 0; }

  bool Find(std::string_view key, ValueView* out) const {
    const uint64_t hash = Hash64(key);
    if (const Overlay::Entry* e = overlay.Find(key, hash); e != nullptr) {
      if (!e->present) return false;
      *out = e->view();
      return true;
    }
    if (snapshot_hidden || !snapshot) return false;
    return snapshot->Find(key, hash, out);
  }

  // Applies one op of the record of `op_revision` (the view's revision is advanced by the caller,
  // once per record).
  void Apply(const OpRef& op, uint64_t op_revision);

  void ResetTo(std::shared_ptr<const SnapshotView> snap);

  // Moves onto `newer`, a snapshot at or before this view's revision, without replaying the log:
  // the overlay keeps only the keys changed after `newer`. This is exact because, while the
  // current snapshot is visible, every change since it sits in the overlay with its revision
  // (erasures as tombstones). False, with the view unchanged, when that does not hold (no
  // snapshot, or a clear() hid it): the caller reloads and replays instead.
  bool RebaseOnto(std::shared_ptr<const SnapshotView> newer);

  // What a new snapshot of this view is built from: the snapshot (unless a clear() hid it) and
  // the overlay as the delta on top of it.
  const SnapshotView* SnapshotBase() const { return snapshot_hidden ? nullptr : snapshot.get(); }
  SnapshotDelta OverlayDelta() const {
    return {[this](const SnapshotDelta::Fn& fn) {
      overlay.ForEach([&](uint64_t hash, const Overlay::Entry& entry) {
        const ValueView value = entry.view();
        fn(entry.key(), hash, entry.present ? &value : nullptr);
      });
    }};
  }

  template <typename Fn>  // Fn(std::string_view key, ValueView value)
  void ForEach(Fn&& fn) const {
    overlay.ForEach([&](uint64_t, const Overlay::Entry& entry) {
      if (entry.present) fn(entry.key(), entry.view());
    });
    if (snapshot_hidden || !snapshot) return;
    snapshot->ForEach([&](std::string_view key, ValueView value) {
      if (overlay.empty() || overlay.Find(key, Hash64(key)) == nullptr) fn(key, value);
    });
  }
};

enum class ReadOutcome { kOk, kLapped, kCorrupt };

}  // namespace internal

struct Dict::Impl : LockGuard::Holder {
  std::string name;
  Options options;
  bool created = false;
  bool inherited_through_fork = false;  // this is a forked child's copy of the handle
  bool closed = false;
  internal::Fd fd;
  internal::Mapping map;
  internal::MainHeader* header = nullptr;
  internal::LogRing ring;
  internal::LocalView view;
  std::string payload;  // scratch: the record being read or written
  std::vector<internal::OpRef> ops_scratch;
  // This handle's token and liveness lock for the writer lock and the builder claim (shared by
  // the handle's thread and its builder thread).
  internal::HolderIdentity lock_identity;
  int lock_depth = 0;  // > 0 while this handle holds the writer lock
  uint64_t last_commit = 0;
  std::thread builder;
  std::atomic<bool> builder_running{false};
  // The builder thread may first wait for writes to go quiet (IdleThenBuild); these wake it for
  // Close() or for a half-full log that cannot wait.
  std::mutex builder_mutex;
  std::condition_variable builder_wake;
  bool builder_closing = false;        // guarded by builder_mutex
  uint64_t builder_urgent_target = 0;  // guarded by builder_mutex; 0: none
  // True only while IdleThenBuild waits: a commit tells it about a half-full log then, and pays
  // no lock at all while a build is already running.
  std::atomic<bool> builder_waiting{false};

  ~Impl();

  const std::string& Name() const { return name; }
  Status Corrupt(const std::string& what) const;

  // Catching up with the log.
  Status CatchUp(bool force) {
    const uint64_t committed = header->commit.commit_revision.load(std::memory_order_acquire);
    if (committed == view.revision && !force) return Status::Ok();
    return CatchUpSlow(force);
  }
  Status CatchUpSlow(bool force);
  // Replays the log into *v up to `target` (or the newest snapshot if v was lapped), using
  // *scratch for record bytes. Const and free of handle state, so the background builder can
  // bring its own view up to date while the handle keeps writing.
  Status ReplayLog(internal::LocalView* v, uint64_t target, std::string* scratch) const;
  // The published snapshot (nullptr at generation 0), mapped.
  Result<std::shared_ptr<const internal::SnapshotView>> OpenLatestSnapshot() const;
  Status LoadLatestSnapshot(internal::LocalView* v) const;
  // Reads the record of `expected_revision` at *position (skipping padding, fetching external
  // payloads) into *out; on kOk sets *next to the position after it.
  internal::ReadOutcome ReadRecord(uint64_t position, uint64_t expected_revision, std::string* out,
                                   uint64_t* next) const;

  // The writer lock. AcquireWriteLock/ReleaseWriteLock count this handle's depth (the user's
  // Lock() around its own writes); LockWriterRepairing takes the shared lock itself (for the
  // handle, and for its builder thread, which never holds it recursively) and, after a dead
  // holder, repairs what it left before returning.
  Status AcquireWriteLock(std::chrono::nanoseconds timeout);
  void ReleaseWriteLock();
  Status LockWriterRepairing(std::chrono::nanoseconds timeout);
  void UnlockWriter();
  // In a forked child (lock_identity.stale()): drops what belongs to the parent's threads — the
  // lock depth and the builder thread's state — before the handle is used or closed.
  void ForgetParentAfterFork();
  Status RepairAfterDeadHolder();
  std::string HolderDescription() const;

  // Writing. Plan runs under the lock on the caught-up view and fills the ops to commit.
  template <typename Plan>
  Result<uint64_t> Write(Plan&& plan);
  // kAborted (nothing written) when the ring is full, may_wait_for_builder is set and another
  // snapshot builder is running: the caller releases the lock, waits for it and retries.
  Result<uint64_t> CommitLocked(const std::vector<internal::OpRef>& ops, bool may_wait_for_builder);
  // Blocks until the running snapshot builder (if any) finishes, up to the lock timeout.
  void WaitForBuilder();
  Status CompactLocked();
  bool PublishLocked(const std::shared_ptr<const internal::SnapshotView>& snap);
  void CleanUpAfterPublish(uint64_t generation, uint64_t revision) const;
  void MaybeCompact();
  // Builds and publishes a snapshot at `target_revision` or later from the published snapshot
  // and the log, on the builder thread: no copy of the handle's state is taken under the lock.
  void BuildInBackground(uint64_t target_revision);
  // Runs on the builder thread once the log holds a sixteenth of its capacity since the
  // published snapshot, and after every build: waits for 10 ms without a commit (up to a
  // second), then builds if that much is still unpublished, so that a dict whose writers went
  // quiet gets a snapshot and attaching to it maps instead of replays. Builds at once when the
  // log reaches half (builder_urgent_target).
  void IdleThenBuild();
  void StartBuilder(uint64_t target_revision, bool wait_for_quiet);
  // Log bytes (and large-change bytes) committed since the published snapshot: what schedules
  // the next one. Read from the shared bookkeeping, so any thread may ask.
  uint64_t UnpublishedBytes() const;
  void WakeWaiters();

  Result<uint64_t> WaitForChange(uint64_t after, std::chrono::nanoseconds timeout) const;
  void Close();
};

template <typename Plan>
Result<uint64_t> Dict::Impl::Write(Plan&& plan) {
  // A commit finding the ring full while another builder is at work steps out of the lock and
  // waits for that snapshot rather than building a duplicate one under the lock; the plan is then
  // re-run, since other writers may have changed the state meanwhile.
  for (int attempt = 0;; ++attempt) {
    {
      Status s = AcquireWriteLock(options.lock_timeout);
      if (!s.ok()) return s;
      struct Unlock {
        Impl* impl;
        ~Unlock() { impl->ReleaseWriteLock(); }
      } unlock{this};
      s = CatchUp(false);
      if (!s.ok()) return s;
      std::vector<internal::OpRef>& ops = ops_scratch;  // reused: no allocation per write
      ops.clear();
      s = plan(ops);
      if (!s.ok()) return s;
      if (ops.empty()) return view.revision;
      // Only the outermost lock can be released: inside a user Lock() the builder could not
      // publish.
      const bool may_wait_for_builder = lock_depth == 1 && attempt < 3;
      auto committed = CommitLocked(ops, may_wait_for_builder);
      if (committed.ok() || committed.status().code() != StatusCode::kAborted) return committed;
    }
    WaitForBuilder();  // kAborted: the ring is full and a builder runs; wait outside the lock
  }
}

}  // namespace shmdict

#endif  // SHMDICT_CORE_DICT_IMPL_H_
