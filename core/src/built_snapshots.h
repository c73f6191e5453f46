// BuiltSnapshots: the snapshots a handle's builder wrote, kept mapped (writable, as the builder
// wrote them) after they are published and after they are retired. Two costs disappear with them
// on machines where the first touch of a page through a new mapping is expensive (10-20 us per
// 4 KiB page on the shadow-paged VMs we measured, even for a page already in tmpfs):
//   - the handle moving onto the snapshot its own builder just published, and the next build
//     reading it, use the builder's mapping instead of mapping the segment again (Find);
//   - the next build writes into a retired snapshot's segment through the mapping that wrote it
//     (TakeRetired, RecycleHeldSegment), instead of faulting every page of a fresh mapping.
// The cost: the retired segments held here (at most kHeld) keep their pages while another
// process's cleanup unlinks their names, until the next build or Clear(); and while held they
// cannot be recycled by another process's builder, which then takes another retired segment or
// fresh pages — as when any reader still maps one.
//
// Thread-safety: every method may be called from any thread (one mutex). A view handed out by
// Find is shared: TakeRetired only takes a view nobody else references. Lifetime: Clear() before
// the handle unmaps its header (the views' mappings are independent of it).
#ifndef SHMDICT_CORE_BUILT_SNAPSHOTS_H_
#define SHMDICT_CORE_BUILT_SNAPSHOTS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "segment.h"
#include "snapshot.h"

namespace shmdict::internal {

class BuiltSnapshots {
 public:
  // The two biggest (the published chain's base and the previous base, which the next fold into a
  // new base rewrites) and the four newest of the others (deltas: the handle's own view may
  // still hold the newest retired ones for a while).
  static constexpr size_t kHeld = 6;
  // A held segment more than this many times bigger than a build needs (and bigger by over a
  // MiB) is left for a bigger build: shrunk for a small delta, a retired base would be missing
  // at the next fold, which then faults in every page of a fresh segment.
  static constexpr uint64_t kMaxOversize = 4;

  // After a publication: keeps `view` (built by this handle), dropping beyond kHeld the oldest
  // that is not one of the two biggest.
  void Add(std::shared_ptr<const SnapshotView> view);
  // The held view of `generation` (shared), or null.
  std::shared_ptr<const SnapshotView> Find(uint64_t generation) const;
  // Whether a view of `generation` is held (its retired name is worth keeping).
  bool Holds(uint64_t generation) const { return Find(generation) != nullptr; }
  // For a build's new `segment` of `bytes`: the segment of a held view that `retired(generation)`
  // says is retired and that nobody else references (the best fit for `bytes`), taken over by
  // RecycleHeldSegment under the retired name `retired_name(generation)`. Views tried and found
  // gone are dropped.
  std::optional<std::pair<Fd, Mapping>> TakeRetired(
      const std::function<bool(uint64_t generation)>& retired,
      const std::function<std::string(uint64_t generation)>& retired_name,
      const std::string& segment, uint64_t bytes);
  // Drops every held view whose generation `drop` says (all of them without one).
  void Clear(const std::function<bool(uint64_t generation)>& drop = nullptr);
  // In a forked child: the held segments are the parent's to reuse (their flocks belong to file
  // descriptions the parent shares). Drops them; if a parent thread held the mutex at the fork
  // the list may be half-updated, and is abandoned instead (its mappings stay until exit).
  void ForgetAfterFork();

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const SnapshotView>> views_;  // oldest first
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_BUILT_SNAPSHOTS_H_
