// The compactor's publication and cleanup of layered snapshots, observed through a real dict: the
// published chain stays whole (its base is never retired) and a new base retires the old chain.
#include "compactor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "blob_segment.h"
#include "dict_test_base.h"
#include "segment.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "snapshot.h"

namespace shmdict::internal {
namespace {

using namespace std::chrono_literals;

class CompactorTest : public testing::DictTestBase {
 protected:
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
};

// Dumps of a big dict with few changes each publish deltas over one base: that base keeps its
// name through every later publication (a reader can always open the chain), while the deltas
// it replaced are retired. Once the deltas outgrow their share, a new base is published and the
// old base is retired with its deltas.
TEST_F(CompactorTest, ThePublishedChainsBaseIsNeverRetired) {
  auto opened = Dict::Open(Opts());
  ASSERT_OK(opened);
  Dict& dict = *opened;
  std::map<std::string, std::string> model;
  for (int i = 0; i < 4000; ++i) {
    model["key" + std::to_string(i)] = std::string(40, 'a');
    ASSERT_OK(dict.Set("key" + std::to_string(i), Value::Str(std::string(40, 'a'))));
  }
  ASSERT_OK(dict.Dump());
  uint64_t base = dict.GetStatus().snapshot_generation.value();
  uint64_t previous = base;
  int deltas = 0;
  int new_bases = 0;
  for (int round = 1; round <= 60; ++round) {
    for (int i = 0; i < 40; ++i) {
      const std::string key = "key" + std::to_string((round * 97 + i * 13) % 5000);
      if (i % 4 == 0) {
        model.erase(key);
        ASSERT_OK(dict.Erase(key));
      } else {
        model[key] = std::string(40, 'a' + round % 26);
        ASSERT_OK(dict.Set(key, Value::Str(model[key])));
      }
    }
    ASSERT_OK(dict.Dump());
    const uint64_t published = dict.GetStatus().snapshot_generation.value();
    auto snap = SnapshotView::Open(name_, published);
    ASSERT_OK(snap);
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
    ASSERT_OK(attacher);
    ASSERT_OK(attacher->Refresh(/*force=*/true));
    EXPECT_EQ(*attacher->Size(), model.size());
  }
  EXPECT_GT(deltas, 10) << "small changes to a big dict should be published as deltas";
  EXPECT_GT(new_bases, 0) << "the deltas never outgrew their base";
}

// A handle keeps the snapshot it loaded while another process publishes a new base. Its Dump must
// still publish (a delta over its old base would be refused as an orphan) and reclaim what the
// publication covers: here a large value whose publisher was killed before sweeping it, found
// by the crash test as a "@b" segment left after Erase and Dump.
TEST_F(CompactorTest, ADumpFromAHandleOnAnOlderChainPublishesAndReclaimsWhatItCovers) {
  auto first = Dict::Open(Opts());
  ASSERT_OK(first);
  ASSERT_OK(first->Set("k", Value::Int(0)));
  ASSERT_OK(first->Set("big", Value::Bytes(std::string(100000, 'a'))));
  ASSERT_OK(first->Dump());
  auto second = Dict::Open(Opts());
  ASSERT_OK(second);
  ASSERT_TRUE((*second->Get("k")).has_value());  // its view is on the first base
  // Rewriting the whole value folds the next snapshot into a new base.
  ASSERT_OK(first->Set("big", Value::Bytes(std::string(100000, 'b'))));
  auto new_base = first->Dump();
  ASSERT_OK(new_base);
  auto snap = SnapshotView::Open(name_, *new_base);
  ASSERT_OK(snap);
  ASSERT_EQ((*snap)->base_generation(), 0u) << "the setup needs a new base";
  snap->reset();
  // What a publisher killed between publishing the new base and its cleanup leaves behind.
  ASSERT_OK(WriteBlobSegment(name_, first->revision(), std::string(1 << 16, 'x'), 0600));

  // The second handle's changes since its snapshot are small: built over its view, they would
  // make a delta over the first base, which is no longer the published chain's.
  ASSERT_OK(second->Erase("big"));
  auto dumped = second->Dump();
  ASSERT_OK(dumped);
  EXPECT_GT(*dumped, *new_base);
  EXPECT_EQ(second->GetStatus().snapshot_generation, *dumped) << "the dump was not published";
  EXPECT_TRUE(ListNumberedSegments(name_ + "@b").empty()) << "a covered large value was kept";
  auto attacher = Dict::Open(Opts());
  ASSERT_OK(attacher);
  EXPECT_EQ(*attacher->Size(), 1u);
  EXPECT_FALSE((*attacher->Get("big")).has_value());
}

// A handle's builds write into the retired snapshots it still maps (BuiltSnapshots), never into
// one another mapper holds: a reader that keeps an old snapshot mapped across many rebuilds
// still reads exactly what was published (its checksum holds), and every build's contents are
// right when a second handle attaches to them.
TEST_F(CompactorTest, BuildsReuseTheirOwnRetiredSnapshotsButNeverOneStillMapped) {
  auto writer = Dict::Open(Opts());
  ASSERT_OK(writer);
  std::map<std::string, std::string> model;
  auto write_round = [&](int round) {
    // Every key rewritten with a longer value: each dump folds into a new base (a full copy).
    for (int i = 0; i < 2000; ++i) {
      const std::string key = "key:" + std::to_string(i);
      const std::string value(8 + round % 5, static_cast<char>('a' + round % 26));
      ASSERT_OK(writer->Set(key, Value::Bytes(value)));
      model[key] = value;
    }
  };
  write_round(0);
  auto first = writer->Dump();
  ASSERT_OK(first);
  auto held_by_reader = SnapshotView::Open(name_, *first);  // a reader in another handle
  ASSERT_OK(held_by_reader);
  std::map<uint64_t, int> inodes;  // snapshot segment inode -> builds that used it
  for (int round = 1; round <= 12; ++round) {
    write_round(round);
    auto generation = writer->Dump();
    ASSERT_OK(generation);
    auto fd = OpenSegment(SnapshotSegment(name_, *generation), O_RDONLY, 0);
    ASSERT_OK(fd);
    struct stat st {};
    ASSERT_EQ(fstat(fd->get(), &st), 0);
    ++inodes[st.st_ino];
    auto attacher = Dict::Open(Opts());
    ASSERT_OK(attacher);
    ASSERT_EQ(*attacher->Size(), model.size());
    for (const auto& [key, value] : model) {
      auto got = attacher->Get(key);
      ASSERT_THAT(got, testing::IsOkAndHolds(::testing::Ne(std::nullopt))) << key;
      ASSERT_EQ((*got)->data(), value) << key << " in round " << round;
    }
  }
  EXPECT_OK((*held_by_reader)->VerifyContents(name_))
      << "a build wrote into a snapshot another mapper held";
  EXPECT_LT(inodes.size(), 12u) << "no build reused a retired snapshot's segment";
}

// An import through the public API, with background builds from a small log: the builder keeps
// deltas of new keys past an eighth of their base (SnapshotView::KeepsDelta), and a second
// handle reads the writer's dict at every revision it sees — the keys written so far with their
// values, none of the keys still to come — as does a fresh attacher at the end.
TEST_F(CompactorTest, AnImportWithBackgroundBuildsReadsLikeAMapAtEveryRevision) {
  Options options = Opts();
  options.buffer_size = 64 * 1024;
  options.background_compaction = true;
  auto writer = Dict::Open(options);
  ASSERT_OK(writer);
  Options attach = options;
  attach.create_mode = CreateMode::kMustAttach;
  auto reader = Dict::Open(attach);
  ASSERT_OK(reader);
  auto key = [](int i) { return "key:" + std::to_string(i); };
  auto value = [](int i) { return "value-" + std::to_string(i * 7919) + std::string(16, 'v'); };
  constexpr int kKeys = 20000;
  constexpr int kBatch = 100;
  bool saw_delta_past_an_eighth = false;
  for (int first = 0; first < kKeys; first += kBatch) {
    std::vector<std::pair<std::string, Value>> items;
    for (int i = first; i < first + kBatch; ++i) items.emplace_back(key(i), Value::Str(value(i)));
    ASSERT_OK(writer->Update(items));
    const int written = first + kBatch;
    for (int i : {first, written - 1, first / 2, first / 3}) {
      auto got = reader->Get(key(i));
      ASSERT_OK(got);
      ASSERT_TRUE(got->has_value()) << key(i) << " after " << written << " keys";
      ASSERT_EQ((*got)->data(), value(i)) << key(i);
    }
    auto ahead = reader->Get(key(written));
    ASSERT_OK(ahead);
    ASSERT_FALSE(ahead->has_value()) << key(written) << " before it was written";
    ASSERT_THAT(reader->Size(), testing::IsOkAndHolds(static_cast<uint64_t>(written)));
    // The published chain, when it can still be mapped (a newer publication may retire it).
    const auto generation = writer->GetStatus().snapshot_generation;
    if (!generation.has_value() || *generation == 0) continue;
    auto snap = SnapshotView::Open(name_, *generation);
    if (!snap.ok()) continue;
    if (const SnapshotView* base = (*snap)->base(); base != nullptr) {
      EXPECT_LE((*snap)->live_bytes() * SnapshotView::kGrowingDeltaFraction, base->live_bytes());
      saw_delta_past_an_eighth |=
          (*snap)->live_bytes() * SnapshotView::kDeltaFraction > base->live_bytes();
    }
  }
  EXPECT_TRUE(saw_delta_past_an_eighth) << "no delta of new keys outgrew the old 1/8 bound";
  auto attacher = Dict::Open(attach);
  ASSERT_OK(attacher);
  ASSERT_THAT(attacher->Size(), testing::IsOkAndHolds(static_cast<uint64_t>(kKeys)));
  for (int i = 0; i < kKeys; ++i) {
    auto got = attacher->Get(key(i));
    ASSERT_OK(got);
    ASSERT_TRUE(got->has_value()) << key(i);
    ASSERT_EQ((*got)->data(), value(i)) << key(i);
  }
}

}  // namespace
}  // namespace shmdict::internal

namespace shmdict::internal {
namespace {

// A handle that outlives its dict's unlink (a bridge's pooled handle) must not leave a snapshot
// behind, nor touch the segments of a dict created again under the same name: its builder checks
// that the name still means its dict. Before the check, the quiet-period build published
// NAME@s1 after the unlink's sweep, and it stayed in /dev/shm forever.
TEST_F(CompactorTest, AHandleOutlivingItsDictsUnlinkLeavesNothingBehind) {
  Options creator_options = Opts();
  creator_options.buffer_size = 64 * 1024;
  creator_options.background_compaction = true;
  auto creator = Dict::Open(creator_options);
  ASSERT_OK(creator);
  Options attach = creator_options;
  attach.create_mode = CreateMode::kMustAttach;
  auto survivor = Dict::Open(attach);
  ASSERT_OK(survivor);
  // Enough unpublished log for a quiet-period snapshot (1/16 of the log), no log-full build.
  for (int i = 0; i < 60; ++i) {
    ASSERT_OK(survivor->Set("k" + std::to_string(i), Value::Str(std::string(100, 'v'))));
  }
  ASSERT_OK(creator->Close());  // unlinks (auto_unlink) while survivor's builder waits
  ASSERT_FALSE(LocalCatalog().Inspect(name_).ok());
  // A dict created again under the name: the old handle must leave its segments alone.
  Options again = Opts();
  auto replacement = Dict::Open(again);
  ASSERT_OK(replacement);
  ASSERT_OK(replacement->Set("new", Value::Int(1)));
  ASSERT_OK(replacement->Dump());
  const uint64_t generation = replacement->GetStatus().snapshot_generation.value();
  ASSERT_TRUE(SnapshotNamed(generation));
  // The survivor keeps writing to its (unlinked) dict and goes quiet: its builder wakes.
  for (int i = 0; i < 60; ++i) {
    ASSERT_OK(survivor->Set("more" + std::to_string(i), Value::Str(std::string(100, 'v'))));
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_OK(survivor->Close());
  EXPECT_TRUE(SnapshotNamed(generation)) << "the old handle removed the new dict's snapshot";
  auto reopened = Dict::Open(attach);
  ASSERT_OK(reopened);
  EXPECT_EQ(*reopened->Get("new"), std::optional<Value>(Value::Int(1)));
  ASSERT_OK(reopened->Close());
  ASSERT_OK(replacement->Close());  // unlinks the replacement
  EXPECT_TRUE(ListSegments(name_).empty()) << "the unlinked dict's handle left segments behind";
}

}  // namespace
}  // namespace shmdict::internal
