// LocalView: the state of a dict at one revision as one handle sees it — the newest snapshot it
// mapped plus an overlay of the changes it replayed since. Reads consult the overlay, then the
// snapshot.
//
// Thread-safety: thread-compatible. Lifetime: keeps its snapshot mapped (shared_ptr).
#ifndef SHMDICT_CORE_LOCAL_VIEW_H_
#define SHMDICT_CORE_LOCAL_VIEW_H_

#include <cstdint>
#include <memory>
#include <string_view>

#include "change_record.h"
#include "hash.h"
#include "overlay.h"
#include "pass_counter.h"
#include "snapshot.h"

namespace shmdict::internal {

// The state of a dict at one revision, as one handle sees it.
struct LocalView {
  std::shared_ptr<const SnapshotView> snapshot;  // null: the empty dict at revision 0
  Overlay overlay;
  bool snapshot_hidden = false;  // a clear() since the snapshot: only the overlay counts
  uint64_t revision = 0;
  uint64_t position = 0;  // log position just after `revision`'s record

  // Entries at `revision`. Counted lazily: knowing whether a set adds a key takes a probe of the
  // snapshot for every key the overlay lacks — a cache miss, and in a snapshot this process has
  // just mapped a page fault — which was most of an attacher's replay and of a reader's
  // catch-up, for a count they seldom ask for. The first call counts the overlay's keys against
  // the snapshot, O(overlay); from then on Apply keeps the count current (a handle that asks
  // once, or writes, asks again: CommitLocked publishes it with every commit).
  uint64_t Size();

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
    return {
        [this](const SnapshotDelta::Fn& fn) {
          overlay.ForEach([&](uint64_t hash, const Overlay::Entry& entry) {
            const ValueView value = entry.view();
            fn(entry.key(), hash, entry.present ? &value : nullptr);
          });
        },
        [this](std::string_view key, uint64_t hash) { return overlay.Find(key, hash) != nullptr; }};
  }

  template <typename Fn>  // Fn(std::string_view key, ValueView value)
  void ForEach(Fn&& fn) const {
    ++whole_dict_passes;
    overlay.ForEach([&](uint64_t, const Overlay::Entry& entry) {
      if (entry.present) fn(entry.key(), entry.view());
    });
    if (snapshot_hidden || !snapshot) return;
    snapshot->ForEach([&](std::string_view key, ValueView value) {
      if (overlay.empty() || overlay.Find(key, Hash64(key)) == nullptr) fn(key, value);
    });
  }

 private:
  // Size() is exact from size_ when size_known_; Apply keeps it so only while counting_ (or when
  // the answer needs no snapshot probe). Invariant: counting_ implies size_known_.
  uint64_t size_ = 0;
  bool size_known_ = true;
  bool counting_ = false;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_LOCAL_VIEW_H_
