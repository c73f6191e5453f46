// Multi-process behaviour of shmdict, observed from real, unrelated processes (posix_spawn + exec
// of tests/workers/shmdict_worker): shared counters, change streams, attach after compaction,
// large values, nested dicts, create modes, the user lock and change notification.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dict_test_base.h"
#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "worker_process.h"
#include "workload.h"

namespace shmdict::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Workers = std::vector<std::unique_ptr<WorkerProcess>>;

constexpr uint64_t kSmallLog = 64 * 1024;

class MultiProcessTest : public DictTestBase {};

std::vector<WorkerProcess*> Raw(const Workers& workers) {
  std::vector<WorkerProcess*> raw;
  for (const auto& w : workers) raw.push_back(w.get());
  return raw;
}

// Waits until every worker (started with --barrier) has attached, then releases them together so
// that they really run concurrently.
void ReleaseTogether(const Workers& workers) {
  for (const auto& w : workers) ASSERT_TRUE(w->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
  for (const auto& w : workers) ASSERT_TRUE(w->SendLine("go")) << w->description();
}

void ExpectAllSucceed(const Workers& workers) {
  const std::vector<ExitInfo> exits = WaitAll(Raw(workers), DeadlineIn(kWorkerTimeout));
  for (size_t i = 0; i < workers.size(); ++i) {
    EXPECT_TRUE(exits[i].Succeeded())
        << workers[i]->description() << ": " << exits[i].ToString() << "; output:\n"
        << workers[i]->output();
  }
}

uint64_t NumberAfter(std::string_view line, std::string_view prefix) {
  return std::strtoull(std::string(line.substr(prefix.size())).c_str(), nullptr, 10);
}

// Checks a watcher's transcript ("snapshot R N", "rev R", ..., "done R N"): revisions arrive in
// order without duplicates, consecutive except right after a snapshot, up to `until`. With
// `snapshot_only_first`, a snapshot may only open the stream (the log was never lapped).
void ExpectEveryRevisionInOrder(const WorkerProcess& watcher, const std::vector<std::string>& lines,
                                uint64_t until, bool snapshot_only_first) {
  uint64_t next = 1;
  bool started = false;
  bool done = false;
  for (const std::string& line : lines) {
    if (line.starts_with("rev ")) {
      const uint64_t rev = NumberAfter(line, "rev ");
      if (rev != next) {
        ADD_FAILURE() << watcher.description() << ": revision " << rev << " delivered where "
                      << next << " was due (" << (rev < next ? "duplicate or reordered" : "gap")
                      << ")";
        return;
      }
      next = rev + 1;
      started = true;
    } else if (line.starts_with("snapshot ")) {
      const uint64_t rev = NumberAfter(line, "snapshot ");
      if (started && (snapshot_only_first || rev < next)) {
        ADD_FAILURE() << watcher.description() << ": snapshot at revision " << rev
                      << " in the middle of the stream, after revision " << next - 1;
        return;
      }
      next = rev + 1;
      started = true;
    } else if (line.starts_with("done ")) {
      done = true;
    } else {
      ADD_FAILURE() << watcher.description() << ": unexpected line '" << line << "'";
      return;
    }
  }
  EXPECT_TRUE(done) << watcher.description() << " did not finish";
  EXPECT_EQ(next, until + 1) << watcher.description() << " stopped early";
}

// Spawns `processes` workers running `args`, releases them at once (so they really contend) and
// expects every one to succeed.
void RunTogether(int processes, std::vector<std::string> args) {
  args.push_back("--barrier");
  Workers workers;
  for (int i = 0; i < processes; ++i) workers.push_back(SpawnWorker(args));
  ReleaseTogether(workers);
  ExpectAllSucceed(workers);
}

TEST_F(MultiProcessTest, ProcessesIncrementingOneCounterReachTheExactTotal) {
  constexpr int kProcesses = 4;
  constexpr int kIncrements = 2000;
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);

  RunTogether(kProcesses, {"incr", name_, "counter", std::to_string(kIncrements)});

  std::optional<Value> counter = *dict->Get("counter");
  ASSERT_TRUE(counter.has_value());
  EXPECT_EQ(counter->AsInt(), kProcesses * kIncrements) << "increments were lost";
  EXPECT_EQ(dict->revision(), uint64_t{kProcesses * kIncrements})
      << "every increment commits exactly one revision";
}

TEST_F(MultiProcessTest, WatchersInOtherProcessesSeeEveryRevisionInOrder) {
  constexpr int kWriters = 2;
  constexpr int kWritesEach = 3000;
  constexpr uint64_t kTotal = kWriters * kWritesEach;
  // The default 4 MiB log holds the whole run: a watcher never needs a snapshot after the start.
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);

  Workers watchers;
  for (int i = 0; i < 2; ++i) {
    watchers.push_back(SpawnWorker({"watch", name_, std::to_string(kTotal)}));
    ASSERT_TRUE(watchers.back()->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
  }
  Workers writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.push_back(SpawnWorker(
        {"write", name_, "w" + std::to_string(i), std::to_string(kWritesEach), "--barrier"}));
  }
  ReleaseTogether(writers);
  ExpectAllSucceed(writers);
  ExpectAllSucceed(watchers);

  for (const auto& watcher : watchers) {
    ExpectEveryRevisionInOrder(*watcher, watcher->TakeLines(), kTotal,
                               /*snapshot_only_first=*/true);
  }
}

TEST_F(MultiProcessTest, WatchersOfACompactingLogSeeConsistentStatesInOrder) {
  constexpr int kWriters = 2;
  constexpr int kWritesEach = 3000;
  constexpr uint64_t kTotal = kWriters * kWritesEach;
  Options options = CreateOptions(name_);
  options.buffer_size = kSmallLog;  // ~1.5 MB of records through 64 KiB: dozens of snapshots
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  const uint64_t generation_before = dict->GetStatus().snapshot_generation.value();

  Workers watchers;
  for (int i = 0; i < 2; ++i) {
    watchers.push_back(SpawnWorker({"watch", name_, std::to_string(kTotal)}));
    ASSERT_TRUE(watchers.back()->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
  }
  Workers writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.push_back(SpawnWorker({"write", name_, "w" + std::to_string(i),
                                   std::to_string(kWritesEach), "--value-bytes=200", "--barrier"}));
  }
  ReleaseTogether(writers);
  ExpectAllSucceed(writers);
  ExpectAllSucceed(watchers);

  // Each watcher checked every snapshot and change against the writers' values and that the
  // state at revision R has R entries; here: the order of what it was given.
  for (const auto& watcher : watchers) {
    ExpectEveryRevisionInOrder(*watcher, watcher->TakeLines(), kTotal,
                               /*snapshot_only_first=*/false);
  }
  EXPECT_GE(dict->GetStatus().snapshot_generation, generation_before + 10)
      << "the workload was meant to compact the log many times";
}

TEST_F(MultiProcessTest, ReadersInAnotherProcessNeverSeeATornState) {
  constexpr uint64_t kWrites = 4000;
  Options options = CreateOptions(name_);
  options.buffer_size = kSmallLog;
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);

  Workers readers;
  for (int i = 0; i < 2; ++i) {
    readers.push_back(SpawnWorker({"refresh-observe", name_, "w", std::to_string(kWrites)}));
    ASSERT_TRUE(readers.back()->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
  }
  Workers writer;
  writer.push_back(
      SpawnWorker({"write", name_, "w", std::to_string(kWrites), "--value-bytes=300"}));
  ExpectAllSucceed(writer);
  ExpectAllSucceed(readers);

  for (const auto& reader : readers) {
    uint64_t last = 0;
    uint64_t seen = 0;
    for (const std::string& line : reader->TakeLines()) {
      if (!line.starts_with("rev ")) continue;
      const uint64_t rev = NumberAfter(line, "rev ");
      ASSERT_GT(rev, last) << reader->description() << ": revisions went backwards";
      last = rev;
      ++seen;
    }
    EXPECT_EQ(last, kWrites) << reader->description();
    EXPECT_GT(seen, 0u) << reader->description();
  }
}

TEST_F(MultiProcessTest, AttacherAfterManyCompactionsSeesTheExactState) {
  constexpr uint64_t kSeed = 7;
  constexpr uint64_t kSteps = 6000;
  Options options = CreateOptions(name_);
  options.buffer_size = kSmallLog;
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  const uint64_t generation_before = dict->GetStatus().snapshot_generation.value();

  Workers churn;
  churn.push_back(SpawnWorker({"churn", name_, std::to_string(kSeed), std::to_string(kSteps)}));
  ExpectAllSucceed(churn);
  ASSERT_FALSE(HasFailure());
  const std::vector<std::string> expected = DigestLines(ChurnState(kSeed, kSteps));
  ASSERT_GE(dict->GetStatus().snapshot_generation, generation_before + 10)
      << "the churn was meant to compact the log many times";

  Workers attacher;
  attacher.push_back(SpawnWorker({"dump", name_}));
  ExpectAllSucceed(attacher);
  std::vector<std::string> dumped;
  for (const std::string& line : attacher[0]->TakeLines()) {
    if (line.starts_with("item ")) dumped.push_back(line);
  }
  EXPECT_EQ(dumped, expected) << "a process attaching after the compactions";

  // The creator's handle slept through every compaction; it must catch up to the same state.
  EXPECT_EQ(DigestLines(dict->Export()), expected) << "the creator's stale handle";
  Result<Dict> fresh = Dict::Open(AttachOptions(name_));
  ASSERT_OK(fresh);
  EXPECT_EQ(DigestLines(fresh->Export()), expected) << "a new handle in the creator's process";
}

TEST_F(MultiProcessTest, ValueHundredTimesTheLogSizeRoundTripsBetweenProcesses) {
  Options options = CreateOptions(name_);
  options.buffer_size = kSmallLog;
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  const uint64_t bytes = 100 * dict->GetStatus().log_capacity;
  ASSERT_GE(bytes, 100 * kSmallLog);

  Workers writer;
  writer.push_back(
      SpawnWorker({"bigvalue", name_, "big.from-worker", std::to_string(bytes), "1", "write"}));
  ExpectAllSucceed(writer);
  std::optional<Value> got = *dict->Get("big.from-worker");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->type(), ValueType::kBytes);
  EXPECT_EQ(got->data().size(), bytes);
  EXPECT_TRUE(got->data() == PatternBytes(bytes, 1)) << "the value arrived with other bytes";

  ASSERT_OK(dict->Set("big.from-test", Value::Bytes(PatternBytes(bytes, 2))));
  Workers reader;
  reader.push_back(
      SpawnWorker({"bigvalue", name_, "big.from-test", std::to_string(bytes), "2", "check"}));
  ExpectAllSucceed(reader);
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// Runs the `nested` worker on `name` and returns the child's and grandchild's names.
std::pair<std::string, std::string> CreateNestedInAnotherProcess(const std::string& name) {
  auto worker = SpawnWorker({"nested", name, "child", "10"});
  std::optional<std::string> child = worker->AwaitLine("child ", DeadlineIn(kWorkerTimeout));
  std::optional<std::string> grandchild =
      worker->AwaitLine("grandchild ", DeadlineIn(kWorkerTimeout));
  const ExitInfo exit = worker->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << "\n" << worker->output();
  if (!child || !grandchild) return {};
  return {child->substr(6), grandchild->substr(11)};
}

TEST_F(MultiProcessTest, NestedDictCreatedByAnotherProcessIsUnlinkedWithItsParent) {
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);
  const auto [child_name, grandchild_name] = CreateNestedInAnotherProcess(name_);
  ASSERT_FALSE(child_name.empty());
  EXPECT_TRUE(Exists(ShmPath(child_name))) << "the child died with the process that created it";
  EXPECT_TRUE(Exists(ShmPath(grandchild_name)));

  std::optional<Value> reference = *dict->Get("child");
  ASSERT_TRUE(reference.has_value());
  EXPECT_EQ(reference->type(), ValueType::kNestedDict);
  EXPECT_EQ(reference->AsText(), child_name);
  {
    Result<Dict> child = dict->OpenNested("child");
    ASSERT_OK(child);
    EXPECT_EQ(child->name(), child_name);
    EXPECT_EQ(*child->Size(), 11u) << "10 items and the grandchild's reference";
    std::optional<Value> item = *child->Get(KeyFor("c", 7));
    ASSERT_TRUE(item.has_value());
    EXPECT_TRUE(ValueMatchesIndex(item->view(), 7));
  }

  ASSERT_OK(Dict::UnlinkByName(name_));
  EXPECT_FALSE(Exists(ShmPath(name_)));
  EXPECT_FALSE(Exists(ShmPath(child_name))) << "the child outlived its parent";
  EXPECT_FALSE(Exists(ShmPath(grandchild_name))) << "the grandchild outlived its grandparent";
  EXPECT_EQ(ShmEntriesWithPrefix(name_), std::vector<std::string>{});
}

TEST_F(MultiProcessTest, NestedDictIsUnlinkedWhenTheCreatorClosesTheParent) {
  Result<Dict> dict = Dict::Open(CreateOptions(name_));  // auto_unlink
  ASSERT_OK(dict);
  const auto [child_name, grandchild_name] = CreateNestedInAnotherProcess(name_);
  ASSERT_FALSE(child_name.empty());
  ASSERT_TRUE(Exists(ShmPath(child_name)));

  ASSERT_OK(dict->Close());
  EXPECT_FALSE(Exists(ShmPath(name_)));
  EXPECT_FALSE(Exists(ShmPath(child_name))) << "the child outlived its parent";
  EXPECT_FALSE(Exists(ShmPath(grandchild_name))) << "the grandchild outlived its grandparent";
}

// Runs `open NAME MODE` in another process and returns its "open CODE created=X MSG" line.
std::string OpenInAnotherProcess(const std::string& name, const std::string& mode) {
  auto worker = SpawnWorker({"open", name, mode});
  std::optional<std::string> line = worker->AwaitLine("open ", DeadlineIn(kWorkerTimeout));
  const ExitInfo exit = worker->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
  return line.value_or("");
}

TEST_F(MultiProcessTest, MustCreateAndMustAttachAgreeAcrossProcesses) {
  const std::string missing = OpenInAnotherProcess(name_, "must-attach");
  EXPECT_TRUE(missing.starts_with("open NOT_FOUND created=0")) << missing;
  EXPECT_NE(missing.find(name_), std::string::npos) << "the error must name the dict: " << missing;

  EXPECT_EQ(OpenInAnotherProcess(name_, "must-create"), "open OK created=1");

  Result<Dict> again = Dict::Open(CreateOptions(name_));
  ASSERT_THAT(again, StatusIs(StatusCode::kAlreadyExists));
  EXPECT_NE(again.status().message().find(name_), std::string::npos) << again.status().ToString();

  Result<Dict> attached = Dict::Open(AttachOptions(name_));
  ASSERT_OK(attached);
  EXPECT_FALSE(attached->created());

  const std::string exists = OpenInAnotherProcess(name_, "must-create");
  EXPECT_TRUE(exists.starts_with("open ALREADY_EXISTS created=0")) << exists;
  EXPECT_EQ(OpenInAnotherProcess(name_, "attach-or-create"), "open OK created=0");
}

TEST_F(MultiProcessTest, ConcurrentMustCreateHasExactlyOneWinner) {
  constexpr int kRounds = 5;
  constexpr int kProcesses = 6;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = NewDictName();
    Workers workers;
    for (int i = 0; i < kProcesses; ++i) {
      workers.push_back(SpawnWorker({"open", name, "must-create", "--barrier"}));
    }
    ReleaseTogether(workers);
    ExpectAllSucceed(workers);
    int winners = 0;
    for (const auto& w : workers) {
      const std::vector<std::string> lines = w->TakeLines();
      ASSERT_EQ(lines.size(), 1u) << w->output();
      if (lines[0] == "open OK created=1") {
        ++winners;
      } else {
        EXPECT_TRUE(lines[0].starts_with("open ALREADY_EXISTS created=0")) << lines[0];
      }
    }
    EXPECT_EQ(winners, 1) << "round " << round;
  }
}

TEST_F(MultiProcessTest, ConcurrentAttachOrCreateAgreesOnOneDict) {
  constexpr int kRounds = 5;
  constexpr int kProcesses = 6;
  for (int round = 0; round < kRounds; ++round) {
    const std::string name = NewDictName();
    Workers workers;
    for (int i = 0; i < kProcesses; ++i) {
      workers.push_back(SpawnWorker(
          {"open", name, "attach-or-create", "--barrier", "--set=w" + std::to_string(i)}));
    }
    ReleaseTogether(workers);
    ExpectAllSucceed(workers);
    int creators = 0;
    for (const auto& w : workers) {
      const std::vector<std::string> lines = w->TakeLines();
      ASSERT_EQ(lines.size(), 2u) << w->output();
      if (lines[0] == "open OK created=1") {
        ++creators;
      } else {
        EXPECT_EQ(lines[0], "open OK created=0");
      }
      EXPECT_EQ(lines[1], "set OK");
    }
    EXPECT_EQ(creators, 1) << "round " << round;

    Result<Dict> dict = Dict::Open(AttachOptions(name));
    ASSERT_OK(dict);
    for (int i = 0; i < kProcesses; ++i) {
      std::optional<Value> v = *dict->Get("w" + std::to_string(i));
      ASSERT_TRUE(v.has_value()) << "round " << round << ": a process wrote into another dict";
      EXPECT_EQ(v->AsInt(), workers[i]->pid());
    }
  }
}

TEST_F(MultiProcessTest, UserLockMakesReadModifyWriteAtomicAcrossProcesses) {
  constexpr int kProcesses = 4;
  constexpr int kIterations = 500;
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);

  RunTogether(kProcesses, {"lockrmw", name_, "counter", std::to_string(kIterations)});

  std::optional<Value> counter = *dict->Get("counter");
  ASSERT_TRUE(counter.has_value());
  EXPECT_EQ(counter->AsInt(), kProcesses * kIterations)
      << "two processes were inside the lock at the same time";
}

TEST_F(MultiProcessTest, LockErrorsNameTheHolderPidOfAnotherProcess) {
  Options options = CreateOptions(name_);
  options.lock_timeout = milliseconds(300);
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);

  auto holder = SpawnWorker({"lockhold", name_});
  ASSERT_TRUE(holder->AwaitLine("locked ", DeadlineIn(kWorkerTimeout)));
  const std::string holder_pid = std::to_string(holder->pid());

  Result<LockGuard> tried = dict->TryLock();
  ASSERT_THAT(tried, StatusIs(StatusCode::kUnavailable));
  EXPECT_NE(tried.status().message().find(holder_pid), std::string::npos)
      << tried.status().ToString();

  Result<LockGuard> timed = dict->Lock(milliseconds(200));
  ASSERT_THAT(timed, StatusIs(StatusCode::kDeadlineExceeded));
  EXPECT_NE(timed.status().message().find(holder_pid), std::string::npos)
      << timed.status().ToString();

  Result<uint64_t> write = dict->Set("blocked", Value::Int(1));
  ASSERT_THAT(write, StatusIs(StatusCode::kDeadlineExceeded))
      << "a write went through while another process held the lock";
  EXPECT_NE(write.status().message().find(holder_pid), std::string::npos)
      << write.status().ToString();
  EXPECT_EQ(dict->GetStatus().lock_holder_pid, static_cast<uint32_t>(holder->pid()));

  ASSERT_TRUE(holder->SendLine("unlock"));
  ASSERT_TRUE(holder->AwaitLine("unlocked", DeadlineIn(kWorkerTimeout)));
  EXPECT_TRUE(holder->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());

  // The other direction: this process holds it, another process tries.
  Result<LockGuard> mine = dict->Lock(seconds(5));
  ASSERT_OK(mine);
  {
    auto trier = SpawnWorker({"trylock", name_});
    std::optional<std::string> line = trier->AwaitLine("trylock ", DeadlineIn(kWorkerTimeout));
    ASSERT_TRUE(line.has_value());
    EXPECT_TRUE(line->starts_with("trylock UNAVAILABLE")) << *line;
    EXPECT_NE(line->find(std::to_string(getpid())), std::string::npos) << *line;
    EXPECT_TRUE(trier->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
  }
  mine->Unlock();
  auto trier = SpawnWorker({"trylock", name_});
  EXPECT_EQ(trier->AwaitLine("trylock ", DeadlineIn(kWorkerTimeout)), "trylock OK");
  EXPECT_TRUE(trier->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
}

TEST_F(MultiProcessTest, WaitForChangeWakesWhenAnotherProcessWrites) {
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);
  const uint64_t before = dict->revision();

  const auto start = Clock::now();
  Result<uint64_t> idle = dict->WaitForChange(before, milliseconds(200));
  const auto idle_elapsed = Clock::now() - start;
  ASSERT_THAT(idle, StatusIs(StatusCode::kDeadlineExceeded)) << "woke up although nobody wrote";
  EXPECT_GE(idle_elapsed, milliseconds(190));
  EXPECT_LT(idle_elapsed, seconds(5));

  auto writer = SpawnWorker({"set", name_, "k", "42", "--barrier"});
  ASSERT_TRUE(writer->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
  ASSERT_TRUE(writer->SendLine("go"));
  const auto wait_start = Clock::now();
  Result<uint64_t> woke = dict->WaitForChange(before, seconds(30));
  ASSERT_OK(woke);
  EXPECT_LT(Clock::now() - wait_start, seconds(10))
      << "woken by the timeout, not by the other process's write";
  EXPECT_GT(*woke, before);
  std::optional<Value> k = *dict->Get("k");
  ASSERT_TRUE(k.has_value());
  EXPECT_EQ(k->AsInt(), 42);
  EXPECT_TRUE(writer->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
}

TEST_F(MultiProcessTest, ProcessBlockedInWaitForChangeWakesOnAWriteFromThisProcess) {
  Result<Dict> dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);
  const uint64_t before = dict->revision();

  auto waiter = SpawnWorker({"wait", name_, std::to_string(before), "30000"});
  ASSERT_TRUE(waiter->AwaitLine("waiting", DeadlineIn(kWorkerTimeout)));
  // Write only once the other process is really asleep, so the wake-up path is what is tested.
  EXPECT_TRUE(AwaitBlockedInFutex(waiter->pid(), DeadlineIn(seconds(10))))
      << "WaitForChange did not block in a futex wait";

  Result<uint64_t> rev = dict->Set("k", Value::Int(1));
  ASSERT_OK(rev);
  std::optional<std::string> line = waiter->AwaitLine("changed ", DeadlineIn(seconds(10)));
  ASSERT_TRUE(line.has_value()) << "the waiter was not woken";
  EXPECT_EQ(NumberAfter(*line, "changed "), *rev);
  EXPECT_TRUE(waiter->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
}

TEST_F(MultiProcessTest, WriterHoldingTheUserLockCanWriteMoreThanTheLogHolds) {
  Options options = CreateOptions(name_);
  options.buffer_size = kSmallLog;
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  for (const char* mode : {"--inline-compaction", "--lock-timeout-ms=10000"}) {
    SCOPED_TRACE(mode);
    const std::string prefix = std::string("w") + (mode[2] == 'i' ? "i" : "b");
    Workers writer;
    // ~1.4 MB under one Lock(): the log must be compacted while the lock is held.
    writer.push_back(
        SpawnWorker({"write", name_, prefix, "2000", "--value-bytes=700", "--hold-lock", mode}));
    const auto start = Clock::now();
    ExpectAllSucceed(writer);
    EXPECT_LT(Clock::now() - start, seconds(5)) << "writes stalled while the lock was held";
    std::optional<Value> last = *dict->Get(KeyFor(prefix, 1999));
    ASSERT_TRUE(last.has_value());
    EXPECT_TRUE(ValueMatchesIndex(last->view(), 1999));
  }
}

}  // namespace
}  // namespace shmdict::testing
