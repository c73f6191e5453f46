// The Store contract (core/api/include/shmdict/store.h), written once and run against every
// implementation: the local Dict and, when the bridge is built, RemoteDict with and without its
// mirror, through a real shmdict-bridge on a Unix socket. Where the transports legitimately
// differ (how soon a handle sees another handle's writes), the Transport parameter says so; every
// other expectation is the same for all.
//
// Each test creates its dict with a local "owner" handle (the bridge never creates one), opens the
// Store under test on it, and uses the owner as the second writer and as the ground truth of the
// dict's revision.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "dict_test_base.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/store.h"
#if SHMDICT_CONTRACT_REMOTE
#include "bridge_process.h"
#include "shmdict/remote_dict.h"
#endif

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::Gt;
using ::testing::Optional;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// An implementation of Store, and what it may do differently from the others.
struct Transport {
  const char* name;
  bool remote;
  bool mirror;  // a remote's local copy fed by Watch
  // A handle reads another handle's write as soon as that write returned (false: only once its
  // WaitForChange returned that revision, as a remote mirror trails the dict).
  bool reads_see_other_writers_at_once;
  // revision() follows other handles' writes (false: a remote without a mirror knows only the
  // revisions it committed or read).
  bool revision_follows_other_writers;
};

const Transport kTransports[] = {
    {"LocalDict", false, false, true, true},
#if SHMDICT_CONTRACT_REMOTE
    {"RemoteDictWithMirror", true, true, false, true},
    {"RemoteDictWithoutMirror", true, false, true, false},
#endif
};

void PrintTo(const Transport& transport, std::ostream* os) { *os << transport.name; }

class StoreContractTest : public DictTestBase, public ::testing::WithParamInterface<Transport> {
 protected:
  void SetUp() override {
    Options options = CreateOptions(name_);
    options.lock_timeout = 5000ms;
    ASSERT_OK_AND_ASSIGN(Dict owner, Dict::Open(options));
    owner_ = std::make_unique<Dict>(std::move(owner));
    ASSERT_OK_AND_ASSIGN(store_, OpenStore());
  }
#if SHMDICT_CONTRACT_REMOTE
  // One bridge for the suite, started by its first remote test (ctest runs each test in a process
  // of its own, where that is one start; a whole-binary run shares it) and stopped at the end.
  static void TearDownTestSuite() { bridge_.reset(); }
  static BridgeProcess& Bridge() {
    if (!bridge_) {
      bridge_ = std::make_unique<BridgeProcess>();
      EXPECT_TRUE(bridge_->Start());
    }
    return *bridge_;
  }
  static inline std::unique_ptr<BridgeProcess> bridge_;
#endif

  void TearDown() override {
    // This test's handles are closed before the fixture unlinks the dict and checks /dev/shm, so
    // that none of them writes a segment of it afterwards.
    store_.reset();
    owner_.reset();
    DictTestBase::TearDown();
  }

  Result<std::unique_ptr<Store>> OpenStore() {
    if (!GetParam().remote) {
      Result<Dict> dict = Dict::Open(AttachOptions(name_));
      if (!dict.ok()) return dict.status();
      return std::unique_ptr<Store>(std::make_unique<Dict>(std::move(*dict)));
    }
#if SHMDICT_CONTRACT_REMOTE
    RemoteOptions options{
        .address = Bridge().address(), .dict = name_, .mirror = GetParam().mirror};
    Result<std::unique_ptr<RemoteDict>> remote = RemoteDict::Open(options);
    if (!remote.ok()) return remote.status();
    return std::unique_ptr<Store>(std::move(*remote));
#else
    return Status(StatusCode::kUnimplemented, "built without the bridge");
#endif
  }

  // The dict's latest committed revision, whatever the transport under test.
  uint64_t DictRevision() {
    Result<DictStatus> status = LocalCatalog().Inspect(name_);
    EXPECT_OK(status);
    return status.ok() ? status->revision : 0;
  }

  // After another handle committed `revision`: waits, where the transport trails, until the
  // store's reads reflect it.
  void CatchUpWith(uint64_t revision) {
    if (GetParam().reads_see_other_writers_at_once) return;
    ASSERT_THAT(store_->WaitForChange(revision - 1, 10s), IsOkAndHolds(Eq(revision)));
  }

  // Every change of a watcher started after revision `after`, up to `until`, checking the
  // stream's order: the first change follows `after`, revisions never go back and never skip one,
  // and a batch's revision is its last change's.
  std::vector<Change> ReadUntil(Watcher& watcher, uint64_t after, uint64_t until) {
    std::vector<Change> changes;
    uint64_t last = after;
    while (last < until) {
      Result<ChangeBatch> batch = watcher.Next(WatchLimits{}, 10s);
      EXPECT_OK(batch);
      if (!batch.ok()) break;
      EXPECT_FALSE(batch->is_snapshot) << "the log holds every change of these tests";
      if (batch->changes.empty()) {
        ADD_FAILURE() << "no change within 10 s after revision " << last;
        break;
      }
      for (const Change& change : batch->changes) {
        EXPECT_TRUE((change.revision == last && !changes.empty()) || change.revision == last + 1)
            << "revision " << change.revision << " after " << last;
        last = change.revision;
        changes.push_back(change);
      }
      EXPECT_EQ(batch->revision, last);
    }
    return changes;
  }

  std::unique_ptr<Dict> owner_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreContractTest, GetReturnsWhatSetStoredAndNothingForAMissingKey) {
  Store& s = *store_;
  EXPECT_EQ(s.name(), name_);
  ASSERT_OK(s.Set("s", Value::Str("hello")));
  ASSERT_OK(s.Set("i", Value::Int(-42)));
  ASSERT_OK(s.Set("f", Value::Double(2.5)));
  ASSERT_OK(s.Set("b", Value::Bool(true)));
  ASSERT_OK(s.Set("raw", Value::Bytes(std::string("\0\xff", 2))));
  EXPECT_THAT(s.Get("s"), IsOkAndHolds(Optional(Value::Str("hello"))));
  EXPECT_THAT(s.Get("i"), IsOkAndHolds(Optional(Value::Int(-42))));
  EXPECT_THAT(s.Get("f"), IsOkAndHolds(Optional(Value::Double(2.5))));
  EXPECT_THAT(s.Get("b"), IsOkAndHolds(Optional(Value::Bool(true))));
  EXPECT_THAT(s.Get("raw"), IsOkAndHolds(Optional(Value::Bytes(std::string("\0\xff", 2)))));
  EXPECT_THAT(s.Get("missing"), IsOkAndHolds(Eq(std::nullopt)));

  Value out = Value::Str("left alone");
  EXPECT_THAT(s.Get("missing", &out), IsOkAndHolds(false));
  EXPECT_EQ(out, Value::Str("left alone")) << "a miss leaves *out unchanged";
  EXPECT_THAT(s.Get("i", &out), IsOkAndHolds(true));
  EXPECT_EQ(out, Value::Int(-42));

  EXPECT_THAT(s.Contains("s"), IsOkAndHolds(true));
  EXPECT_THAT(s.Contains("missing"), IsOkAndHolds(false));
  ASSERT_OK(s.Set("s", Value::Str("overwritten")));
  EXPECT_THAT(s.Get("s"), IsOkAndHolds(Optional(Value::Str("overwritten"))));
}

TEST_P(StoreContractTest, SizeItemsAndKeysListEveryEntry) {
  Store& s = *store_;
  EXPECT_THAT(s.Size(), IsOkAndHolds(0u));
  EXPECT_THAT(s.Items(), IsOkAndHolds(::testing::IsEmpty()));
  EXPECT_THAT(s.Keys(), IsOkAndHolds(::testing::IsEmpty()));
  ASSERT_OK(s.Set("a", Value::Int(1)));
  ASSERT_OK(s.Set("b", Value::Str("two")));
  ASSERT_OK(s.Set("c", Value::Null()));
  EXPECT_THAT(s.Size(), IsOkAndHolds(3u));
  EXPECT_THAT(s.Items(), IsOkAndHolds(UnorderedElementsAre(Pair("a", Value::Int(1)),
                                                           Pair("b", Value::Str("two")),
                                                           Pair("c", Value::Null()))));
  EXPECT_THAT(s.Keys(), IsOkAndHolds(UnorderedElementsAre("a", "b", "c")));
}

TEST_P(StoreContractTest, UpdateSetsEveryItemAsOneRevision) {
  Store& s = *store_;
  ASSERT_OK(s.Set("a", Value::Int(0)));
  const uint64_t before = DictRevision();
  ASSERT_OK_AND_ASSIGN(
      const uint64_t revision,
      s.Update({{"a", Value::Int(1)}, {"b", Value::Int(2)}, {"c", Value::Int(3)}}));
  EXPECT_EQ(revision, before + 1) << "a batch is one revision";
  EXPECT_EQ(DictRevision(), revision);
  EXPECT_EQ(s.last_commit_revision(), revision);
  EXPECT_THAT(s.Items(),
              IsOkAndHolds(UnorderedElementsAre(Pair("a", Value::Int(1)), Pair("b", Value::Int(2)),
                                                Pair("c", Value::Int(3)))));
}

TEST_P(StoreContractTest, ApplyRunsSetsErasesAndClearsInOrderAsOneRevision) {
  Store& s = *store_;
  ASSERT_OK(s.Update({{"gone", Value::Int(1)}, {"kept", Value::Int(2)}}));
  const uint64_t before = DictRevision();
  ASSERT_OK_AND_ASSIGN(
      const uint64_t revision,
      s.Apply({Change{.op = ChangeOp::kErase, .key = "gone"},
               Change{.op = ChangeOp::kSet, .key = "new", .value = Value::Bool(true)},
               Change{.op = ChangeOp::kErase, .key = "never-there"}}));
  EXPECT_EQ(revision, before + 1);
  EXPECT_THAT(s.Items(), IsOkAndHolds(UnorderedElementsAre(Pair("kept", Value::Int(2)),
                                                           Pair("new", Value::Bool(true)))));
  // In order: what a clear removes, a later set in the same batch brings back.
  ASSERT_OK_AND_ASSIGN(
      const uint64_t cleared,
      s.Apply({Change{.op = ChangeOp::kClear},
               Change{.op = ChangeOp::kSet, .key = "after", .value = Value::Int(9)}}));
  EXPECT_EQ(cleared, revision + 1);
  EXPECT_THAT(s.Items(), IsOkAndHolds(ElementsAre(Pair("after", Value::Int(9)))));
}

TEST_P(StoreContractTest, EraseSaysWhetherTheKeyExisted) {
  Store& s = *store_;
  ASSERT_OK(s.Set("k", Value::Int(1)));
  EXPECT_THAT(s.Erase("k"), IsOkAndHolds(true));
  EXPECT_THAT(s.Contains("k"), IsOkAndHolds(false));
  EXPECT_THAT(s.Erase("k"), IsOkAndHolds(false));
}

TEST_P(StoreContractTest, PopAndPopItemRemoveAndReturnAnEntry) {
  Store& s = *store_;
  ASSERT_OK(s.Update({{"a", Value::Int(1)}, {"b", Value::Int(2)}}));
  EXPECT_THAT(s.Pop("b"), IsOkAndHolds(Optional(Value::Int(2))));
  EXPECT_THAT(s.Pop("b"), IsOkAndHolds(Eq(std::nullopt)));
  EXPECT_THAT(s.Erase("b"), IsOkAndHolds(false));
  EXPECT_THAT(s.PopItem(), IsOkAndHolds(Optional(Pair("a", Value::Int(1)))));
  EXPECT_THAT(s.Size(), IsOkAndHolds(0u));
  EXPECT_THAT(s.PopItem(), IsOkAndHolds(Eq(std::nullopt)));
}

TEST_P(StoreContractTest, SetDefaultStoresOnlyWhenTheKeyIsMissing) {
  Store& s = *store_;
  ASSERT_OK(s.Set("a", Value::Int(1)));
  EXPECT_THAT(s.SetDefault("a", Value::Int(9)), IsOkAndHolds(Value::Int(1)));
  EXPECT_THAT(s.SetDefault("c", Value::Int(3)), IsOkAndHolds(Value::Int(3)));
  EXPECT_THAT(s.Get("a"), IsOkAndHolds(Optional(Value::Int(1))));
  EXPECT_THAT(s.Get("c"), IsOkAndHolds(Optional(Value::Int(3))));
}

TEST_P(StoreContractTest, ClearRemovesEveryEntry) {
  Store& s = *store_;
  ASSERT_OK(s.Update({{"a", Value::Int(1)}, {"b", Value::Int(2)}}));
  ASSERT_OK(s.Clear());
  EXPECT_THAT(s.Size(), IsOkAndHolds(0u));
  EXPECT_THAT(s.Keys(), IsOkAndHolds(::testing::IsEmpty()));
  EXPECT_THAT(s.PopItem(), IsOkAndHolds(Eq(std::nullopt)));
}

TEST_P(StoreContractTest, CompareAndSetSwapsOnlyWhenTheValueMatches) {
  Store& s = *store_;
  EXPECT_THAT(s.CompareAndSet("k", std::nullopt, Value::Str("one")), IsOkAndHolds(true));
  EXPECT_THAT(s.CompareAndSet("k", std::nullopt, Value::Str("two")), IsOkAndHolds(false));
  EXPECT_THAT(s.CompareAndSet("k", Value::Str("zzz"), Value::Str("two")), IsOkAndHolds(false));
  EXPECT_THAT(s.Get("k"), IsOkAndHolds(Optional(Value::Str("one"))));
  EXPECT_THAT(s.CompareAndSet("k", Value::Str("one"), Value::Str("two")), IsOkAndHolds(true));
  EXPECT_THAT(s.Get("k"), IsOkAndHolds(Optional(Value::Str("two"))));
  EXPECT_THAT(s.CompareAndSet("k", Value::Str("two"), std::nullopt), IsOkAndHolds(true));
  EXPECT_THAT(s.Contains("k"), IsOkAndHolds(false));
}

TEST_P(StoreContractTest, IncrementAddsToAnIntAndCountsAMissingKeyAsZero) {
  Store& s = *store_;
  EXPECT_THAT(s.Increment("n", 1), IsOkAndHolds(1));
  EXPECT_THAT(s.Increment("n", 41), IsOkAndHolds(42));
  EXPECT_THAT(s.Increment("n", -50), IsOkAndHolds(-8));
  EXPECT_THAT(s.Get("n"), IsOkAndHolds(Optional(Value::Int(-8))));
}

TEST_P(StoreContractTest, IncrementPastTheInt64RangeIsOutOfRangeAndChangesNothing) {
  Store& s = *store_;
  ASSERT_OK(s.Set("max", Value::Int(INT64_MAX)));
  ASSERT_OK(s.Set("min", Value::Int(INT64_MIN)));
  const uint64_t revision = DictRevision();
  EXPECT_THAT(s.Increment("max", 1),
              StatusIs(StatusCode::kOutOfRange, ::testing::HasSubstr("max")));
  EXPECT_THAT(s.Increment("min", -1), StatusIs(StatusCode::kOutOfRange));
  EXPECT_THAT(s.Get("max"), IsOkAndHolds(Optional(Value::Int(INT64_MAX))));
  EXPECT_EQ(DictRevision(), revision);
}

TEST_P(StoreContractTest, IncrementOfAValueThatIsNotAnIntIsAFailedPrecondition) {
  Store& s = *store_;
  ASSERT_OK(s.Set("s", Value::Str("x")));
  const uint64_t revision = DictRevision();
  EXPECT_THAT(s.Increment("s", 1),
              StatusIs(StatusCode::kFailedPrecondition, ::testing::HasSubstr(name_)));
  EXPECT_THAT(s.Get("s"), IsOkAndHolds(Optional(Value::Str("x"))));
  EXPECT_EQ(DictRevision(), revision);
}

TEST_P(StoreContractTest, EachWriteCommitsTheNextRevision) {
  Store& s = *store_;
  uint64_t expected = DictRevision();
  // Each write, then the revision it must have committed (returned, or last_commit_revision()).
  auto committed = [&](const char* what) {
    ++expected;
    SCOPED_TRACE(what);
    EXPECT_EQ(s.last_commit_revision(), expected);
    EXPECT_EQ(DictRevision(), expected);
    EXPECT_GE(s.revision(), expected) << "reads reflect this handle's own writes";
  };
  EXPECT_THAT(s.Set("a", Value::Int(1)), IsOkAndHolds(expected + 1));
  committed("Set");
  EXPECT_THAT(s.Update({{"b", Value::Int(2)}, {"c", Value::Int(3)}}), IsOkAndHolds(expected + 1));
  committed("Update");
  EXPECT_THAT(s.Apply({Change{.op = ChangeOp::kSet, .key = "d", .value = Value::Int(4)}}),
              IsOkAndHolds(expected + 1));
  committed("Apply");
  EXPECT_THAT(s.Erase("d"), IsOkAndHolds(true));
  committed("Erase");
  EXPECT_THAT(s.Pop("c"), IsOkAndHolds(Optional(Value::Int(3))));
  committed("Pop");
  EXPECT_THAT(s.SetDefault("e", Value::Int(5)), IsOkAndHolds(Value::Int(5)));
  committed("SetDefault");
  EXPECT_THAT(s.CompareAndSet("e", Value::Int(5), Value::Int(6)), IsOkAndHolds(true));
  committed("CompareAndSet");
  EXPECT_THAT(s.Increment("e", 1), IsOkAndHolds(7));
  committed("Increment");
  ASSERT_OK(s.PopItem());
  committed("PopItem");
  EXPECT_THAT(s.Clear(), IsOkAndHolds(expected + 1));
  committed("Clear");
}

TEST_P(StoreContractTest, WritesThatChangeNothingCommitNoRevision) {
  Store& s = *store_;
  ASSERT_OK_AND_ASSIGN(const uint64_t revision, s.Set("k", Value::Int(1)));
  EXPECT_THAT(s.Erase("missing"), IsOkAndHolds(false));
  EXPECT_THAT(s.Pop("missing"), IsOkAndHolds(Eq(std::nullopt)));
  EXPECT_THAT(s.CompareAndSet("k", Value::Int(2), Value::Int(3)), IsOkAndHolds(false));
  EXPECT_THAT(s.CompareAndSet("missing", Value::Int(2), std::nullopt), IsOkAndHolds(false));
  EXPECT_THAT(s.SetDefault("k", Value::Int(9)), IsOkAndHolds(Value::Int(1)));
  EXPECT_THAT(s.Apply({Change{.op = ChangeOp::kErase, .key = "missing"}}), IsOkAndHolds(revision))
      << "an Apply that changed nothing returns the current revision";
  EXPECT_EQ(DictRevision(), revision);
  EXPECT_EQ(s.last_commit_revision(), revision);
}

TEST_P(StoreContractTest, AnotherHandlesWritesAreSeen) {
  Store& s = *store_;
  ASSERT_OK_AND_ASSIGN(const uint64_t revision, owner_->Set("from-owner", Value::Str("hello")));
  CatchUpWith(revision);
  EXPECT_THAT(s.Get("from-owner"), IsOkAndHolds(Optional(Value::Str("hello"))));
  if (GetParam().revision_follows_other_writers) {
    EXPECT_GE(s.revision(), revision);
  }
  ASSERT_OK_AND_ASSIGN(const uint64_t own, s.Set("from-store", Value::Int(1)));
  EXPECT_EQ(own, revision + 1);
  EXPECT_THAT(owner_->Get("from-store"), IsOkAndHolds(Optional(Value::Int(1))));
}

TEST_P(StoreContractTest, WaitForChangeReturnsANewerRevisionOrDeadlineExceeded) {
  Store& s = *store_;
  ASSERT_OK_AND_ASSIGN(const uint64_t first, s.Set("a", Value::Int(1)));
  // Already past: returns at once, whatever the timeout.
  EXPECT_THAT(s.WaitForChange(first - 1, 10s), IsOkAndHolds(Gt(first - 1)));
  ASSERT_OK_AND_ASSIGN(const uint64_t second, owner_->Set("b", Value::Int(2)));
  EXPECT_THAT(s.WaitForChange(first, 10s), IsOkAndHolds(Eq(second)));
  // Nothing is written any more: whatever the timeout, it must pass without a change.
  EXPECT_THAT(s.WaitForChange(second, 50ms), StatusIs(StatusCode::kDeadlineExceeded));
}

TEST_P(StoreContractTest, WatchDeliversEveryChangeInOrderWithoutAGap) {
  Store& s = *store_;
  // From a revision the log holds (after 0, a watcher may start with a snapshot instead).
  ASSERT_OK_AND_ASSIGN(const uint64_t start, s.Set("seed", Value::Int(0)));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Watcher> watcher, s.Watch(start));
  EXPECT_EQ(watcher->revision(), start);
  ASSERT_OK(s.Set("a", Value::Int(1)));
  ASSERT_OK(s.Update({{"b", Value::Int(2)}, {"c", Value::Int(3)}}));
  ASSERT_OK(owner_->Set("a", Value::Int(10)));
  ASSERT_OK(s.Erase("b"));
  ASSERT_OK(s.Erase("missing"));  // commits nothing: no change
  ASSERT_OK_AND_ASSIGN(const uint64_t last, s.Clear());
  EXPECT_EQ(last, start + 5);

  const std::vector<Change> changes = ReadUntil(*watcher, start, last);
  ASSERT_EQ(changes.size(), 6u);
  auto is = [](const Change& c, uint64_t revision, ChangeOp op, const std::string& key) {
    return c.revision == revision && c.op == op && c.key == key;
  };
  EXPECT_TRUE(is(changes[0], start + 1, ChangeOp::kSet, "a"));
  EXPECT_EQ(changes[0].value, Value::Int(1));
  // One atomic batch: one revision, in the order given.
  EXPECT_TRUE(is(changes[1], start + 2, ChangeOp::kSet, "b"));
  EXPECT_TRUE(is(changes[2], start + 2, ChangeOp::kSet, "c"));
  EXPECT_TRUE(is(changes[3], start + 3, ChangeOp::kSet, "a"));
  EXPECT_EQ(changes[3].value, Value::Int(10));
  EXPECT_TRUE(is(changes[4], start + 4, ChangeOp::kErase, "b"));
  EXPECT_TRUE(is(changes[5], start + 5, ChangeOp::kClear, ""));
  EXPECT_EQ(watcher->revision(), last);

  // Nothing more: an empty batch once the timeout passed.
  ASSERT_OK_AND_ASSIGN(ChangeBatch idle, watcher->Next(WatchLimits{}, 50ms));
  EXPECT_FALSE(idle.is_snapshot);
  EXPECT_TRUE(idle.changes.empty());
  EXPECT_EQ(watcher->revision(), last);
  watcher->Cancel();
  EXPECT_THAT(watcher->Next(WatchLimits{}, 10s), StatusIs(StatusCode::kCancelled));
}

TEST_P(StoreContractTest, WatchResumesAfterTheRevisionItIsGiven) {
  Store& s = *store_;
  uint64_t revisions[5] = {};
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(revisions[i], s.Set("k" + std::to_string(i), Value::Int(i)));
  }
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Watcher> watcher, s.Watch(revisions[2]));
  const std::vector<Change> changes = ReadUntil(*watcher, revisions[2], revisions[4]);
  ASSERT_EQ(changes.size(), 2u) << "only what followed revision " << revisions[2];
  EXPECT_EQ(changes[0].revision, revisions[3]);
  EXPECT_EQ(changes[0].key, "k3");
  EXPECT_EQ(changes[1].revision, revisions[4]);
  EXPECT_EQ(changes[1].key, "k4");

  // A watcher resumed from where the first stopped sees the next change, and only it.
  const uint64_t stopped = watcher->revision();
  watcher.reset();
  ASSERT_OK_AND_ASSIGN(const uint64_t next, owner_->Set("later", Value::Int(5)));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Watcher> resumed, s.Watch(stopped));
  const std::vector<Change> after = ReadUntil(*resumed, stopped, next);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].revision, next);
  EXPECT_EQ(after[0].key, "later");
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreContractTest, ::testing::ValuesIn(kTransports),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace shmdict::testing
