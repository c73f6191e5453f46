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

}  // namespace shmdict::internal
