// The compactor's publication and cleanup of layered snapshots, observed through a real dict: the
// published chain stays whole (its base is never retired) and a new base retires the old chain.
#include "compactor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>

#include "segment.h"
#include "shmdict/dict.h"
#include "snapshot.h"

namespace shmdict::internal {
namespace {

using namespace std::chrono_literals;

class CompactorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    name_ = std::string("ut-") + info->name() + "-" + std::to_string(getpid());
  }
  void TearDown() override {
    Dict::UnlinkByName(name_).IgnoreError();
    EXPECT_TRUE(ListSegments(name_).empty()) << "segments left behind for " << name_;
  }
  Options Opts() const {
    Options o;
    o.name = name_;
    o.buffer_size = 1 << 20;
    o.lock_timeout = 5000ms;
    o.background_compaction = false;  // every snapshot comes from an explicit Dump()
    return o;
  }
  bool SnapshotNamed(uint64_t generation) const {
    return OpenSegment(SnapshotSegment(name_, generation), O_RDONLY, 0).ok();
  }
  std::string name_;
};

// Dumps of a big dict with few changes each publish deltas over one base: that base keeps its
// name through every later publication (a reader can always open the chain), while the deltas
// it replaced are retired. Once the deltas outgrow their share, a new base is published and the
// old base is retired with its deltas.
TEST_F(CompactorTest, ThePublishedChainsBaseIsNeverRetired) {
  auto opened = Dict::Open(Opts());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Dict& dict = *opened;
  std::map<std::string, std::string> model;
  for (int i = 0; i < 4000; ++i) {
    model["key" + std::to_string(i)] = std::string(40, 'a');
    ASSERT_TRUE(dict.Set("key" + std::to_string(i), Value::Str(std::string(40, 'a'))).ok());
  }
  ASSERT_TRUE(dict.Dump().ok());
  uint64_t base = dict.GetStatus().snapshot_generation;
  uint64_t previous = base;
  int deltas = 0;
  int new_bases = 0;
  for (int round = 1; round <= 60; ++round) {
    for (int i = 0; i < 40; ++i) {
      const std::string key = "key" + std::to_string((round * 97 + i * 13) % 5000);
      if (i % 4 == 0) {
        model.erase(key);
        ASSERT_TRUE(dict.Erase(key).ok());
      } else {
        model[key] = std::string(40, 'a' + round % 26);
        ASSERT_TRUE(dict.Set(key, Value::Str(model[key])).ok());
      }
    }
    ASSERT_TRUE(dict.Dump().ok());
    const uint64_t published = dict.GetStatus().snapshot_generation;
    auto snap = SnapshotView::Open(name_, published);
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    if ((*snap)->base_generation() != 0) {
      ++deltas;
      EXPECT_EQ((*snap)->base_generation(), base) << "a delta over another base than the chain's";
      EXPECT_TRUE(SnapshotNamed(base)) << "round " << round << ": the published base was retired";
    } else {
      ++new_bases;
      EXPECT_FALSE(SnapshotNamed(base)) << "round " << round << ": the old base outlived its chain";
      base = published;
    }
    if (previous != base) {
      EXPECT_FALSE(SnapshotNamed(previous))
          << "round " << round << ": a replaced delta kept its name";
    }
    previous = published;
    EXPECT_EQ((*snap)->entry_count(), model.size());
    auto attacher = Dict::Open(Opts());
    ASSERT_TRUE(attacher.ok()) << attacher.status().ToString();
    ASSERT_TRUE(attacher->Refresh(/*force=*/true).ok());
    EXPECT_EQ(*attacher->Size(), model.size());
  }
  EXPECT_GT(deltas, 10) << "small changes to a big dict should be published as deltas";
  EXPECT_GT(new_bases, 0) << "the deltas never outgrew their base";
}

}  // namespace
}  // namespace shmdict::internal
