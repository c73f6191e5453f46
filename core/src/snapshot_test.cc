#include "snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <random>
#include <string>

#include "hash.h"

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
  }};
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

class SnapshotBuildTest : public ::testing::Test {
 protected:
  ~SnapshotBuildTest() override {
    for (const std::string& segment : ListSegments(dict_ + "@")) UnlinkSegmentQuietly(segment);
  }
  const std::string dict_ = "snapshot_test_" + std::to_string(getpid());
};

// Chains of snapshots, each built from the previous one, against a plain map: overwrites of the
// same and of other sizes, erasures and re-insertions (tombstones reused), growth past the load
// factor and churn past half the region, so both the patched copy and the rewrite run, and a
// forced reload's checksum holds for every one.
TEST_F(SnapshotBuildTest, ChainsOfPatchedAndRewrittenSnapshotsMatchAMap) {
  std::mt19937_64 rng(7);
  Model model;
  std::shared_ptr<const SnapshotView> base;
  bool saw_patch = false;
  bool saw_rewrite = false;
  bool saw_tombstones = false;
  for (uint64_t generation = 1; generation <= 60; ++generation) {
    Delta delta;
    const uint64_t keys = generation < 20 ? 400 * generation : 3000;  // grow, then churn
    for (int i = 0; i < 700; ++i) {
      const std::string key = "key:" + std::to_string(rng() % keys);
      if (rng() % 4 == 0) {
        delta[key] = std::nullopt;
      } else {
        delta[key] = std::string(rng() % 3 == 0 ? 8 + rng() % 40 : 12, 'a' + rng() % 26);
      }
    }
    for (const auto& [key, value] : delta) {
      if (value) {
        model[key] = *value;
      } else {
        model.erase(key);
      }
    }
    auto built =
        SnapshotView::Build(dict_, generation, generation, 0, 0600, base.get(), DeltaOf(delta));
    ASSERT_TRUE(built.ok()) << built.status().ToString();
    const auto& snap = *built;
    if (base) {
      const bool patched = snap->bucket_count() == base->bucket_count() &&
                           snap->entries_bytes() >= base->entries_bytes();
      (patched ? saw_patch : saw_rewrite) = true;
    }
    saw_tombstones |= snap->tombstone_count() > 0;
    ExpectHolds(*snap, model, "never-a-key");
    auto reopened = SnapshotView::Open(dict_, generation);
    ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
    EXPECT_TRUE((*reopened)->VerifyContents(dict_).ok());
    ExpectHolds(**reopened, model, "never-a-key");
    if (base) UnlinkSegmentQuietly(SnapshotSegment(dict_, generation - 1));
    base = snap;
  }
  EXPECT_TRUE(saw_patch);
  EXPECT_TRUE(saw_rewrite);
  EXPECT_TRUE(saw_tombstones);
}

}  // namespace
}  // namespace shmdict::internal
