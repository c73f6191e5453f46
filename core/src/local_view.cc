#include "local_view.h"

#include <utility>

namespace shmdict::internal {

void LocalView::Apply(const OpRef& op, uint64_t op_revision) {
  ValueView existing;
  switch (op.op) {
    case ChangeOp::kSet: {
      const uint64_t hash = Hash64(op.key);
      const ValueView value{op.type, op.value};
      bool had_entry = false;
      bool was_present = false;
      overlay.Put(op.key, hash, op_revision, &value, &had_entry, &was_present);
      if (!size_known_) break;
      const bool needs_probe = !had_entry && !snapshot_hidden && snapshot;
      if (needs_probe && !counting_) {
        size_known_ = false;  // Size() counts when asked
        break;
      }
      const bool existed =
          had_entry ? was_present : needs_probe && snapshot->Find(op.key, hash, &existing);
      if (!existed) ++size_;
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
      if (size_known_) --size_;
      break;
    }
    case ChangeOp::kClear:
      overlay.Clear();
      snapshot_hidden = snapshot != nullptr;
      size_ = 0;
      size_known_ = true;
      break;
  }
}

void LocalView::ResetTo(std::shared_ptr<const SnapshotView> snap) {
  overlay.Clear();
  snapshot_hidden = false;
  revision = snap ? snap->revision() : 0;
  position = snap ? snap->log_position() : 0;
  size_ = snap ? snap->entry_count() : 0;
  size_known_ = true;
  snapshot = std::move(snap);
}

uint64_t LocalView::Size() {
  if (!size_known_) {
    // The snapshot's count, corrected by every key the overlay changed since: a value where the
    // snapshot has none adds one, a tombstone over the snapshot's entry removes one.
    const bool visible = !snapshot_hidden && snapshot;
    uint64_t n = visible ? snapshot->entry_count() : 0;
    ValueView existing;
    overlay.ForEach([&](uint64_t hash, const Overlay::Entry& e) {
      const bool in_snapshot = visible && snapshot->Find(e.key(), hash, &existing);
      if (e.present && !in_snapshot) ++n;
      if (!e.present && in_snapshot) --n;
    });
    size_ = n;
    size_known_ = true;
  }
  counting_ = true;
  return size_;
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

}  // namespace shmdict::internal
