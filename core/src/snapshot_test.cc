#include "snapshot.h"

#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>

#include <map>
#include <optional>
#include <random>
#include <string>

#include "dict_test_base.h"
#include "hash.h"
#include "segment.h"

namespace shmdict::internal {
namespace {

using Model = std::map<std::string, std::string>;
using Delta = std::map<std::string, std::optional<std::string>>;  // nullopt: erase

SnapshotDelta DeltaOf(const Delta& delta) {
  return {[&delta](const SnapshotDelta::Fn& fn) {
            for (const auto& [key, value] : delta) {
              if (value) {
                const ValueView view{ValueType::kBytes, *value};
                fn(key, Hash64(key), &view);
              } else {
                fn(key, Hash64(key), nullptr);
              }
            }
          },
          [&delta](std::string_view key, uint64_t) { return delta.count(std::string(key)) != 0; }};
}

// What `delta` does to the dict `model`.
void ApplyTo(const Delta& delta, Model* model) {
  for (const auto& [key, value] : delta) {
    if (value) {
      (*model)[key] = *value;
    } else {
      model->erase(key);
    }
  }
}

// Build `generation`'s changes to a dict of 800 keys "k<i>": 20 consecutive keys (wrapping),
// every `erase_every`th erased, the others overwritten with a value of the generation.
Delta ChurnOf800Keys(uint64_t generation, int erase_every) {
  Delta delta;
  for (int i = 0; i < 20; ++i) {
    const std::string key = "k" + std::to_string((generation * 20 + i) % 800);
    if (i % erase_every == 0) {
      delta[key] = std::nullopt;
    } else {
      delta[key] = std::string(20, 'a' + generation % 26);
    }
  }
  return delta;
}

void ExpectHolds(const SnapshotView& snap, const Model& model, const std::string& absent_key) {
  ASSERT_EQ(snap.entry_count(), model.size());
  for (const auto& [key, value] : model) {
    ValueView found;
    ASSERT_TRUE(snap.Find(key, Hash64(key), &found)) << key;
    EXPECT_EQ(found.data, value) << key;
  }
  ValueView found;
  EXPECT_FALSE(snap.Find(absent_key, Hash64(absent_key), &found));
  Model seen;
  snap.ForEach([&](std::string_view k, ValueView v) {
    EXPECT_TRUE(seen.emplace(std::string(k), std::string(v.data)).second) << "twice: " << k;
  });
  EXPECT_EQ(seen, model);
}

// Its snapshots have no main segment, so TearDown removes them before DictTestBase's check.
class SnapshotBuildTest : public shmdict::testing::DictTestBase {
 protected:
  void TearDown() override {
    for (const std::string& segment : ListSegments(dict_ + "@")) UnlinkSegmentQuietly(segment);
    DictTestBase::TearDown();
  }
  const std::string dict_ = name_;
};

// Chains of snapshots, each built from the previous one, against a plain map: overwrites of the
// same and of other sizes, erasures and re-insertions (tombstones reused), growth past the load
// factor and churn past half the region, so both the patched copy and the rewrite run, deltas
// over a base and their folding into a new base, and a forced reload's checksum holds for every
// one.
TEST_F(SnapshotBuildTest, ChainsOfPatchedAndRewrittenSnapshotsMatchAMap) {
  std::mt19937_64 rng(7);
  Model model;
  std::shared_ptr<const SnapshotView> base;
  bool saw_patch = false;
  bool saw_rewrite = false;
  bool saw_tombstones = false;
  bool saw_delta = false;
  bool saw_base_after_delta = false;
  for (uint64_t generation = 1; generation <= 60; ++generation) {
    Delta delta;
    const uint64_t keys = generation < 20 ? 400 * generation : 3000;  // grow, then churn
    // Big changes first (every build a new base), then small ones: deltas that grow until they
    // are folded into a new base.
    const int changes = generation < 40 ? 700 : 60;
    for (int i = 0; i < changes; ++i) {
      const std::string key = "key:" + std::to_string(rng() % keys);
      if (rng() % 4 == 0) {
        delta[key] = std::nullopt;
      } else {
        delta[key] = std::string(rng() % 3 == 0 ? 8 + rng() % 40 : 12, 'a' + rng() % 26);
      }
    }
    ApplyTo(delta, &model);
    auto built =
        SnapshotView::Build(dict_, generation, generation, 0, 0600, base.get(), DeltaOf(delta));
    ASSERT_OK(built);
    const auto& snap = *built;
    // The table this one was written from: a delta from the previous delta (or from nothing,
    // over a base), a base from the chain's base.
    const SnapshotView* from = nullptr;
    if (base && snap->base_generation() != 0) {
      from = base->base_generation() != 0 ? base.get() : nullptr;
    } else if (base) {
      from = base->base() != nullptr ? base->base() : base.get();
    }
    if (from != nullptr) {
      const bool patched = snap->bucket_count() == from->bucket_count() &&
                           snap->entries_bytes() >= from->entries_bytes();
      (patched ? saw_patch : saw_rewrite) = true;
    }
    (snap->base_generation() != 0 ? saw_delta : saw_base_after_delta) |= base != nullptr;
    saw_tombstones |= snap->tombstone_count() > 0;
    ExpectHolds(*snap, model, "never-a-key");
    auto reopened = SnapshotView::Open(dict_, generation);
    ASSERT_OK(reopened);
    EXPECT_OK((*reopened)->VerifyContents(dict_));
    ExpectHolds(**reopened, model, "never-a-key");
    // The previous snapshot goes unless it is the new one's base.
    if (base && base->generation() != snap->base_generation()) {
      UnlinkSegmentQuietly(SnapshotSegment(dict_, generation - 1));
    }
    base = snap;
  }
  EXPECT_TRUE(saw_patch);
  EXPECT_TRUE(saw_rewrite);
  EXPECT_TRUE(saw_tombstones);
  EXPECT_TRUE(saw_delta);
  EXPECT_TRUE(saw_base_after_delta);
}

// A delta hides erased keys of its base, overrides changed ones, counts the dict as a whole and
// lists every entry once; erasing a key the base lacks, and re-setting an erased one, undo
// themselves in the next delta.
TEST_F(SnapshotBuildTest, DeltaOverABaseReadsAsTheWholeDict) {
  Model model;
  Delta first;
  for (int i = 0; i < 1000; ++i) first["k" + std::to_string(i)] = "value" + std::to_string(i);
  auto base = SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(first));
  ASSERT_OK(base);
  for (const auto& [key, value] : first) model[key] = *value;
  EXPECT_EQ((*base)->base_generation(), 0u);

  const Delta second = {{"k1", std::nullopt},  // erased from the base
                        {"k2", "changed"},     // overridden
                        {"new", "fresh"},      // added
                        {"ghost", std::nullopt}};
  auto delta = SnapshotView::Build(dict_, 2, 2, 0, 0600, base->get(), DeltaOf(second));
  ASSERT_OK(delta);
  ASSERT_EQ((*delta)->base_generation(), 1u) << "a small change over a big base is a delta";
  EXPECT_EQ((*delta)->own_entry_count(), 3u) << "marker for k1, k2, new; nothing for ghost";
  model.erase("k1");
  model["k2"] = "changed";
  model["new"] = "fresh";
  ExpectHolds(**delta, model, "k1");

  const Delta third = {{"k1", "back"}, {"new", std::nullopt}, {"k3", std::nullopt}};
  auto next = SnapshotView::Build(dict_, 3, 3, 0, 0600, delta->get(), DeltaOf(third));
  ASSERT_OK(next);
  ASSERT_EQ((*next)->base_generation(), 1u) << "the next delta lies over the same base";
  model["k1"] = "back";
  model.erase("new");
  model.erase("k3");
  ExpectHolds(**next, model, "new");
  auto reopened = SnapshotView::Open(dict_, 3);
  ASSERT_OK(reopened);
  EXPECT_OK((*reopened)->VerifyContents(dict_));
  ExpectHolds(**reopened, model, "new");
}

// Once the changes since the base outgrow its fraction, the build folds them into a new base
// that holds everything (markers resolved to absent keys).
TEST_F(SnapshotBuildTest, ABigDeltaIsFoldedIntoANewBase) {
  Model model;
  Delta first;
  for (int i = 0; i < 800; ++i) first["k" + std::to_string(i)] = std::string(20, 'a');
  auto snap = SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(first));
  ASSERT_OK(snap);
  for (const auto& [key, value] : first) model[key] = *value;
  std::shared_ptr<const SnapshotView> previous = *snap;
  bool folded = false;
  for (uint64_t generation = 2; generation < 40 && !folded; ++generation) {
    const Delta delta = ChurnOf800Keys(generation, 3);
    ApplyTo(delta, &model);
    auto built =
        SnapshotView::Build(dict_, generation, generation, 0, 0600, previous.get(), DeltaOf(delta));
    ASSERT_OK(built);
    folded = (*built)->base_generation() == 0;
    ExpectHolds(**built, model, "k-none");
    previous = *built;
  }
  ASSERT_TRUE(folded) << "the delta never outgrew its base";
  EXPECT_EQ(previous->own_entry_count(), model.size()) << "a base holds no erased markers";
}

// The entries of `snap`'s own table that hide one of its base's, counted as KeepsDelta does.
uint64_t HiddenBaseEntries(const SnapshotView& snap) {
  return snap.own_entry_count() + snap.base()->own_entry_count() - snap.entry_count();
}

// An import's shape: every build adds new keys (and overwrites a few). Its deltas grow past the
// eighth of the base that bounds hidden entries (no base entry is hidden by a new key), up to
// half the base's bytes, and then fold into a base 1.5x as big; every generation reads exactly
// as a map of the same changes, mapped afresh and verified too.
TEST_F(SnapshotBuildTest, AGrowingDictKeepsItsDeltaUpToHalfTheBaseAndReadsLikeAMap) {
  Model model;
  Delta first;
  for (int i = 0; i < 1000; ++i) first["k" + std::to_string(i)] = std::string(20, 'a');
  auto built = SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(first));
  ASSERT_OK(built);
  for (const auto& [key, value] : first) model[key] = *value;
  std::shared_ptr<const SnapshotView> previous = *built;
  int next_key = 1000;
  bool saw_delta_past_an_eighth = false;
  int folds = 0;
  for (uint64_t generation = 2; generation <= 40; ++generation) {
    Delta delta;
    for (int i = 0; i < 60; ++i) delta["k" + std::to_string(next_key++)] = std::string(20, 'b');
    delta["k" + std::to_string(generation)] = std::string(20, 'c');  // an overwrite
    for (const auto& [key, value] : delta) model[key] = *value;
    built =
        SnapshotView::Build(dict_, generation, generation, 0, 0600, previous.get(), DeltaOf(delta));
    ASSERT_OK(built);
    const SnapshotView& snap = **built;
    if (snap.base_generation() != 0) {
      const SnapshotView& base = *snap.base();
      EXPECT_LE(snap.live_bytes() * SnapshotView::kGrowingDeltaFraction, base.live_bytes());
      EXPECT_LE(HiddenBaseEntries(snap) * SnapshotView::kDeltaFraction, base.own_entry_count());
      saw_delta_past_an_eighth |=
          snap.live_bytes() * SnapshotView::kDeltaFraction > base.live_bytes();
    } else {
      ++folds;
      EXPECT_EQ(snap.own_entry_count(), model.size()) << "a base holds the whole dict";
    }
    ExpectHolds(snap, model, "k-none");
    auto reopened = SnapshotView::Open(dict_, generation);
    ASSERT_OK(reopened);
    EXPECT_OK((*reopened)->VerifyContents(dict_));
    ExpectHolds(**reopened, model, "k-none");
    if (previous->generation() != snap.base_generation()) {
      UnlinkSegmentQuietly(SnapshotSegment(dict_, previous->generation()));
    }
    previous = *built;
  }
  EXPECT_TRUE(saw_delta_past_an_eighth) << "new keys were held to the old 1/8 bound";
  // 1000 keys plus 61 per build: deltas up to half the base fold about every 9, 13, ... builds.
  EXPECT_GE(folds, 2);
  EXPECT_LE(folds, 5) << "folds as often as under the 1/8 bound";
}

// Overwrites and erasures of the base's keys: the delta hides base entries, and is folded before
// they pass an eighth of the base (an erasure's marker counts twice), long before half its bytes.
TEST_F(SnapshotBuildTest, ADeltaHidingBaseEntriesIsFoldedAtAnEighthOfTheBase) {
  Model model;
  Delta first;
  for (int i = 0; i < 800; ++i) first["k" + std::to_string(i)] = std::string(20, 'a');
  auto built = SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(first));
  ASSERT_OK(built);
  for (const auto& [key, value] : first) model[key] = *value;
  std::shared_ptr<const SnapshotView> previous = *built;
  uint64_t hidden_before_fold = 0;
  bool folded = false;
  for (uint64_t generation = 2; generation < 40 && !folded; ++generation) {
    const Delta delta = ChurnOf800Keys(generation, 4);
    ApplyTo(delta, &model);
    built =
        SnapshotView::Build(dict_, generation, generation, 0, 0600, previous.get(), DeltaOf(delta));
    ASSERT_OK(built);
    const SnapshotView& snap = **built;
    ExpectHolds(snap, model, "k-none");
    if (snap.base_generation() == 0) {
      folded = true;
    } else {
      hidden_before_fold = HiddenBaseEntries(snap);
      EXPECT_LE(hidden_before_fold * SnapshotView::kDeltaFraction, snap.base()->own_entry_count());
    }
    previous = *built;
  }
  ASSERT_TRUE(folded);
  // 20 changes per build, 5 of them erasures: 25 hidden per build, 100 the most a delta over 800
  // keys may hide.
  EXPECT_GE(hidden_before_fold, 75u);
  EXPECT_LE(hidden_before_fold, 100u);
}

// Opening a delta maps its base; a base that is gone while the delta keeps its name is data
// loss, not the NOT_FOUND that makes a reader retry; a retired delta is NOT_FOUND.
TEST_F(SnapshotBuildTest, ADeltaWhoseBaseIsMissingIsDataLossUnlessTheDeltaWasRetired) {
  Delta first;
  for (int i = 0; i < 200; ++i) first["k" + std::to_string(i)] = "v";
  ASSERT_OK(SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(first)));
  auto base = SnapshotView::Open(dict_, 1);
  ASSERT_OK(base);
  const Delta second = {{"k1", std::nullopt}};
  auto delta = SnapshotView::Build(dict_, 2, 2, 0, 0600, base->get(), DeltaOf(second));
  ASSERT_OK(delta);
  ASSERT_EQ((*delta)->base_generation(), 1u);
  ASSERT_OK(RenameSegment(SnapshotSegment(dict_, 1), SnapshotSegment(dict_, 1) + "x"));
  auto lost = SnapshotView::Open(dict_, 2);
  EXPECT_EQ(lost.status().code(), StatusCode::kDataLoss) << lost.status().ToString();
  ASSERT_OK(RenameSegment(SnapshotSegment(dict_, 2), RetiredSegment(dict_, 2)));
  auto retired = SnapshotView::Open(dict_, 2);
  EXPECT_EQ(retired.status().code(), StatusCode::kNotFound) << retired.status().ToString();
  UnlinkSegmentQuietly(SnapshotSegment(dict_, 1) + "x");
}

// A build takes over a retired segment through the mapping it already has: the mapping follows
// the resize and the rename, and writes through it are the segment's contents. It must refuse
// while another mapper holds the segment's shared flock, and when the name no longer leads to the
// held file.
TEST_F(SnapshotBuildTest, RecycleHeldSegmentKeepsTheMappingOnlyWhenNobodyElseMapsIt) {
  auto hold = [&](const std::string& segment, size_t bytes) {
    auto created = CreateSegment(segment, bytes, 0600, true);
    EXPECT_OK(created);
    flock(created->first.get(), LOCK_SH);
    std::memset(created->second.data(), 'x', bytes);
    return std::move(*created);
  };
  const std::string retired = RetiredSegment(dict_, 1);
  const std::string fresh = SnapshotSegment(dict_, 2);
  for (size_t new_bytes : {size_t{3} << 16, size_t{1} << 16}) {  // grown, then shrunk
    auto taken = RecycleHeldSegment(hold(retired, size_t{2} << 16), retired, fresh, new_bytes);
    ASSERT_OK(taken);
    ASSERT_EQ(taken->second.size(), new_bytes);
    std::memset(taken->second.data(), 'y', new_bytes);
    auto by_name = OpenSegment(fresh, O_RDONLY, 0);
    ASSERT_OK(by_name) << "the segment was not renamed";
    EXPECT_EQ(*SegmentSize(by_name->get()), new_bytes);
    auto map = MapSegment(by_name->get(), new_bytes, false);
    ASSERT_OK(map);
    EXPECT_EQ(map->data()[0], 'y');
    EXPECT_EQ(map->data()[new_bytes - 1], 'y');
    EXPECT_FALSE(OpenSegment(retired, O_RDONLY, 0).ok()) << "the retired name is still there";
    UnlinkSegmentQuietly(fresh);
  }

  // Another mapper's shared flock (its own open file description): refused, nothing renamed.
  auto held = hold(retired, 1 << 16);
  auto other = OpenSegment(retired, O_RDONLY, 0);
  ASSERT_OK(other);
  ASSERT_EQ(flock(other->get(), LOCK_SH | LOCK_NB), 0);
  auto refused = RecycleHeldSegment(std::move(held), retired, fresh, 1 << 16);
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_OK(OpenSegment(retired, O_RDONLY, 0));
  EXPECT_FALSE(OpenSegment(fresh, O_RDONLY, 0).ok());
  other = Fd();
  UnlinkSegmentQuietly(retired);

  // The name now leads to another file (cleanup unlinked ours, a new segment took the name).
  held = hold(retired, 1 << 16);
  UnlinkSegmentQuietly(retired);
  auto replacement = CreateSegment(retired, 1 << 16, 0600, true);
  ASSERT_OK(replacement);
  auto gone = RecycleHeldSegment(std::move(held), retired, fresh, 1 << 16);
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
  EXPECT_OK(OpenSegment(retired, O_RDONLY, 0)) << "the replacement lost its name";
  EXPECT_FALSE(OpenSegment(fresh, O_RDONLY, 0).ok());
}

// Only a view this process built, referenced nowhere else, gives up its segment.
TEST_F(SnapshotBuildTest, OnlyAnUnsharedViewBuiltHereReleasesItsSegment) {
  Delta delta{{"a", "1"}, {"b", "2"}};
  auto built = SnapshotView::Build(dict_, 1, 1, 0, 0600, nullptr, DeltaOf(delta));
  ASSERT_OK(built);
  std::shared_ptr<const SnapshotView> view = *built;
  built->reset();
  std::shared_ptr<const SnapshotView> shared = view;
  EXPECT_FALSE(SnapshotView::ReleaseSegment(&view).has_value()) << "released while shared";
  EXPECT_EQ(view, nullptr);
  auto opened = SnapshotView::Open(dict_, 1);
  ASSERT_OK(opened);
  std::shared_ptr<const SnapshotView> mapped = *opened;
  opened->reset();
  EXPECT_FALSE(SnapshotView::ReleaseSegment(&mapped).has_value()) << "a read-only mapping";
  auto released = SnapshotView::ReleaseSegment(&shared);
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->second.size(), *SegmentSize(released->first.get()));
}

}  // namespace
}  // namespace shmdict::internal
