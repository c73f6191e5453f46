#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "dict_test_base.h"
#include "pass_counter.h"
#include "segment.h"

namespace shmdict {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using testing::StatusIs;

// Each test gets its own dict name and proves it left nothing behind in /dev/shm (DictTestBase).
class DictTest : public testing::DictTestBase {
 protected:
  Options Opts(uint64_t buffer = 64 * 1024) {
    Options o;
    o.name = name_;
    o.buffer_size = buffer;
    o.lock_timeout = 5000ms;
    return o;
  }
  Dict OpenOrDie(const Options& o) {
    auto d = Dict::Open(o);
    EXPECT_OK(d);
    return std::move(*d);
  }
};

TEST_F(DictTest, SetThenGetReturnsTheTypedValue) {
  Dict d = OpenOrDie(Opts());
  ASSERT_EQ(*d.Set("s", Value::Str("hello")), 1u);
  ASSERT_EQ(*d.Set("i", Value::Int(-42)), 2u);
  ASSERT_OK(d.Set("f", Value::Double(2.5)));
  ASSERT_OK(d.Set("b", Value::Bool(true)));
  EXPECT_EQ((*d.Get("s"))->AsText(), "hello");
  EXPECT_EQ((*d.Get("i"))->AsInt(), -42);
  EXPECT_EQ((*d.Get("f"))->AsDouble(), 2.5);
  EXPECT_EQ((*d.Get("b"))->AsBool(), true);
  EXPECT_FALSE(d.Get("missing")->has_value());
  EXPECT_EQ(*d.Size(), 4u);
  EXPECT_EQ(d.revision(), 4u);
}

TEST_F(DictTest, SecondHandleSeesWritesOfTheFirst) {
  Dict a = OpenOrDie(Opts());
  Options o = Opts();
  o.create_mode = CreateMode::kMustAttach;
  Dict b = OpenOrDie(o);
  EXPECT_FALSE(b.created());
  ASSERT_OK(a.Set("k", Value::Str("v1")));
  EXPECT_EQ((*b.Get("k"))->data(), "v1");
  ASSERT_OK(b.Set("k", Value::Str("v2")));
  EXPECT_EQ((*a.Get("k"))->data(), "v2");
  ASSERT_TRUE(*a.Erase("k"));
  EXPECT_FALSE(*b.Contains("k"));
  EXPECT_EQ(*b.Size(), 0u);
}

TEST_F(DictTest, CreateModesAreEnforced) {
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  auto missing = Dict::Open(attach);
  ASSERT_THAT(missing, StatusIs(StatusCode::kNotFound));
  EXPECT_NE(missing.status().message().find(name_), std::string::npos);

  Dict first = OpenOrDie(Opts());
  Options create = Opts();
  create.create_mode = CreateMode::kMustCreate;
  auto again = Dict::Open(create);
  ASSERT_THAT(again, StatusIs(StatusCode::kAlreadyExists));
}

TEST_F(DictTest, InvalidNamesAreRefused) {
  for (const std::string& bad : std::vector<std::string>{
           "a/b", "..", "x..y", "has space", "a@b", std::string(300, 'x'), "-", "-x", "--help"}) {
    Options o;
    o.name = bad;
    auto d = Dict::Open(o);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(Dict::ValidateName("").code(), StatusCode::kInvalidArgument);
  EXPECT_OK(Dict::ValidateName("orders-2024.v1_x"));
  EXPECT_THAT(Dict::ValidateName("-orders"),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("'-'")));
}

// A name or key is quoted in a message escaped and bounded: a valid name whole, junk cut.
TEST(QuoteForMessageTest, QuotesValidNamesWholeAndCutsAndEscapesTheRest) {
  const std::string longest_name(kMaxNameLength, 'n');
  EXPECT_EQ(QuoteForMessage(longest_name), "'" + longest_name + "'");
  EXPECT_EQ(QuoteForMessage("a\nb\"c\\d\xff"), "'a\\x0ab\\x22c\\x5cd\\xff'");
  const std::string huge = QuoteForMessage(std::string(size_t{1} << 20, 'n'));
  EXPECT_EQ(huge, "'" + std::string(kMaxQuotedBytes, 'n') + "...(1048576 bytes)'");
  // An escape is never split, and escaping cannot grow a quote past the bound.
  std::string escapes;
  for (size_t i = 0; i < kMaxQuotedBytes / 4; ++i) escapes += "\\x0a";
  EXPECT_EQ(QuoteForMessage(std::string(1000, '\n')), "'" + escapes + "...(1000 bytes)'");
}

// A client's megabyte name (the bridge passes names through) gets a message of a few hundred
// bytes from every entry point, never the name echoed whole.
TEST_F(DictTest, AHugeNameGetsAShortMessageEverywhere) {
  const std::string huge(size_t{1} << 20, 'n');
  Options o = Opts();
  o.name = huge;
  std::vector<Status> refused = {Dict::ValidateName(huge),
                                 Dict::ValidateAttachName(huge),
                                 Dict::Open(o).status(),
                                 Dict::UnlinkByName(huge),
                                 Dict::IncarnationOf(huge).status(),
                                 LocalCatalog().Inspect(huge).status()};
  o.create_mode = CreateMode::kMustAttach;
  refused.push_back(Dict::Open(o).status());
  for (const Status& status : refused) {
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString().substr(0, 300);
    EXPECT_LT(status.message().size(), 1024u) << status.message().substr(0, 300);
    EXPECT_THAT(status.message(), HasSubstr("...(1048576 bytes)"));
  }
}

// The engine quotes keys too: a key of the largest size, holding control bytes, in a message.
TEST_F(DictTest, ALargeKeyGetsAShortEscapedMessage) {
  Dict d = OpenOrDie(Opts(1 << 20));
  const std::string key(kMaxKeyBytes, '\n');
  ASSERT_OK(d.Set(key, Value::Str("not a number")));
  Result<int64_t> incremented = d.Increment(key, 1);
  ASSERT_THAT(incremented, StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_LT(incremented.status().message().size(), 1024u);
  EXPECT_THAT(incremented.status().message(), HasSubstr("\\x0a\\x0a"));
  EXPECT_EQ(incremented.status().message().find('\n'), std::string::npos);
}

// A dict's internal segments (snapshots, retired snapshots, large values) are parts of it, never
// a dict: attaching to, or unlinking, one by name would break the dict that owns it (an unlinked
// snapshot makes every later catch-up DATA_LOSS). Nested children stay reachable by name.
TEST_F(DictTest, InternalSegmentNamesAreRefusedAndNestedChildrenStayReachable) {
  Dict d = OpenOrDie(Opts());
  ASSERT_OK(d.Set("a", Value::Int(1)));
  auto generation = d.Dump();
  ASSERT_OK(generation);
  const std::string snapshot = name_ + "@s" + std::to_string(*generation);
  ASSERT_TRUE(std::filesystem::exists(testing::ShmPath(snapshot)));
  for (const std::string& segment :
       {snapshot, name_ + "@r2", name_ + "@b7", name_ + "@x", name_ + "@", name_ + "@c12@s1"}) {
    Options attach = Opts();
    attach.name = segment;
    attach.create_mode = CreateMode::kMustAttach;
    EXPECT_THAT(Dict::Open(attach),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("internal segment")))
        << segment;
    EXPECT_THAT(Dict::UnlinkByName(segment), StatusIs(StatusCode::kInvalidArgument)) << segment;
    EXPECT_THAT(Dict::IncarnationOf(segment), StatusIs(StatusCode::kInvalidArgument)) << segment;
  }
  EXPECT_TRUE(std::filesystem::exists(testing::ShmPath(snapshot)));
  ASSERT_OK(d.Refresh(/*force=*/true));
  EXPECT_EQ((*d.Get("a"))->AsInt(), 1);

  auto child = d.OpenNested("child");
  ASSERT_OK(child);
  ASSERT_OK(child->Set("x", Value::Int(2)));
  Options attach_child = Opts();
  attach_child.name = child->name();
  attach_child.create_mode = CreateMode::kMustAttach;
  auto attached = Dict::Open(attach_child);
  ASSERT_OK(attached);
  EXPECT_EQ((*attached->Get("x"))->AsInt(), 2);
  EXPECT_OK(Dict::IncarnationOf(child->name()));
  // A name holding '@' is never created by Open: only OpenNested makes children.
  Options create_child = Opts();
  create_child.name = name_ + "@c99";
  create_child.create_mode = CreateMode::kAttachOrCreate;
  EXPECT_THAT(Dict::Open(create_child), StatusIs(StatusCode::kInvalidArgument));
}

// A leading '-' reads as a flag to every command line (the CLI's, the bridge's, a shell's).
TEST_F(DictTest, NamesStartingWithADashAreRefusedEverywhere) {
  const std::string dashed = "-" + name_;
  for (CreateMode mode :
       {CreateMode::kMustCreate, CreateMode::kAttachOrCreate, CreateMode::kMustAttach}) {
    Options o = Opts();
    o.name = dashed;
    o.create_mode = mode;
    EXPECT_THAT(Dict::Open(o), StatusIs(StatusCode::kInvalidArgument, HasSubstr("'-'")));
  }
  EXPECT_THAT(Dict::UnlinkByName(dashed), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(Dict::IncarnationOf(dashed), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_FALSE(std::filesystem::exists(testing::ShmPath(dashed)));
}

TEST_F(DictTest, RandomNameIsChosenWhenNoneIsGiven) {
  Options o;
  auto d = Dict::Open(o);
  ASSERT_OK(d);
  TrackDictName(d->name());  // TearDown checks this one
  EXPECT_FALSE(d->name().empty());
  EXPECT_TRUE(std::filesystem::exists("/dev/shm/shmdict." + d->name()));
}

TEST_F(DictTest, CreatorUnlinksOnCloseUnlessAutoUnlinkIsOff) {
  {
    Dict d = OpenOrDie(Opts());
    ASSERT_OK(d.Set("k", Value::Str("v")));
  }
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/shmdict." + name_));
  Options keep = Opts();
  keep.auto_unlink = false;
  { Dict d = OpenOrDie(keep); }
  EXPECT_TRUE(std::filesystem::exists("/dev/shm/shmdict." + name_));
  EXPECT_OK(Dict::UnlinkByName(name_));
  EXPECT_EQ(Dict::UnlinkByName(name_).code(), StatusCode::kNotFound);
}

TEST_F(DictTest, SegmentIsCreatedWithTheRequestedMode) {
  Options o = Opts();
  o.mode = 0640;
  Dict d = OpenOrDie(o);
  auto perms = std::filesystem::status("/dev/shm/shmdict." + name_).permissions();
  EXPECT_EQ(static_cast<unsigned>(perms) & 0777u, 0640u);
  EXPECT_EQ(d.GetStatus().mode, 0640u);
}

TEST_F(DictTest, UserFlagsAreTheCreatorsForEveryAttacherAndNestedChild) {
  Options create = Opts();
  create.user_flags = 0x80000001u;
  Dict creator = OpenOrDie(create);
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  attach.user_flags = 7;  // an attacher's own flags do not count
  Dict attacher = OpenOrDie(attach);
  EXPECT_EQ(creator.user_flags(), 0x80000001u);
  EXPECT_EQ(attacher.user_flags(), 0x80000001u);
  // A child created through the attacher carries the dict's flags, not the attacher's options'.
  auto child = attacher.OpenNested("child");
  ASSERT_OK(child);
  EXPECT_EQ(child->user_flags(), 0x80000001u);
}

TEST_F(DictTest, DictInterfaceOperationsBehaveLikeAMap) {
  Dict d = OpenOrDie(Opts());
  ASSERT_OK(d.Update(std::map<std::string, Value>{{"a", Value::Int(1)}, {"b", Value::Int(2)}}));
  EXPECT_EQ(d.revision(), 1u) << "a batch is one revision";
  EXPECT_EQ(d.SetDefault("a", Value::Int(9))->AsInt(), 1);
  EXPECT_EQ(d.SetDefault("c", Value::Int(3))->AsInt(), 3);
  EXPECT_EQ((*d.Pop("b"))->AsInt(), 2);
  EXPECT_FALSE(d.Pop("b")->has_value());
  EXPECT_FALSE(*d.Erase("b"));
  auto all = d.Export();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all.begin()->first, "a");
  auto item = *d.PopItem();
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(*d.Size(), 1u);
  ASSERT_OK(d.Clear());
  EXPECT_EQ(*d.Size(), 0u);
  EXPECT_FALSE(d.PopItem()->has_value());
  EXPECT_TRUE(d.Keys()->empty());
}

TEST_F(DictTest, ManySnapshotsLaterAnAttacherSeesTheExactState) {
  Options o = Opts(64 * 1024);
  o.background_compaction = false;
  Dict writer = OpenOrDie(o);
  std::map<std::string, int64_t> expected;
  for (int i = 0; i < 20000; ++i) {
    std::string key = "k" + std::to_string(i % 1500);
    if (i % 7 == 3) {
      ASSERT_OK(writer.Erase(key));
      expected.erase(key);
    } else {
      ASSERT_OK(writer.Set(key, Value::Int(i)));
      expected[key] = i;
    }
  }
  EXPECT_GT(writer.GetStatus().snapshots_built, 3u);
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict reader = OpenOrDie(attach);
  auto got = reader.Export();
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [k, v] : expected) EXPECT_EQ(got.at(k).AsInt(), v) << k;
  EXPECT_EQ(reader.revision(), writer.revision());
}

// A reader counts its entries only when asked (LocalView::Size), then keeps counting: both ways
// must agree with the writer's exact count, over a snapshot, through erasures, new keys,
// overwrites and a clear().
TEST_F(DictTest, AReaderThatCountsLateAgreesWithTheWriter) {
  Options o = Opts(64 * 1024);
  o.background_compaction = false;
  Dict writer = OpenOrDie(o);
  for (int i = 0; i < 1000; ++i) ASSERT_OK(writer.Set("k" + std::to_string(i), Value::Int(i)));
  ASSERT_OK(writer.Dump());
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict reader = OpenOrDie(attach);
  Dict late = OpenOrDie(attach);  // asks for its size only at the end
  std::set<std::string> expected;
  for (int i = 0; i < 1000; ++i) expected.insert("k" + std::to_string(i));
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 1500; ++i) {
      const std::string key = "k" + std::to_string((i * 7 + round * 13) % 1600);
      if (i % 5 == 2) {
        ASSERT_OK(writer.Erase(key));
        expected.erase(key);
      } else {
        ASSERT_OK(writer.Set(key, Value::Int(i)));
        expected.insert(key);
      }
      if (i % 250 == 0) {
        ASSERT_EQ(*reader.Size(), expected.size()) << "round " << round << " op " << i;
      }
    }
    EXPECT_EQ(writer.GetStatus().entries, expected.size());
    EXPECT_EQ(*reader.Size(), expected.size());
    if (round == 1) {
      ASSERT_OK(writer.Clear());
      expected.clear();
      ASSERT_OK(writer.Set("after-clear", Value::Int(1)));
      expected.insert("after-clear");
    }
  }
  EXPECT_EQ(*late.Size(), expected.size());
  EXPECT_EQ(late.Keys()->size(), expected.size());
}

TEST_F(DictTest, BackgroundSnapshotsKeepALaggingReaderCorrect) {
  Dict writer = OpenOrDie(Opts(64 * 1024));
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict reader = OpenOrDie(attach);
  for (int i = 0; i < 30000; ++i) {
    ASSERT_OK(writer.Set("k" + std::to_string(i % 700), Value::Int(i)));
  }
  // The reader lagged many laps behind: it must resync from a snapshot, not parse stale bytes.
  ASSERT_OK(reader.Refresh());
  EXPECT_EQ(reader.revision(), 30000u);
  EXPECT_EQ(*reader.Size(), 700u);
  EXPECT_EQ((*reader.Get("k599"))->AsInt(), 29999);
  EXPECT_EQ((*reader.Get("k699"))->AsInt(), 29399);
}

// A creator's auto-unlink at Close unlinks its dict, not a dict created again under its name after
// it was unlinked (that unlinked the new dict's segments under its users).
TEST_F(DictTest, ACreatorClosingAfterItsDictWasReplacedLeavesTheNewDictAlone) {
  Options options = Opts();
  options.auto_unlink = true;
  Dict old_dict = OpenOrDie(options);
  ASSERT_OK(old_dict.Set("old", Value::Int(1)));
  ASSERT_OK(old_dict.Unlink());
  options.auto_unlink = false;
  Dict new_dict = OpenOrDie(options);
  ASSERT_OK(new_dict.Set("new", Value::Int(2)));
  ASSERT_OK(new_dict.Dump());
  const std::vector<std::string> segments = testing::ShmEntriesWithPrefix(name_);
  ASSERT_OK(old_dict.Close());
  EXPECT_EQ(testing::ShmEntriesWithPrefix(name_), segments);
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict fresh = OpenOrDie(attach);
  EXPECT_EQ((*fresh.Get("new"))->AsInt(), 2);
  EXPECT_OK(fresh.Refresh(/*force=*/true));
}

TEST_F(DictTest, ValueFarLargerThanTheLogRoundTrips) {
  Dict a = OpenOrDie(Opts(64 * 1024));
  std::string big(100 * 64 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i += 4093) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_OK(a.Set("big", Value::Bytes(big)));
  ASSERT_OK(a.Set("small", Value::Str("s")));
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict b = OpenOrDie(attach);
  EXPECT_EQ((*b.Get("big"))->data(), big);
  EXPECT_EQ((*b.Get("small"))->data(), "s");
}

// Large changes live in their own segments and barely use the log, but attachers replay them:
// they must still lead to snapshots, or attach time and per-process memory would grow without
// bound and their segments would pile up.
TEST_F(DictTest, LargeChangesLeadToSnapshotsAndTheirSegmentsAreRemoved) {
  Options options = Opts(64 * 1024);
  options.background_compaction = false;  // deterministic: the snapshot is built by the Set
  Dict a = OpenOrDie(options);
  const std::string big(40 * 1024, 'b');  // over a quarter of the log: its own segment
  for (int i = 0; i < 40; ++i) {
    ASSERT_OK(a.Set("big" + std::to_string(i % 5), Value::Bytes(big)));
  }
  EXPECT_GT(a.GetStatus().snapshots_built, 0u);
  size_t blobs = 0;
  for (const std::string& segment : internal::ListSegments(name_ + "@b")) {
    blobs += segment.find('@', name_.size() + 1) == std::string::npos;
  }
  EXPECT_LT(blobs, 40u) << "large-value segments a snapshot covers are unlinked";
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict b = OpenOrDie(attach);
  EXPECT_EQ(*b.Size(), 5u);
  EXPECT_EQ((*b.Get("big3"))->data(), big);
}

// Writers that go quiet leave a snapshot behind, so a later attacher maps it instead of
// replaying the log (attach cost and private memory O(1), not O(log)).
TEST_F(DictTest, ADictWhoseWritersPauseGetsASnapshot) {
  Dict a = OpenOrDie(Opts(64 * 1024));
  // Between a sixteenth and half of the log: only the quiet trigger can build a snapshot.
  for (int i = 0; i < 200; ++i) {
    ASSERT_OK(a.Set("key" + std::to_string(i), Value::Str("value")));
  }
  const DictStatus before = a.GetStatus();
  ASSERT_GE(before.log_used, before.log_capacity / 16);
  ASSERT_LT(before.log_used, before.log_capacity / 2);
  // Generous: the build is due ~10 ms after the last write; this only bounds a hang.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (a.GetStatus().snapshot_revision != before.revision &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(a.GetStatus().snapshot_revision, before.revision);
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict b = OpenOrDie(attach);
  EXPECT_EQ(*b.Size(), 200u);
}

TEST_F(DictTest, WatcherDeliversEveryChangeInOrder) {
  Dict d = OpenOrDie(Opts());
  auto watched = d.Watch(0);
  ASSERT_OK(watched);
  Watcher& w = **watched;
  ASSERT_OK(d.Set("a", Value::Int(1)));
  ASSERT_OK(d.Update(
      std::vector<std::pair<std::string, Value>>{{"b", Value::Int(2)}, {"c", Value::Int(3)}}));
  ASSERT_OK(d.Erase("a"));
  std::vector<Change> seen;
  while (seen.size() < 4) {
    auto batch = w.Next(100, 1s);
    ASSERT_OK(batch);
    ASSERT_FALSE(batch->changes.empty()) << "timed out";
    for (auto& c : batch->changes) seen.push_back(c);
  }
  EXPECT_EQ(seen[0].revision, 1u);
  EXPECT_EQ(seen[1].revision, 2u);
  EXPECT_EQ(seen[2].revision, 2u);
  EXPECT_EQ(seen[3].op, ChangeOp::kErase);
  EXPECT_EQ(seen[3].revision, 3u);
  auto idle = w.Next(100, 10ms);
  ASSERT_OK(idle);
  EXPECT_TRUE(idle->changes.empty());
  EXPECT_EQ(idle->revision, 3u);
}

TEST_F(DictTest, WatcherFromAnOldRevisionStartsWithASnapshot) {
  Options o = Opts(64 * 1024);
  o.background_compaction = false;
  Dict d = OpenOrDie(o);
  for (int i = 0; i < 5000; ++i) ASSERT_OK(d.Set("k" + std::to_string(i % 50), Value::Int(i)));
  auto watched = d.Watch(1);
  ASSERT_OK(watched);
  Watcher& w = **watched;
  auto batch = w.Next(1000000, 1s);
  ASSERT_OK(batch);
  ASSERT_TRUE(batch->is_snapshot);
  EXPECT_TRUE(batch->snapshot_begins);
  EXPECT_TRUE(batch->snapshot_ends);  // 50 keys: one chunk
  EXPECT_EQ(batch->revision, batch->snapshot_revision);
  std::map<std::string, int64_t> state;
  for (auto& [k, v] : batch->snapshot_items) state[k] = *v.AsInt();
  // The changes after the snapshot follow in later batches.
  while (w.revision() < 5000u) {
    auto more = w.Next(1000000, 1s);
    ASSERT_OK(more);
    ASSERT_FALSE(more->is_snapshot);
    ASSERT_FALSE(more->changes.empty()) << "timed out";
    for (auto& c : more->changes) state[c.key] = *c.value.AsInt();
  }
  EXPECT_EQ(w.revision(), 5000u);
  EXPECT_EQ(state.size(), 50u);
  EXPECT_EQ(state["k49"], 4999);
}

TEST_F(DictTest, WaitForChangeWakesOnAWriteFromAnotherThread) {
  Dict d = OpenOrDie(Opts());
  std::thread writer([&] {
    Options o = Opts();
    o.create_mode = CreateMode::kMustAttach;
    auto w = Dict::Open(o);
    ASSERT_OK(w);
    ASSERT_OK(w->Set("k", Value::Int(1)));
  });
  auto rev = d.WaitForChange(0, 10s);
  writer.join();
  ASSERT_OK(rev);
  EXPECT_EQ(*rev, 1u);
  EXPECT_EQ(d.WaitForChange(1, 5ms).status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(DictTest, TryLockNamesTheHolderPid) {
  Dict a = OpenOrDie(Opts());
  auto guard = a.Lock();
  ASSERT_OK(guard);
  ASSERT_OK(a.Set("inside", Value::Int(1))) << "the holder's own writes proceed";
  std::thread other([&] {
    Options o = Opts();
    o.create_mode = CreateMode::kMustAttach;
    o.lock_timeout = 20ms;
    auto b = Dict::Open(o);
    ASSERT_OK(b);
    auto busy = b->TryLock();
    ASSERT_THAT(busy, StatusIs(StatusCode::kUnavailable));
    EXPECT_NE(busy.status().message().find("pid " + std::to_string(getpid())), std::string::npos)
        << busy.status().message();
    auto write = b->Set("k", Value::Int(1));
    EXPECT_EQ(write.status().code(), StatusCode::kDeadlineExceeded);
  });
  other.join();
  guard->Unlock();
  EXPECT_EQ(a.GetStatus().lock_holder_pid, 0u);
}

// Waiting would wait for itself: a thread that holds the lock through one handle gets an error
// at once from another, whatever the timeout.
TEST_F(DictTest, AThreadHoldingTheLockThroughOneHandleIsRefusedAtOnceThroughAnother) {
  Dict a = OpenOrDie(Opts());
  Options o = Opts();
  o.create_mode = CreateMode::kMustAttach;
  o.lock_timeout = std::chrono::hours(1);  // a wait instead of the error would hang the test
  Dict b = OpenOrDie(o);
  auto guard = a.Lock();
  ASSERT_OK(guard);
  auto write = b.Set("k", Value::Int(1));
  EXPECT_EQ(write.status().code(), StatusCode::kFailedPrecondition) << write.status().ToString();
  guard->Unlock();
  EXPECT_OK(b.Set("k", Value::Int(1))) << "released: the other handle writes";
}

// The library reports through the sink it is given, and nowhere else (no global logger).
TEST_F(DictTest, ASnapshotBuildIsReportedToTheLogSink) {
  struct Capture : LogSink {
    std::mutex mu;
    std::vector<std::pair<LogLevel, std::string>> lines;
    void Log(LogLevel level, std::string_view message) override {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(level, std::string(message));
    }
  };
  auto sink = std::make_shared<Capture>();
  Options o = Opts();
  o.log_sink = sink;
  Dict d = OpenOrDie(o);
  ASSERT_OK(d.Set("a", Value::Int(1)));
  ASSERT_OK(d.Dump());
  ASSERT_OK(d.Close());
  std::lock_guard<std::mutex> lock(sink->mu);
  ASSERT_FALSE(sink->lines.empty());
  EXPECT_EQ(sink->lines.back().first, LogLevel::kInfo);
  EXPECT_NE(sink->lines.back().second.find("dict '" + name_ + "': snapshot generation"),
            std::string::npos)
      << sink->lines.back().second;
}

// The handle is thread-compatible: one handle per thread, all writing the same dict.
TEST_F(DictTest, OneHandlePerThreadIncrementsReachTheExactTotal) {
  Dict d = OpenOrDie(Opts(64 * 1024));
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      Options o = Opts();
      o.create_mode = CreateMode::kMustAttach;
      auto h = Dict::Open(o);
      ASSERT_OK(h);
      for (int i = 0; i < kPerThread; ++i) {
        ASSERT_OK(h->Increment("counter"));
        ASSERT_OK(h->Set("filler" + std::to_string(i % 100), Value::Str("xxxxxxxxxxxxxxxx")));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ((*d.Get("counter"))->AsInt(), kThreads * kPerThread);
  EXPECT_EQ(d.revision(), uint64_t{2} * kThreads * kPerThread);
}

TEST_F(DictTest, NestedDictIsUnlinkedWithItsParent) {
  std::string child_name;
  {
    Dict parent = OpenOrDie(Opts());
    auto child = parent.OpenNested("settings");
    ASSERT_OK(child);
    ASSERT_OK(child->Set("depth", Value::Int(2)));
    child_name = child->name();
    EXPECT_EQ((*parent.Get("settings"))->type(), ValueType::kNestedDict);
    auto again = parent.OpenNested("settings");
    ASSERT_OK(again);
    EXPECT_EQ((*again->Get("depth"))->AsInt(), 2);
    ASSERT_OK(parent.Set("plain", Value::Int(1)));
    EXPECT_EQ(parent.OpenNested("plain").status().code(), StatusCode::kFailedPrecondition);
    EXPECT_TRUE(std::filesystem::exists("/dev/shm/shmdict." + child_name));
  }
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/shmdict." + child_name));
}

// A child goes with the last reference to it, in every way a key can lose its value; a reference
// that another key still holds keeps it.
TEST_F(DictTest, DroppingTheLastReferenceToANestedDictUnlinksIt) {
  Dict parent = OpenOrDie(Opts());
  auto child_of = [&](const char* key) {
    auto child = parent.OpenNested(key);
    EXPECT_OK(child);
    EXPECT_OK(child->Set("x", Value::Int(1)));
    return child->name();
  };
  auto exists = [](const std::string& child) {
    return std::filesystem::exists("/dev/shm/shmdict." + child);
  };
  const std::string overwritten = child_of("a");
  ASSERT_OK(parent.Set("a", Value::Int(1)));
  EXPECT_FALSE(exists(overwritten)) << "overwritten";

  const std::string erased = child_of("b");
  ASSERT_OK(parent.Erase("b"));
  EXPECT_FALSE(exists(erased)) << "erased";

  const std::string popped = child_of("c");
  ASSERT_OK(parent.Pop("c"));
  EXPECT_FALSE(exists(popped)) << "popped";

  // Copied to another key, then dropped from the first: still referenced.
  const std::string shared = child_of("d");
  ASSERT_OK(parent.Set("e", **parent.Get("d")));
  ASSERT_OK(parent.Erase("d"));
  EXPECT_TRUE(exists(shared)) << "still held by 'e'";
  // Moved within one batch: still referenced.
  const std::vector<std::pair<std::string, Value>> move = {{"f", **parent.Get("e")},
                                                           {"e", Value::Int(0)}};
  ASSERT_OK(parent.Update(move));
  EXPECT_TRUE(exists(shared)) << "moved to 'f' in the same batch";

  const std::string cleared = child_of("g");
  ASSERT_OK(parent.Clear());
  EXPECT_FALSE(exists(cleared)) << "cleared";
  EXPECT_FALSE(exists(shared)) << "cleared";
  EXPECT_EQ(*parent.Size(), 0u);
}

// A kNestedDict value naming a dict other than one of this dict's own children (stored by a raw
// writer) is neither followed by a reader nor retired (unlinked) when a change drops it: the
// writer was never given that dict.
TEST_F(DictTest, AReferenceToAnotherDictIsNeitherFollowedNorRetired) {
  const std::string victim = NewDictName();
  Dict other = OpenOrDie(CreateOptions(victim));
  ASSERT_OK(other.Set("x", Value::Int(7)));
  auto others_child = other.OpenNested("child");
  ASSERT_OK(others_child);
  const std::string victims_child = others_child->name();

  Dict d = OpenOrDie(Opts());
  const std::vector<std::string> foreign = {victim, victims_child};
  for (const std::string& reference : foreign) {
    ASSERT_OK(d.Set("ref", Value(ValueType::kNestedDict, reference)));
    EXPECT_THAT(d.OpenNested("ref"),
                StatusIs(StatusCode::kFailedPrecondition, HasSubstr("'" + reference + "'")))
        << "a reader must not open a dict it was never given";
    ASSERT_OK(d.Set("ref", Value::Int(1)));  // overwritten
    ASSERT_OK(d.Set("ref", Value(ValueType::kNestedDict, reference)));
    ASSERT_OK(d.Erase("ref"));  // erased
    ASSERT_OK(d.Set("ref", Value(ValueType::kNestedDict, reference)));
    ASSERT_OK(d.Clear());  // cleared
    ASSERT_OK(d.Set("ref", Value(ValueType::kNestedDict, reference)));
    ASSERT_OK(d.Apply({Change{.op = ChangeOp::kClear},
                       Change{.op = ChangeOp::kSet, .key = "y", .value = Value::Int(1)}}));
    EXPECT_TRUE(std::filesystem::exists(testing::ShmPath(victim))) << reference;
    EXPECT_TRUE(std::filesystem::exists(testing::ShmPath(victims_child))) << reference;
  }
  EXPECT_EQ((*other.Get("x"))->AsInt(), 7);
  // This dict's own children are still retired as before.
  auto own = d.OpenNested("own");
  ASSERT_OK(own);
  const std::string own_name = own->name();
  ASSERT_OK(d.Set("own", Value::Int(0)));
  EXPECT_FALSE(std::filesystem::exists(testing::ShmPath(own_name)));
}

// One batch of many clears (a client's Batch of OP_CLEAR) costs what one clear costs: the writer
// scans the dict once for the nested children the clears retire, whatever their number, and
// neither the writer's view nor a reader's catching up wipes its overlay once per clear. Counted
// in passes over the whole dict on this thread: the old code made one per clear (20,000 scans of
// 3,000 entries, each with a quadratic search of the candidates: hours, where this takes
// milliseconds).
TEST_F(DictTest, ABatchOfManyClearsCostsWhatOneClearCosts) {
  Dict d = OpenOrDie(Opts(1 << 20));
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict reader = OpenOrDie(attach);
  std::vector<std::string> children;
  for (int i = 0; i < 3; ++i) {
    auto child = d.OpenNested("child" + std::to_string(i));
    ASSERT_OK(child);
    children.push_back(child->name());
  }
  std::vector<std::pair<std::string, Value>> items;
  for (int i = 0; i < 3000; ++i) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%x", 0x10000 + i);
    // A third are references to children (never created: retiring a missing one is harmless).
    items.emplace_back(
        "k" + std::to_string(i),
        i % 3 == 0 ? Value(ValueType::kNestedDict, name_ + "@c" + hex) : Value::Int(i));
  }
  ASSERT_OK(d.Update(items));
  ASSERT_EQ(*reader.Size(), 3003u);

  std::vector<Change> batch;
  for (int i = 0; i < 20000; ++i) {
    batch.push_back(Change{.op = ChangeOp::kClear});
    if (i % 2 == 0) {
      batch.push_back(Change{
          .op = ChangeOp::kSet, .key = "s" + std::to_string(i % 10), .value = Value::Int(i)});
    }
  }
  batch.push_back(Change{.op = ChangeOp::kSet, .key = "last", .value = Value::Int(1)});
  const uint64_t passes_before = internal::whole_dict_passes;
  ASSERT_OK(d.Apply(batch));
  const uint64_t writer_passes = internal::whole_dict_passes - passes_before;
  EXPECT_GE(writer_passes, 1u) << "the retired children are found by one scan";
  EXPECT_LE(writer_passes, 3u) << "one scan for the retired children, one wipe of the overlay";

  const uint64_t reader_before = internal::whole_dict_passes;
  ASSERT_OK(reader.Refresh());
  EXPECT_LE(internal::whole_dict_passes - reader_before, 2u);
  const std::map<std::string, Value> want = {{"last", Value::Int(1)}};
  EXPECT_EQ(reader.Export(), want);
  EXPECT_EQ(d.Export(), want);
  for (const std::string& child : children) {
    EXPECT_FALSE(std::filesystem::exists(testing::ShmPath(child))) << child;
  }
}

TEST_F(DictTest, InspectReportsWithoutAttaching) {
  Options o = Opts();
  o.auto_unlink = false;
  {
    Dict d = OpenOrDie(o);
    ASSERT_OK(d.Set("a", Value::Int(1)));
    auto st = LocalCatalog().Inspect(name_);
    ASSERT_OK(st);
    EXPECT_EQ(st->attached, true);
    EXPECT_EQ(st->revision, 1u);
    EXPECT_EQ(st->entries, 1u);
    EXPECT_EQ(st->creator_pid, static_cast<uint32_t>(getpid()));
  }
  auto st = LocalCatalog().Inspect(name_);
  ASSERT_OK(st);
  EXPECT_EQ(st->attached, false);
  auto names = LocalCatalog().ListNames();
  ASSERT_OK(names);
  EXPECT_NE(std::find(names->begin(), names->end(), name_), names->end());
}

TEST_F(DictTest, DumpPublishesASnapshotThatRefreshCanLoad) {
  Dict d = OpenOrDie(Opts());
  ASSERT_OK(d.Set("a", Value::Int(1)));
  auto gen = d.Dump();
  ASSERT_OK(gen);
  EXPECT_GT(*gen, 0u);
  EXPECT_EQ(d.GetStatus().snapshot_revision, 1u);
  ASSERT_OK(d.Refresh(/*force=*/true));
  EXPECT_EQ((*d.Get("a"))->AsInt(), 1);
}

TEST_F(DictTest, ClearHidesSnapshotEntriesFromLaterReaders) {
  Dict d = OpenOrDie(Opts());
  ASSERT_OK(d.Set("a", Value::Int(1)));
  ASSERT_OK(d.Dump());
  ASSERT_OK(d.Clear());
  ASSERT_OK(d.Set("b", Value::Int(2)));
  Options attach = Opts();
  attach.create_mode = CreateMode::kMustAttach;
  Dict r = OpenOrDie(attach);
  EXPECT_FALSE(*r.Contains("a"));
  EXPECT_EQ(*r.Size(), 1u);
  EXPECT_EQ(*r.Keys(), std::vector<std::string>{"b"});
}

}  // namespace
}  // namespace shmdict
