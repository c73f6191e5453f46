// Crash-point tests: where tests/crash_test.cc kills writers at random times, here a writer in
// another process is armed (SHMDICT_CRASH_AT, core/src/crash_point.h) to SIGKILL itself at one
// named step of building, publishing or retiring snapshots, the 1st, 2nd and 5th time it gets
// there, for every crash point the engine has. The writer must die there (it announces the point on
// stdout just before; a point it never reaches fails the test). Then, from this process:
//   - a write goes through within the lock timeout;
//   - every acknowledged write is there with its value, and nothing uncommitted is;
//   - a forced reload (which checks the published chain's checksums) succeeds, and a new handle
//     sees the same items as this one;
//   - another writer's compactions publish again (the published generation advances), after
//     which the dict is still exactly what was committed;
//   - closed and unlinked, the dict leaves nothing in /dev/shm.
//
// The dict is kept big enough (over 8 logs) that builds are usually deltas, with a fold into a new
// base every few builds, so both kinds are killed in. This process compacts only inline (its
// handle never holds the builder claim), so which process takes over a dead builder's claim is
// deterministic.
//
// The replica feed's points (replica.*) are reached by a worker feeding the dict through
// ReplicaFeed::Apply: after its kill, the next adoption must resume from exactly the upstream
// revision of the last committed data, and the feed goes on from there.
//
// The workers link shmdict_core_crashpoints, the test-only engine with the points compiled in
// (core/CMakeLists.txt); this process links the installed one, which has none.
#include <signal.h>

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "crash_point.h"
#include "crash_test_base.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "shmdict/replica_feed.h"
#include "worker_process.h"
#include "workload.h"

namespace shmdict::testing {
namespace {

using internal::kCrashPointNames;

constexpr int kFill = 1000;
constexpr int kValueBytes = 700;
// Large values go to their own segments (over a quarter of the log).
constexpr int kLargeEvery = 10;
constexpr int kLargeBytes = 20000;
// An armed writer stops here, so a point it never reaches fails the test instead of running on.
// Generous: on a loaded machine a background builder falls behind, the writer then builds inline
// when the ring fills, and background folds come rarer (a 5th one took over 4,000 writes).
constexpr const char* kWriteLimit = "12000";
// What an unarmed writer writes after each kill: over 3 logs, so it compacts several times.
constexpr int kMoreWrites = 300;

enum class Builder { kBackground, kInline };

// How a point is reached.
struct Scenario {
  std::string_view point;
  std::vector<Builder> builders;  // the writer's compaction modes that reach it
  bool large_values = false;      // the writer stores some large values
  std::vector<int> nths = {1, 2, 5};
  // A point a writer is killed at first, leaving what this one needs (a dead builder's claim).
  std::optional<std::string_view> after_kill_at;
  // Reached by a replica feed's commit (the worker's `replica` command), not by compaction:
  // `builders` is then empty.
  bool replica_feed = false;
};

const std::vector<Builder> kBoth = {Builder::kBackground, Builder::kInline};
const std::vector<Builder> kBackgroundOnly = {Builder::kBackground};
const std::vector<Builder> kInlineOnly = {Builder::kInline};

const std::vector<Scenario>& Scenarios() {
  static const std::vector<Scenario> scenarios = {
      {"snapshot.segment_recycled", kBoth},
      {"snapshot.delta_half_written", kBoth},
      {"snapshot.base_half_written", kBoth},
      {"snapshot.sealed_before_ready", kBoth},
      {"compactor.background.delta_built", kBackgroundOnly},
      // A growing dict folds into a new base once the new keys reach half the base
      // (SnapshotView::KeepsDelta): a base 1.5x the last, and the writer's own inline builds take
      // some of those folds when the builder lags, so a 5th background fold may lie past the
      // kWriteLimit.
      // A growing dict folds rarely (a delta may add half its base): under ThreadSanitizer a
      // writer wrote its 12,000 values before a 3rd background fold.
      {"compactor.background.base_built", kBackgroundOnly, false, {1, 2}},
      {"compactor.inline.delta_built", kInlineOnly},
      {"compactor.inline.base_built", kInlineOnly},
      {"compactor.publish.log_position_stored", kBoth},
      {"compactor.publish.bookkeeping_stored", kBoth},
      {"compactor.publish.new_chain_base_stored", kBoth},
      {"compactor.publish.generation_stored", kBoth},
      {"compactor.background.published", kBackgroundOnly},
      {"compactor.inline.published", kInlineOnly},
      {"compactor.retire.snapshot_renamed", kBoth},
      // More retired snapshots than are kept: rare with inline builds, which recycle one per build
      // (inline, a writer reaches it about twice before its kWriteLimit).
      {"compactor.retire.retired_unlinked", kBoth, false, {1, 2}},
      {"blob.covered_value_unlinked", kBoth, /*large_values=*/true},
      // A writer takes over a dead builder's claim at most once in its life.
      {"compactor.claim_taken_over",
       kBackgroundOnly,
       false,
       {1},
       "compactor.background.delta_built"},
      {"replica.after_pending", {}, false, {1, 2, 5}, std::nullopt, /*replica_feed=*/true},
      {"replica.after_commit", {}, false, {1, 2, 5}, std::nullopt, /*replica_feed=*/true},
  };
  return scenarios;
}

const Scenario* FindScenario(std::string_view point) {
  for (const Scenario& s : Scenarios()) {
    if (s.point == point) return &s;
  }
  return nullptr;
}

class CrashPointTest : public CrashTestBase,
                       public ::testing::WithParamInterface<std::string_view> {
 protected:
  std::vector<std::string> WriterArgs(const std::string& prefix, const char* count, Builder builder,
                                      bool large_values) const {
    std::vector<std::string> args = {"write", dict_name_, prefix, count,
                                     "--value-bytes=" + std::to_string(kValueBytes)};
    if (builder == Builder::kInline) args.push_back("--inline-compaction");
    if (large_values) {
      args.push_back("--large-every=" + std::to_string(kLargeEvery));
      args.push_back("--large-bytes=" + std::to_string(kLargeBytes));
    }
    return args;
  }

  // Runs a writer armed to SIGKILL itself the nth time it reaches `point`, until it does; returns
  // the highest index it acknowledged (-1: none).
  int64_t RunUntilKilledAt(std::string_view point, int nth, Builder builder, bool large_values,
                           const std::string& prefix) {
    auto writer = SpawnWorker(WriterArgs(prefix, kWriteLimit, builder, large_values),
                              {"SHMDICT_CRASH_AT=" + std::string(point) + ":" + std::to_string(nth),
                               "SHMDICT_CRASH_ANNOUNCE_FD=1"});
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    AckTracker tracker(*writer);
    std::string announced;
    std::string line;
    while (writer->ReadLine(&line, deadline) == LineStatus::kLine) {
      if (line.starts_with("crash-point ")) {
        announced = line;
      } else if (!tracker.Take(line) && line == "done") {
        ADD_FAILURE() << "the writer wrote " << kWriteLimit << " values without reaching " << point
                      << " " << nth << " times";
      }
    }
    const ExitInfo exit = writer->Wait(deadline);
    EXPECT_TRUE(exit.KilledBy(SIGKILL)) << writer->description() << " " << exit.ToString();
    EXPECT_EQ(announced, "crash-point " + std::string(point) + " " + std::to_string(nth))
        << "the writer was not killed by its crash point";
    return tracker.acked();
  }

  // After a writer using `prefix` was killed: the checks of ExpectSurvivedKill, one state for
  // every handle, then another writer's compactions publish, after which the dict is still exactly
  // what was committed.
  void ExpectSurvivedKillAndCompactionGoesOn(Dict& dict, const std::string& prefix, int64_t acked,
                                             Builder builder, bool large_values) {
    ASSERT_NO_FATAL_FAILURE(ExpectSurvivedKill(dict, prefix, acked));
    ASSERT_NO_FATAL_FAILURE(ExpectOneStateForEveryone(dict));

    const uint64_t generation = dict.GetStatus().snapshot_generation.value();
    const std::string more = prefix + "-more";
    auto next =
        SpawnWorker(WriterArgs(more, std::to_string(kMoreWrites).c_str(), builder, large_values));
    const ExitInfo finished = next->Wait(DeadlineIn(kWorkerTimeout));
    ASSERT_TRUE(finished.Succeeded())
        << next->description() << " " << finished.ToString() << "; output:\n"
        << next->output();
    committed_[more] = kMoreWrites;
    EXPECT_GT(dict.GetStatus().snapshot_generation, generation)
        << "no snapshot was published after the kill";
    ASSERT_NO_FATAL_FAILURE(ExpectWritableAndReadable(dict));
    ExpectHoldsExactlyTheCommittedWrites(dict);
    ASSERT_NO_FATAL_FAILURE(ExpectOneStateForEveryone(dict));
  }

  // A feed armed to die the nth time it reaches `point` (a step of its nth commit): the next
  // adoption resumes from exactly the upstream revision of the last committed data (the worker
  // commits upstream revision 10*b as local revision b, with "u" = 10*b in its data).
  void ExpectFeedKilledThereResumesExactly(std::string_view point, int nth) {
    Options options = CreateOptions(dict_name_);
    options.lock_timeout = kLockTimeout;
    Result<Dict> dict = Dict::Open(options);
    ASSERT_OK(dict);
    constexpr char kDescription[] = "etcd:http://127.0.0.1:1 prefix=/crash/";
    auto feeder = SpawnWorker({"replica", dict_name_, kDescription, "100"},
                              {"SHMDICT_CRASH_AT=" + std::string(point) + ":" + std::to_string(nth),
                               "SHMDICT_CRASH_ANNOUNCE_FD=1"});
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    AckTracker tracker(*feeder);
    std::string announced;
    std::string line;
    while (feeder->ReadLine(&line, deadline) == LineStatus::kLine) {
      if (line.starts_with("crash-point ")) {
        announced = line;
      } else if (!tracker.Take(line) && line == "done") {
        ADD_FAILURE() << "the feed committed 100 times without reaching " << point << " " << nth
                      << " times";
      }
    }
    const ExitInfo exit = feeder->Wait(deadline);
    EXPECT_TRUE(exit.KilledBy(SIGKILL)) << feeder->description() << " " << exit.ToString();
    ASSERT_EQ(announced, "crash-point " + std::string(point) + " " + std::to_string(nth))
        << "the feed was not killed by its crash point";

    // The nth commit is the one killed in: committed after its commit store, not before.
    const uint64_t committed = point == "replica.after_commit" ? nth : nth - 1;
    EXPECT_EQ(tracker.acked(), static_cast<int64_t>(nth) - 2) << "acknowledged before the kill";
    {
      ReplicaResumePoint resume;
      Result<ReplicaFeed> feed =
          ReplicaFeed::Adopt(*dict, ReplicaMarker{.description = kDescription}, &resume);
      ASSERT_OK(feed) << "the dead feed's dict is taken over";
      EXPECT_EQ(dict->revision(), committed);
      EXPECT_EQ(resume.local_revision, committed);
      EXPECT_EQ(resume.upstream_revision, 10 * committed)
          << "resumed from another upstream revision than the last committed data's";
      if (committed > 0) {
        Value u;
        ASSERT_TRUE(*dict->Get("u", &u));
        EXPECT_EQ(u.AsInt(), std::optional<int64_t>(10 * committed));
        EXPECT_THAT(feed->Apply({}, 10 * committed - 1), StatusIs(StatusCode::kFailedPrecondition));
      }
      EXPECT_EQ(dict->Size().value(), committed == 0 ? 0 : committed + 1);
      // The feed goes on from there.
      Result<uint64_t> next =
          feed->Apply({Change{.op = ChangeOp::kSet,
                              .key = "u",
                              .value = Value::Int(static_cast<int64_t>(10 * (committed + 1)))}},
                      10 * (committed + 1));
      ASSERT_OK(next);
      EXPECT_EQ(*next, committed + 1);
      EXPECT_EQ(dict->GetStatus().upstream_revision, std::optional<uint64_t>(10 * (committed + 1)));
      ASSERT_NO_FATAL_FAILURE(ExpectOneStateForEveryone(*dict));
    }
    ASSERT_OK(dict->Close());
    EXPECT_EQ(ShmEntriesWithPrefix(dict_name_), std::vector<std::string>())
        << "segments of the dict left after its creator closed (and unlinked) it";
  }

  // The published chain loads whole (a forced reload checks its checksums) and a new handle sees
  // the same items as this one.
  void ExpectOneStateForEveryone(Dict& dict) {
    ASSERT_OK(dict.Refresh(/*force=*/true));
    Result<Dict> fresh = Dict::Open(AttachOptions(dict_name_));
    ASSERT_OK(fresh);
    EXPECT_TRUE(fresh->Export() == dict.Export()) << "a new handle sees another state";
  }

  // The dict of the current run: each kill gets a dict of its own, so that how often a writer
  // reaches a point does not depend on what earlier runs left (a bigger base folds less often).
  std::string dict_name_;
};

TEST(CrashPointScenarioTest, EveryScenarioNamesACrashPoint) {
  for (const Scenario& s : Scenarios()) {
    EXPECT_NE(std::find(kCrashPointNames.begin(), kCrashPointNames.end(), s.point),
              kCrashPointNames.end())
        << s.point;
    if (s.after_kill_at) {
      EXPECT_NE(FindScenario(*s.after_kill_at), nullptr) << *s.after_kill_at;
    }
  }
}

TEST_P(CrashPointTest, WriterKilledThereLosesNothingAndCompactionGoesOn) {
  const std::string_view point = GetParam();
  const Scenario* scenario = FindScenario(point);
  ASSERT_NE(scenario, nullptr) << "crash point " << point << " has no scenario in this test";

  if (scenario->replica_feed) {
    for (const int nth : scenario->nths) {
      SCOPED_TRACE(std::string(point) + ":" + std::to_string(nth));
      dict_name_ = NewDictName();
      ASSERT_NO_FATAL_FAILURE(ExpectFeedKilledThereResumesExactly(point, nth));
    }
    return;
  }
  int run = 0;
  for (const Builder builder : scenario->builders) {
    for (const int nth : scenario->nths) {
      const std::string prefix = "p" + std::to_string(run++);
      SCOPED_TRACE(std::string(point) + ":" + std::to_string(nth) +
                   (builder == Builder::kInline ? " inline" : " background"));
      dict_name_ = NewDictName();
      committed_.clear();
      writes_after_kills_ = 0;
      Options options = CreateOptions(dict_name_);
      options.lock_timeout = kLockTimeout;
      options.buffer_size = kSmallLog;
      options.background_compaction = false;  // this process never holds the builder claim
      Result<Dict> dict = Dict::Open(options);
      ASSERT_OK(dict);
      for (int64_t i = 0; i < kFill; ++i) {
        ASSERT_OK(dict->Set(KeyFor("fill", i), ValueFor(i, kValueBytes)));
      }
      committed_["fill"] = kFill;

      const bool large = scenario->large_values;
      if (!scenario->after_kill_at) {
        const int64_t acked = RunUntilKilledAt(point, nth, builder, large, prefix);
        ASSERT_FALSE(HasFailure());
        ASSERT_NO_FATAL_FAILURE(
            ExpectSurvivedKillAndCompactionGoesOn(*dict, prefix, acked, builder, large));
      } else {
        // Nothing in between, so that it is the second writer that finds the first one dead.
        const std::string before = prefix + "-before";
        const int64_t acked_before =
            RunUntilKilledAt(*scenario->after_kill_at, 1, builder, large, before);
        const int64_t acked = RunUntilKilledAt(point, nth, builder, large, prefix);
        ASSERT_FALSE(HasFailure());
        ASSERT_NO_FATAL_FAILURE(ExpectAcknowledgedWritesKept(*dict, before, acked_before));
        ASSERT_NO_FATAL_FAILURE(
            ExpectSurvivedKillAndCompactionGoesOn(*dict, prefix, acked, builder, large));
      }

      ASSERT_OK(dict->Close());
      EXPECT_EQ(ShmEntriesWithPrefix(dict_name_), std::vector<std::string>())
          << "segments of the dict left after its creator closed (and unlinked) it";
    }
  }
}

// A publisher killed between storing a new base as the chain's base and publishing its generation:
// the published snapshot is still the old base or a delta over it. If the chain base were left
// naming the unpublished base, every delta over the old one would be refused. Usually the next
// build folds into a new base anyway (the changes since the old base only grew), but not once they
// shrink, as here where the dead writer's keys are erased: then nothing would be published, and a
// writer filling the ring would overwrite the log the published snapshot needs (every handle then
// reports the dict corrupted). The next lock holder's repair must re-derive the chain base.
TEST_F(CrashPointTest, DeltasArePublishedAgainAfterAPublisherDiedBeforeANewBasesGeneration) {
  dict_name_ = name_;
  Options options = CrashOptions();
  options.buffer_size = kSmallLog;
  options.background_compaction = false;  // this process builds inline, under the writer lock
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  for (int64_t i = 0; i < kFill; ++i) {
    ASSERT_OK(dict->Set(KeyFor("fill", i), ValueFor(i, kValueBytes)));
  }
  committed_["fill"] = kFill;

  const int64_t acked =
      RunUntilKilledAt("compactor.publish.new_chain_base_stored", 1, Builder::kInline, false, "p0");
  ASSERT_FALSE(HasFailure());
  // Reads only: the first write must be the erasure, or its build would still fold.
  ASSERT_NO_FATAL_FAILURE(ExpectAcknowledgedWritesKept(*dict, "p0", acked));
  std::vector<Change> erase_all;
  for (int64_t i = 0; i < committed_["p0"]; ++i) {
    erase_all.push_back(Change{.op = ChangeOp::kErase, .key = KeyFor("p0", i)});
  }
  ASSERT_OK(dict->Apply(erase_all));  // the first write after the kill: one revision, one build
  committed_["p0"] = 0;
  ASSERT_NO_FATAL_FAILURE(ExpectWritableAndReadable(*dict));
  ExpectHoldsExactlyTheCommittedWrites(*dict);

  // Small changes, several logs' worth: the builds are deltas over the old base.
  const uint64_t generation = dict->GetStatus().snapshot_generation.value();
  constexpr int kSmallWrites = 6000;
  for (int64_t i = 0; i < kSmallWrites; ++i) {
    ASSERT_OK(dict->Set(KeyFor("small", i % 50), ValueFor(i, 0)));
  }
  committed_["small"] = 0;
  for (int64_t i = 0; i < 50; ++i) {
    Value value;
    ASSERT_TRUE(*dict->Get(KeyFor("small", i), &value));
    EXPECT_EQ(value.AsInt(), kSmallWrites - 50 + i);
    ASSERT_OK(dict->Erase(KeyFor("small", i)));
  }
  EXPECT_GT(dict->GetStatus().snapshot_generation, generation)
      << "no snapshot was published after the kill";
  ASSERT_NO_FATAL_FAILURE(ExpectOneStateForEveryone(*dict));
  ExpectHoldsExactlyTheCommittedWrites(*dict);
}

std::string PointTestName(const ::testing::TestParamInfo<std::string_view>& info) {
  std::string name(info.param);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(EveryPoint, CrashPointTest, ::testing::ValuesIn(kCrashPointNames),
                         PointTestName);

}  // namespace
}  // namespace shmdict::testing
