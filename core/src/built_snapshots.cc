#include "built_snapshots.h"

#include <algorithm>
#include <new>

namespace shmdict::internal {

void BuiltSnapshots::Add(std::shared_ptr<const SnapshotView> view) {
  std::vector<std::shared_ptr<const SnapshotView>> dropped;  // unmapped outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  views_.push_back(std::move(view));
  while (views_.size() > kHeld) {
    // The oldest goes, unless it is one of the two biggest (a published base, the previous base
    // kept for the next fold): small deltas come and go between folds.
    auto bigger = [](const auto& a, const auto& b) { return a->bytes() > b->bytes(); };
    std::vector<std::shared_ptr<const SnapshotView>> by_size = views_;
    std::partial_sort(by_size.begin(), by_size.begin() + 2, by_size.end(), bigger);
    auto victim = views_.begin();
    while (*victim == by_size[0] || *victim == by_size[1]) ++victim;
    dropped.push_back(std::move(*victim));
    views_.erase(victim);
  }
}

std::shared_ptr<const SnapshotView> BuiltSnapshots::Find(uint64_t generation) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& view : views_) {
    if (view->generation() == generation) return view;
  }
  return nullptr;
}

std::optional<std::pair<Fd, Mapping>> BuiltSnapshots::TakeRetired(
    const std::function<bool(uint64_t generation)>& retired,
    const std::function<std::string(uint64_t generation)>& retired_name, const std::string& segment,
    uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  while (true) {
    // Best fit: the smallest segment at least `bytes` big, else the biggest one. Pages beyond
    // the held mapping fault like fresh ones, and a big segment shrunk for a small delta is
    // missed by the next fold into a new base.
    auto best = views_.end();
    for (auto it = views_.begin(); it != views_.end(); ++it) {
      // Under mu_, a view referenced only here cannot gain a reference (Find takes mu_ too).
      if (!retired((*it)->generation()) || it->use_count() != 1) continue;
      if ((*it)->bytes() > kMaxOversize * bytes && (*it)->bytes() > bytes + (uint64_t{1} << 20)) {
        continue;
      }
      if (best == views_.end()) {
        best = it;
        continue;
      }
      const uint64_t size = (*it)->bytes();
      const uint64_t best_size = (*best)->bytes();
      const bool fits = size >= bytes;
      const bool best_fits = best_size >= bytes;
      if (fits != best_fits ? fits : (fits ? size < best_size : size > best_size)) best = it;
    }
    if (best == views_.end()) return std::nullopt;
    const uint64_t generation = (*best)->generation();
    std::optional<std::pair<Fd, Mapping>> held = SnapshotView::ReleaseSegment(&*best);
    views_.erase(best);
    if (!held) continue;
    auto taken = RecycleHeldSegment(std::move(*held), retired_name(generation), segment, bytes);
    if (taken.ok()) return std::move(*taken);
  }
}

void BuiltSnapshots::Clear(const std::function<bool(uint64_t generation)>& drop) {
  std::vector<std::shared_ptr<const SnapshotView>> dropped;  // unmapped outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = views_.begin(); it != views_.end();) {
    if (!drop || drop((*it)->generation())) {
      dropped.push_back(std::move(*it));
      it = views_.erase(it);
    } else {
      ++it;
    }
  }
}

void BuiltSnapshots::ForgetAfterFork() {
  if (mu_.try_lock()) {
    std::vector<std::shared_ptr<const SnapshotView>> dropped = std::move(views_);
    views_.clear();
    mu_.unlock();
    return;
  }
  new (&mu_) std::mutex();
  new (&views_) std::vector<std::shared_ptr<const SnapshotView>>();
}

}  // namespace shmdict::internal
