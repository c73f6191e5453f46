// Compactor: a handle's share of snapshot building (docs/DESIGN.md, rules 4 and 5). When the
// log since the published snapshot reaches an eighth of the ring (half, for a dict smaller than 8
// logs), a background thread builds the next snapshot from the published one and the log — outside
// the writer lock, while writers keep appending — and publishes it under the lock in O(1); once
// writers pause with a sixteenth of the log unpublished, it publishes one more, so attaching to a
// quiet dict is a mapping. Builds are layered (snapshot.h: usually a small delta over the chain's
// base), which is what makes building that often affordable. Only when the ring truly fills first
// does a writer wait for a running builder or, with none running, build inline. At most one builder
// runs per dict host-wide (the compaction claim in the header). Every publication, inline or
// background, goes through PublishLocked and AfterPublish.
//
// Thread-safety: AfterCommit, CompactLocked, WaitForBuilder, Stop and ForgetParentsBuilder belong
// to the handle's thread; the builder thread touches only the shared header, the LogReader and
// its own frozen view. Lifetime: Stop() joins the builder; call it before the header is unmapped.
#ifndef SHMDICT_CORE_COMPACTOR_H_
#define SHMDICT_CORE_COMPACTOR_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "built_snapshots.h"
#include "layout.h"
#include "local_view.h"
#include "log_reader.h"
#include "shmdict/log_sink.h"
#include "writer_lock.h"

namespace shmdict::internal {

// What a handle's options say about snapshot building (shmdict::Options, dict.h).
struct CompactorOptions {
  mode_t mode = 0600;      // of the snapshot segments
  bool background = true;  // build on a thread of this process (false: inline, under the lock)
  std::chrono::nanoseconds lock_timeout{0};  // how long a builder waits for the writer lock
  std::shared_ptr<LogSink> log_sink;         // null: report nowhere
};

class Compactor {
 public:
  Compactor() = default;
  Compactor(const Compactor&) = delete;
  Compactor& operator=(const Compactor&) = delete;
  ~Compactor() { Stop(); }

  // `incarnation`: the main segment's inode, to tell whether the dict's name still means this
  // dict (StillNamed).
  void Bind(const CompactorOptions& options, MainHeader* header, uint64_t log_capacity,
            const LogReader* reader, WriterLock* lock, uint64_t incarnation);

  // Log bytes (and large-change bytes) committed since the published snapshot: what schedules
  // the next one. Read from the shared bookkeeping, so any thread may ask.
  uint64_t UnpublishedBytes() const;
  // Whether a builder of any process holds the claim (a dead one counts until taken over).
  bool BuilderRunningAnywhere() const;

  // After each commit, under the writer lock: starts or hurries the background builder once the
  // log holds an eighth of its capacity (half for a dict smaller than 8 logs), or (with background
  // compaction off) builds inline once it is half full.
  void AfterCommit(LocalView* writer_view);
  // Under the writer lock: builds a snapshot of *view and publishes it now; *view moves onto it.
  Status CompactLocked(LocalView* view);
  // Outside the writer lock: waits (up to the lock timeout) for the running builder of any
  // process, taking over the claim of a dead one.
  void WaitForBuilder();
  // Wakes and joins this handle's builder thread. Idempotent.
  void Stop();
  // In a forked child: the parent's builder thread does not exist here, and the snapshots it
  // built are the parent's to reuse.
  void ForgetParentsBuilder();
  // The snapshots this handle built, still mapped: the handle's LogReader looks there first.
  const BuiltSnapshots& built_snapshots() const { return built_; }

 private:
  void StartBuilder(uint64_t target_revision, bool wait_for_quiet);
  // On the builder thread once the log holds a sixteenth of its capacity since the published
  // snapshot, and after every build: waits for 10 ms without a commit (up to a second), then
  // builds if that much is still unpublished. Builds at once when the log reaches AfterCommit's
  // trigger (urgent_target_).
  void IdleThenBuild();
  // Builds and publishes a snapshot at `target_revision` or later from the published snapshot and
  // the log, on the builder thread: no copy of the handle's state is taken under the lock.
  void BuildInBackground(uint64_t target_revision);
  // Under the writer lock. False (and the segment unlinked) when a newer snapshot won the race,
  // or when `snap` is a delta over a base that is no longer the published chain's.
  bool PublishLocked(const std::shared_ptr<const SnapshotView>& snap);
  // After a publication, outside the lock: retires older snapshots (never the published chain's
  // base: see compactor.cc) and covered large values.
  void AfterPublish(const SnapshotView& snap, const char* how) const;
  // Under the writer lock: moves *view onto the published snapshot when it is on an older one.
  Status MoveOntoPublishedSnapshot(LocalView* view) const;
  uint64_t NextGeneration();
  // For SnapshotView::Build: a retired snapshot this handle built, through the mapping that wrote
  // it (BuiltSnapshots).
  HeldSegmentSource HeldRetiredSegments();
  // Whether a generation is retired by the published chain as it is now (read once, here).
  std::function<bool(uint64_t)> RetiredGenerations() const;

  // Whether /dev/shm still holds this dict under its name (not unlinked, not replaced by a dict
  // created again under the same name). A handle can outlive its dict's unlink (a bridge's
  // pooled handle, any process that keeps it open): its builder must then neither publish a
  // snapshot nobody will ever remove nor clean up segments by name, which would be the new dict's.
  bool StillNamed() const;

  std::string name_;
  uint64_t incarnation_ = 0;
  mode_t mode_ = 0600;
  bool background_ = true;
  std::chrono::nanoseconds lock_timeout_{0};
  std::shared_ptr<LogSink> log_sink_;
  MainHeader* header_ = nullptr;
  uint64_t log_capacity_ = 0;
  const LogReader* reader_ = nullptr;
  WriterLock* lock_ = nullptr;

  BuiltSnapshots built_;
  // The builder thread's view (published snapshot + log up to the target), kept between builds
  // for its overlay's memory: fresh pages fault at 10-20 us each on the VMs we measured. Given
  // back when writers pause.
  LocalView builder_view_;
  std::thread builder_;
  std::atomic<bool> running_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool closing_ = false;        // guarded by mu_
  uint64_t urgent_target_ = 0;  // guarded by mu_; 0: none
  // True only while IdleThenBuild waits: a commit tells it about a filling log then, and pays
  // no lock at all while a build is already running.
  std::atomic<bool> waiting_for_quiet_{false};
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_COMPACTOR_H_
