// Watcher: a change stream with its own log position, independent of its Dict's view, so that a
// slow consumer never holds anyone back: if writers lap it, it resumes from the newest snapshot.
#include "dict_impl.h"

namespace shmdict {

using internal::LocalView;
using internal::OpRef;
using internal::ReadOutcome;

struct Watcher::State {
  Dict::Impl* dict = nullptr;
  uint64_t revision = 0;       // delivered up to here
  uint64_t position = 0;       // log position after `revision`'s record
  uint64_t deliver_after = 0;  // changes at or below this revision are read but not delivered
  bool needs_snapshot = false;
  std::string payload;
};

Watcher::Watcher(std::unique_ptr<State> state) : state_(std::move(state)) {}
Watcher::Watcher(Watcher&&) noexcept = default;
Watcher& Watcher::operator=(Watcher&&) noexcept = default;
Watcher::~Watcher() = default;

uint64_t Watcher::revision() const { return state_->revision; }

Watcher Dict::Watch(uint64_t from_revision) {
  if (!impl_ || impl_->closed) std::abort();
  Impl& d = *impl_;
  auto state = std::make_unique<Watcher::State>();
  state->dict = &d;
  d.CatchUp(false).IgnoreError();
  if (from_revision >= d.view.revision) {
    // From now (or a future revision): start at the handle's position.
    state->revision = d.view.revision;
    state->position = d.view.position;
    state->deliver_after = from_revision;
  } else {
    // Replay from the latest snapshot's position; if that is already past from_revision, the
    // first batch is the snapshot itself. Revision 0 with no snapshot replays the whole log.
    LocalView base;
    if (!d.reader.LoadLatestSnapshot(&base).ok() || base.revision > from_revision ||
        (from_revision == 0 && base.snapshot)) {
      state->needs_snapshot = true;
    } else {
      state->revision = base.revision;
      state->position = base.position;
      state->deliver_after = from_revision;
    }
  }
  return Watcher(std::move(state));
}

Result<ChangeBatch> Watcher::Next(size_t max_changes, std::chrono::nanoseconds timeout) {
  State& s = *state_;
  Dict::Impl& d = *s.dict;
  ChangeBatch batch;
  if (s.needs_snapshot) {
    LocalView base;
    Status st = d.reader.LoadLatestSnapshot(&base);
    if (!st.ok()) return st;
    batch.is_snapshot = true;
    batch.snapshot_revision = base.revision;
    base.ForEach([&](std::string_view k, ValueView v) {
      batch.snapshot_items.emplace_back(std::string(k), Value(v));
    });
    s.revision = base.revision;
    s.position = base.position;
    s.deliver_after = base.revision;
    s.needs_snapshot = false;
    timeout = std::chrono::nanoseconds::zero();  // deliver the snapshot now, with what follows
  }
  uint64_t committed = d.header->commit.commit_revision.load(std::memory_order_acquire);
  if (committed <= s.revision && !batch.is_snapshot) {
    auto waited = d.WaitForChange(s.revision, timeout);
    if (!waited.ok()) {
      if (waited.status().code() != StatusCode::kDeadlineExceeded) return waited.status();
      batch.revision = s.revision;
      return batch;
    }
    committed = *waited;
  }
  while (s.revision < committed && batch.changes.size() < max_changes) {
    uint64_t next = 0;
    switch (d.reader.ReadRecord(s.position, s.revision + 1, &s.payload, &next)) {
      case ReadOutcome::kOk: {
        const uint64_t revision = s.revision + 1;
        const bool deliver = revision > s.deliver_after;
        bool valid = internal::ForEachOp(s.payload, [&](const OpRef& op) {
          if (!deliver) return;
          Change c;
          c.revision = revision;
          c.op = op.op;
          c.key = std::string(op.key);
          if (op.op == ChangeOp::kSet) c.value = Value(op.type, std::string(op.value));
          batch.changes.push_back(std::move(c));
        });
        if (!valid) {
          return d.Corrupt("the change record of revision " + std::to_string(revision) +
                           " does not decode");
        }
        s.revision = revision;
        s.position = next;
        break;
      }
      case ReadOutcome::kLapped:
        // Too slow: the log moved on. Deliver what we have; the next call starts with a snapshot.
        s.needs_snapshot = true;
        batch.revision = s.revision;
        if (!batch.changes.empty() || batch.is_snapshot) return batch;
        return Next(max_changes, timeout);
      case ReadOutcome::kCorrupt:
        return d.Corrupt("the log record of revision " + std::to_string(s.revision + 1) +
                         " is invalid");
    }
  }
  batch.revision = s.revision;
  return batch;
}

}  // namespace shmdict
