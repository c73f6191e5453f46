// The local Watcher and the Store side of Dict: watchers that outlive their handle, Cancel(),
// chunked snapshots, Apply batches, incarnations, and watchers on several threads.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dict_test_base.h"
#include "segment.h"
#include "shmdict/dict.h"
#include "shmdict/store.h"

namespace shmdict {
namespace {

using namespace std::chrono_literals;
using testing::StatusIs;

// Each test gets its own dict name and proves it left nothing behind in /dev/shm (DictTestBase).
class WatcherTest : public testing::DictTestBase {
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
  std::unique_ptr<Watcher> WatchOrDie(Dict& d, uint64_t after) {
    auto w = d.Watch(after);
    EXPECT_OK(w);
    return std::move(*w);
  }
};

std::string Key(int i) { return "key-" + std::to_string(i); }

// Receives one whole snapshot, checking the chunk rules of store.h; returns its items.
std::map<std::string, Value> ReceiveSnapshot(Watcher& w, const WatchLimits& limits,
                                             uint64_t revision_before, size_t* chunks) {
  std::map<std::string, Value> items;
  *chunks = 0;
  uint64_t snapshot_revision = 0;
  while (true) {
    auto batch = w.Next(limits, 0s);
    EXPECT_OK(batch);
    if (!batch.ok()) return items;
    EXPECT_TRUE(batch->is_snapshot);
    EXPECT_TRUE(batch->changes.empty());
    EXPECT_EQ(batch->snapshot_begins, *chunks == 0);
    if (*chunks == 0) snapshot_revision = batch->snapshot_revision;
    EXPECT_EQ(batch->snapshot_revision, snapshot_revision);
    ++*chunks;
    EXPECT_FALSE(batch->snapshot_items.empty() && !batch->snapshot_ends) << "an empty chunk";
    EXPECT_LE(batch->snapshot_items.size(), limits.max_changes);
    size_t bytes = 0;
    for (const auto& [k, v] : batch->snapshot_items) bytes += k.size() + v.data().size();
    if (batch->snapshot_items.size() > 1) {
      EXPECT_LE(bytes, limits.max_bytes);
    }
    for (auto& [k, v] : batch->snapshot_items) {
      EXPECT_TRUE(items.emplace(k, v).second) << "delivered twice: " << k;
    }
    if (batch->snapshot_ends) {
      EXPECT_EQ(batch->revision, snapshot_revision);
      EXPECT_EQ(w.revision(), snapshot_revision);
      return items;
    }
    EXPECT_EQ(batch->revision, revision_before) << "a chunk before the last moved the revision";
    EXPECT_EQ(w.revision(), revision_before);
  }
}

TEST_F(WatcherTest, AWatcherOutlivesCloseAndDestructionOfItsDict) {
  std::unique_ptr<Watcher> outlives_destruction;
  {
    Dict d = OpenOrDie(Opts());
    std::unique_ptr<Watcher> outlives_close = WatchOrDie(d, 0);
    outlives_destruction = WatchOrDie(d, 0);
    ASSERT_OK(d.Set("a", Value::Int(1)));
    auto batch = outlives_close->Next(100, 1s);
    ASSERT_OK(batch);
    ASSERT_EQ(batch->changes.size(), 1u);

    ASSERT_OK(d.Close());  // also unlinks the dict: the watchers keep their mappings
    auto after_close = outlives_close->Next(100, 1s);
    ASSERT_THAT(after_close, StatusIs(StatusCode::kFailedPrecondition));
    EXPECT_NE(after_close.status().message().find("the handle of dict '" + name_ + "' was closed"),
              std::string::npos)
        << after_close.status().message();
    EXPECT_EQ(outlives_close->revision(), 1u);
  }
  auto after_destruction = outlives_destruction->Next(100, 1s);
  ASSERT_THAT(after_destruction, StatusIs(StatusCode::kFailedPrecondition));
  outlives_destruction->Cancel();  // still safe: the watcher's own mapping
  outlives_destruction.reset();
}

TEST_F(WatcherTest, ClosingTheDictWakesABlockedNext) {
  Dict d = OpenOrDie(Opts());
  std::unique_ptr<Watcher> w = WatchOrDie(d, 0);
  std::atomic<bool> calling{false};
  Status result;
  std::thread waiter([&] {
    calling.store(true);
    result = w->Next(100, 10s).status();
  });
  while (!calling.load()) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // lets Next block; the outcome is the same if it has not
  ASSERT_OK(d.Close());
  waiter.join();
  EXPECT_EQ(result.code(), StatusCode::kFailedPrecondition) << result.ToString();
}

TEST_F(WatcherTest, CancelFromAnotherThreadWakesABlockedNext) {
  Dict d = OpenOrDie(Opts());
  std::unique_ptr<Watcher> w = WatchOrDie(d, 0);
  std::atomic<bool> calling{false};
  Status result;
  std::thread waiter([&] {
    calling.store(true);
    result = w->Next(100, 10s).status();
  });
  while (!calling.load()) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // lets Next block; the outcome is the same if it has not
  std::thread canceller([&] { w->Cancel(); });
  canceller.join();
  waiter.join();
  EXPECT_EQ(result.code(), StatusCode::kCancelled) << result.ToString();
  // Every later call, too, even with changes waiting; Cancel is idempotent.
  ASSERT_OK(d.Set("a", Value::Int(1)));
  w->Cancel();
  EXPECT_EQ(w->Next(100, 0s).status().code(), StatusCode::kCancelled);
}

TEST_F(WatcherTest, ASnapshotOfTenThousandKeysComesInChunksBoundedByCount) {
  Options o = Opts(1 << 20);
  o.background_compaction = false;
  Dict d = OpenOrDie(o);
  for (int start = 0; start < 10000; start += 500) {
    std::vector<std::pair<std::string, Value>> items;
    for (int i = start; i < start + 500; ++i) items.emplace_back(Key(i), Value::Int(i));
    ASSERT_OK(d.Update(items));
  }
  ASSERT_OK(d.Dump());
  // A delta over that base: erased, overwritten and new keys.
  for (int i = 0; i < 30; ++i) ASSERT_OK(d.Erase(Key(i)));
  for (int i = 100; i < 130; ++i) ASSERT_OK(d.Set(Key(i), Value::Str("overwritten")));
  for (int i = 10000; i < 10030; ++i) ASSERT_OK(d.Set(Key(i), Value::Int(i)));
  ASSERT_OK(d.Dump());
  const uint64_t dumped = d.revision();

  std::unique_ptr<Watcher> w = WatchOrDie(d, 0);  // 0 with a snapshot: starts with it
  size_t chunks = 0;
  std::map<std::string, Value> got = ReceiveSnapshot(*w, WatchLimits{100, SIZE_MAX}, 0, &chunks);
  EXPECT_EQ(got, d.Export());
  EXPECT_EQ(got.size(), 10000u);
  EXPECT_EQ(chunks, 100u);  // 10,000 items, 100 a chunk: exactly full chunks, the last one ends
  EXPECT_EQ(w->revision(), dumped);
  // Then live changes, after the snapshot's revision.
  ASSERT_OK(d.Set("after", Value::Int(1)));
  auto batch = w->Next(100, 1s);
  ASSERT_OK(batch);
  EXPECT_FALSE(batch->is_snapshot);
  ASSERT_EQ(batch->changes.size(), 1u);
  EXPECT_EQ(batch->changes[0].revision, dumped + 1);
}

TEST_F(WatcherTest, ASnapshotChunkStaysWithinMaxBytesButHoldsAtLeastOneItem) {
  Options o = Opts(1 << 20);
  o.background_compaction = false;
  Dict d = OpenOrDie(o);
  std::vector<std::pair<std::string, Value>> items;
  for (int i = 0; i < 10000; ++i) items.emplace_back(Key(i), Value::Int(i));
  ASSERT_OK(d.Update(items));
  ASSERT_OK(d.Set("huge", Value::Bytes(std::string(5000, 'x'))));  // over max_bytes alone
  ASSERT_OK(d.Dump());
  ASSERT_OK(d.Set("after-the-snapshot", Value::Int(1)));

  std::unique_ptr<Watcher> w = WatchOrDie(d, 1);  // revision 1 predates the snapshot
  size_t chunks = 0;
  const WatchLimits limits{SIZE_MAX, 1000};
  std::map<std::string, Value> got = ReceiveSnapshot(*w, limits, 1, &chunks);
  EXPECT_EQ(got.size(), 10001u);
  EXPECT_EQ(got.at("huge").data().size(), 5000u);
  EXPECT_GT(chunks, 10001u * 12 / 1000);  // about 12 bytes an item
  EXPECT_EQ(w->revision(), 2u);
  auto batch = w->Next(limits, 1s);
  ASSERT_OK(batch);
  ASSERT_EQ(batch->changes.size(), 1u);
  EXPECT_EQ(batch->changes[0].key, "after-the-snapshot");
}

TEST_F(WatcherTest, AnEmptyDictsSnapshotIsOneChunkWithBothFlags) {
  Options o = Opts();
  o.background_compaction = false;
  Dict d = OpenOrDie(o);
  ASSERT_OK(d.Set("a", Value::Int(1)));
  ASSERT_OK(d.Clear());
  ASSERT_OK(d.Dump());
  std::unique_ptr<Watcher> w = WatchOrDie(d, 0);
  auto batch = w->Next(100, 1s);
  ASSERT_OK(batch);
  EXPECT_TRUE(batch->is_snapshot);
  EXPECT_TRUE(batch->snapshot_begins);
  EXPECT_TRUE(batch->snapshot_ends);
  EXPECT_TRUE(batch->snapshot_items.empty());
  EXPECT_EQ(batch->snapshot_revision, 2u);
  EXPECT_EQ(batch->revision, 2u);
}

TEST_F(WatcherTest, ChangeBatchesRespectMaxBytesWithoutSplittingARevision) {
  Dict d = OpenOrDie(Opts());
  std::unique_ptr<Watcher> w = WatchOrDie(d, 0);
  const std::string value(100, 'v');
  for (int i = 0; i < 10; ++i) ASSERT_OK(d.Set(Key(i), Value::Bytes(value)));
  // One revision of three changes, larger than max_bytes by itself.
  ASSERT_OK(d.Update(std::vector<std::pair<std::string, Value>>{
      {"x", Value::Bytes(value)}, {"y", Value::Bytes(value)}, {"z", Value::Bytes(value)}}));
  const WatchLimits limits{100, 250};
  std::vector<Change> seen;
  while (w->revision() < 11) {
    auto batch = w->Next(limits, 1s);
    ASSERT_OK(batch);
    ASSERT_FALSE(batch->changes.empty()) << "timed out";
    size_t bytes = 0;
    for (const Change& c : batch->changes) bytes += c.key.size() + c.value.data().size();
    if (batch->changes.front().revision != batch->changes.back().revision) {
      EXPECT_LE(bytes, limits.max_bytes);  // several revisions: within the bound
    }
    EXPECT_EQ(batch->revision, batch->changes.back().revision);
    for (Change& c : batch->changes) seen.push_back(std::move(c));
  }
  ASSERT_EQ(seen.size(), 13u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(seen[i].revision, static_cast<uint64_t>(i + 1));
  for (int i = 10; i < 13; ++i) EXPECT_EQ(seen[i].revision, 11u);
}

TEST_F(WatcherTest, ApplyCommitsAMixedBatchAsOneRevisionThatAWatcherSeesInOneBatch) {
  Dict d = OpenOrDie(Opts());
  ASSERT_OK(d.Set("a", Value::Int(1)));
  ASSERT_OK(d.Set("b", Value::Int(2)));
  std::unique_ptr<Watcher> w = WatchOrDie(d, d.revision());
  auto set = [](std::string key, Value v) {
    return Change{0, ChangeOp::kSet, std::move(key), std::move(v)};
  };
  auto erase = [](std::string key) { return Change{0, ChangeOp::kErase, std::move(key), {}}; };

  auto applied =
      d.Apply({set("c", Value::Int(3)), erase("a"), erase("missing"), set("a", Value::Int(4)),
               erase("b"), set("n", Value::Int(5)), erase("n")});
  ASSERT_OK(applied);
  EXPECT_EQ(*applied, 3u);
  EXPECT_EQ(d.last_commit_revision(), 3u);
  EXPECT_EQ(d.Export(), (std::map<std::string, Value>{{"a", Value::Int(4)}, {"c", Value::Int(3)}}));

  auto batch = w->Next(100, 1s);
  ASSERT_OK(batch);
  EXPECT_EQ(batch->revision, 3u);
  std::vector<std::pair<ChangeOp, std::string>> ops;
  for (const Change& c : batch->changes) {
    EXPECT_EQ(c.revision, 3u);
    ops.emplace_back(c.op, c.key);
  }
  // The erase of a missing key is skipped; the rest is kept in order.
  EXPECT_EQ(ops, (std::vector<std::pair<ChangeOp, std::string>>{{ChangeOp::kSet, "c"},
                                                                {ChangeOp::kErase, "a"},
                                                                {ChangeOp::kSet, "a"},
                                                                {ChangeOp::kErase, "b"},
                                                                {ChangeOp::kSet, "n"},
                                                                {ChangeOp::kErase, "n"}}));

  // Nothing to change: no revision.
  auto noop = d.Apply({erase("missing"), erase("b")});
  ASSERT_OK(noop);
  EXPECT_EQ(*noop, 3u);
  EXPECT_EQ(d.revision(), 3u);

  // A clear in the middle: erasing a key it removed is skipped, a key set after it stays.
  auto cleared =
      d.Apply({Change{0, ChangeOp::kClear, "", {}}, erase("c"), set("x", Value::Int(9))});
  ASSERT_OK(cleared);
  EXPECT_EQ(*cleared, 4u);
  EXPECT_EQ(d.Export(), (std::map<std::string, Value>{{"x", Value::Int(9)}}));
  batch = w->Next(100, 1s);
  ASSERT_OK(batch);
  ASSERT_EQ(batch->changes.size(), 2u);
  EXPECT_EQ(batch->changes[0].op, ChangeOp::kClear);
  EXPECT_EQ(batch->changes[1].key, "x");

  auto invalid = d.Apply({set("y", Value::Int(1)), Change{0, static_cast<ChangeOp>(9), "z", {}}});
  EXPECT_EQ(invalid.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(d.revision(), 4u);
  EXPECT_FALSE(*d.Contains("y"));
}

TEST_F(WatcherTest, TheIncarnationChangesWhenTheNameIsCreatedAgain) {
  Options o = Opts();
  o.auto_unlink = false;
  Dict first = OpenOrDie(o);
  auto now = Dict::IncarnationOf(name_);
  ASSERT_OK(now);
  EXPECT_EQ(*now, first.incarnation());
  Dict attached = OpenOrDie(o);
  EXPECT_EQ(attached.incarnation(), first.incarnation());

  ASSERT_OK(first.Unlink());
  EXPECT_EQ(Dict::IncarnationOf(name_).status().code(), StatusCode::kNotFound);
  Dict second = OpenOrDie(o);  // `first` still maps the old segment, so its inode is not reused
  auto again = Dict::IncarnationOf(name_);
  ASSERT_OK(again);
  EXPECT_EQ(*again, second.incarnation());
  EXPECT_NE(second.incarnation(), first.incarnation());
  EXPECT_EQ(Dict::IncarnationOf("bad/name").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(WatcherTest, FourWatchersOnFourThreadsFollowAWriter) {
  Dict d = OpenOrDie(Opts());  // a small log: the watchers get lapped and resync from snapshots
  constexpr int kWrites = 20000;
  constexpr int kKeys = 200;
  std::vector<std::unique_ptr<Watcher>> watchers;
  for (int i = 0; i < 4; ++i) watchers.push_back(WatchOrDie(d, 0));
  std::vector<std::map<std::string, Value>> states(4);
  std::vector<std::string> failures(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Watcher& w = *watchers[t];
      std::map<std::string, Value>& state = states[t];
      const WatchLimits limits{static_cast<size_t>(16 + 50 * t), size_t{2000} << t};
      while (w.revision() < kWrites) {
        auto batch = w.Next(limits, 10s);
        if (!batch.ok()) {
          failures[t] = batch.status().ToString();
          return;
        }
        if (batch->is_snapshot) {
          if (batch->snapshot_begins) state.clear();
          for (auto& [k, v] : batch->snapshot_items) state[k] = v;
          continue;
        }
        if (batch->changes.empty()) {
          failures[t] = "timed out at revision " + std::to_string(w.revision());
          return;
        }
        for (const Change& c : batch->changes) {
          if (c.op == ChangeOp::kSet) state[c.key] = c.value;
        }
      }
    });
  }
  for (int i = 1; i <= kWrites; ++i) {
    ASSERT_OK(d.Set(Key(i % kKeys), Value::Int(i)));
  }
  for (std::thread& t : threads) t.join();
  const std::map<std::string, Value> expected = d.Export();
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(failures[t], "") << "watcher " << t;
    EXPECT_EQ(states[t], expected) << "watcher " << t;
  }
}

}  // namespace
}  // namespace shmdict
