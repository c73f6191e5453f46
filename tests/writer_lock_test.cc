// The writer lock between processes that share /dev/shm but not a pid namespace (the containers
// of a pod: each one's first process is pid 1, so thread ids collide), and across fork. Every
// namespaced worker runs as pid 1 of a pid namespace of its own (`unshare --pid --fork`), and
// says so. docs/WRITER_LOCK.md has the failure analysis these tests follow.
//
// The random choices come from one seed per test, printed on failure; set SHMDICT_TEST_SEED to
// replay a run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
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

constexpr const char* kUnshare = "/usr/bin/unshare";
constexpr uint64_t kSmallLog = 64 * 1024;  // snapshots every few hundred writes
constexpr milliseconds kLockTimeout = seconds(5);
constexpr const char* kForever = "100000000";  // a COUNT the writer never reaches before its kill

// A worker as pid 1 of a pid namespace of its own. The WorkerProcess is `unshare`, whose only
// child is the worker; --kill-child takes the worker down with unshare.
std::unique_ptr<WorkerProcess> SpawnInOwnPidNamespace(std::vector<std::string> args) {
  std::vector<std::string> argv = {"--pid", "--fork", "--kill-child", WorkerProgram()};
  argv.insert(argv.end(), args.begin(), args.end());
  return std::make_unique<WorkerProcess>(kUnshare, std::move(argv));
}

// The namespaced worker's pid as this test's namespace numbers it (unshare's child), for signals
// and /proc; -1 if it did not appear before the deadline.
pid_t OuterPid(const WorkerProcess& unshare) {
  const std::string path = "/proc/" + std::to_string(unshare.pid()) + "/task/" +
                           std::to_string(unshare.pid()) + "/children";
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  while (Clock::now() < deadline) {
    std::ifstream children(path);
    pid_t pid = -1;
    if (children >> pid && pid > 0) return pid;
    std::this_thread::yield();
  }
  return -1;
}

// SIGKILLs the worker itself (not unshare) and waits until unshare, which waits for it, is gone:
// the worker is dead when this returns.
void KillNamespacedWorker(WorkerProcess& unshare, pid_t outer_pid) {
  ASSERT_GT(outer_pid, 0);
  kill(outer_pid, SIGKILL);
  const ExitInfo exit = unshare.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_FALSE(exit.timed_out) << unshare.description();
}

class WriterLockTest : public DictTestBase {
 protected:
  void SetUp() override {
    // Permitted on these machines and in CI (root); elsewhere the tests say why they skip.
    WorkerProcess probe(kUnshare, {"--pid", "--fork", "/bin/true"});
    const ExitInfo exit = probe.Wait(DeadlineIn(kWorkerTimeout));
    if (!exit.Succeeded()) {
      GTEST_SKIP() << "`unshare --pid --fork` is not permitted here (" << exit.ToString()
                   << "; needs CAP_SYS_ADMIN): the pid-namespace tests cannot run";
    }
  }

  Options LockOptions(uint64_t buffer_size = uint64_t{4} << 20) const {
    Options options = CreateOptions(name_);
    options.buffer_size = buffer_size;
    options.lock_timeout = kLockTimeout;
    return options;
  }

  // Waits for "pid 1": the worker really is the first process of its own namespace, so its
  // thread id collides with every other namespaced worker's.
  void ExpectPidOne(WorkerProcess& worker) {
    auto line = worker.AwaitLine("pid ", DeadlineIn(kWorkerTimeout));
    ASSERT_TRUE(line.has_value()) << worker.output();
    EXPECT_EQ(*line, "pid 1") << worker.description();
  }

  void CountExactlyFromProcessesInTheirOwnNamespaces(int processes) {
    Result<Dict> dict = Dict::Open(LockOptions());
    ASSERT_OK(dict);
    constexpr int kIncrements = 2000;
    std::vector<std::unique_ptr<WorkerProcess>> workers;
    for (int i = 0; i < processes; ++i) {
      workers.push_back(SpawnInOwnPidNamespace(
          {"incr", name_, "counter", std::to_string(kIncrements), "--print-pid", "--barrier"}));
    }
    for (auto& w : workers) {
      ASSERT_NO_FATAL_FAILURE(ExpectPidOne(*w));
      ASSERT_TRUE(w->AwaitLine("ready", DeadlineIn(kWorkerTimeout)));
    }
    for (auto& w : workers) w->SendLine("go");  // all contend from the first increment on
    std::vector<WorkerProcess*> all;
    for (auto& w : workers) all.push_back(w.get());
    for (const ExitInfo& exit : WaitAll(all, DeadlineIn(kWorkerTimeout))) {
      EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
    }
    std::optional<Value> total = *dict->Get("counter");
    ASSERT_TRUE(total.has_value());
    EXPECT_EQ(total->AsInt(), std::optional<int64_t>(int64_t{processes} * kIncrements))
        << "an update was lost";
  }
};

TEST_F(WriterLockTest, TwoProcessesEachPidOneOfItsOwnNamespaceCountExactly) {
  CountExactlyFromProcessesInTheirOwnNamespaces(2);
}

TEST_F(WriterLockTest, FourProcessesEachPidOneOfItsOwnNamespaceCountExactly) {
  CountExactlyFromProcessesInTheirOwnNamespaces(4);
}

// The interleaving that breaks a glibc robust mutex with colliding ids: a waiter with the
// holder's thread id is SIGKILLed in its wait, and the kernel marks the holder's lock dead.
TEST_F(WriterLockTest, WaiterKilledInAnotherPidNamespaceLeavesTheHolderItsLock) {
  Result<Dict> dict = Dict::Open(LockOptions());
  ASSERT_OK(dict);
  auto holder = SpawnInOwnPidNamespace({"lockhold", name_, "--print-pid"});
  ASSERT_NO_FATAL_FAILURE(ExpectPidOne(*holder));
  ASSERT_TRUE(holder->AwaitLine("locked", DeadlineIn(kWorkerTimeout)));

  auto waiter = SpawnInOwnPidNamespace({"lockwait", name_, "600000", "--print-pid"});
  ASSERT_NO_FATAL_FAILURE(ExpectPidOne(*waiter));
  ASSERT_TRUE(waiter->AwaitLine("waiting", DeadlineIn(kWorkerTimeout)));
  const pid_t waiter_pid = OuterPid(*waiter);
  ASSERT_TRUE(AwaitBlockedInFutex(waiter_pid, DeadlineIn(kWorkerTimeout)))
      << "the waiter never blocked on the lock";
  ASSERT_NO_FATAL_FAILURE(KillNamespacedWorker(*waiter, waiter_pid));

  // The holder still holds it: nobody else may get it, from any namespace.
  Result<LockGuard> try_here = dict->TryLock();
  EXPECT_EQ(try_here.status().code(), StatusCode::kUnavailable) << try_here.status().ToString();
  auto third = SpawnInOwnPidNamespace({"lockwait", name_, "300"});
  auto answer = third->AwaitLine("lock", DeadlineIn(kWorkerTimeout));
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(answer->starts_with("lock DEADLINE_EXCEEDED")) << *answer;
  EXPECT_TRUE(third->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());

  // Errors and status say where the holder is instead of naming a pid that means nothing here.
  EXPECT_NE(try_here.status().message().find("another pid namespace"), std::string::npos)
      << try_here.status().message();
  const DictStatus status = dict->GetStatus();
  EXPECT_TRUE(status.lock_held);
  EXPECT_EQ(status.lock_holder_pid, 1u);
  EXPECT_EQ(status.lock_holder_in_this_pid_namespace, false);
  EXPECT_NE(status.lock_holder_pid_namespace, 0u);

  ASSERT_TRUE(holder->SendLine("unlock"));
  ASSERT_TRUE(holder->AwaitLine("unlocked", DeadlineIn(kWorkerTimeout)));
  EXPECT_TRUE(holder->Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
  EXPECT_OK(dict->Lock(seconds(1)));
  EXPECT_EQ(dict->GetStatus().lock_recoveries, 0u) << "nobody died holding the lock";
}

// A writer in one namespace is SIGKILLed at random points — inside its writes, inside a user
// Lock() it never releases, and inside inline snapshot builds (a 64 KiB log builds one every few
// hundred writes) — while a writer in another namespace contends for the lock. The contender
// always finishes within the lock timeout and every write the dead writer acknowledged survives.
TEST_F(WriterLockTest, HolderKilledAtRandomPointsInOneNamespaceNeverBlocksAWriterInAnother) {
  SCOPED_TRACE(SeedTrace());
  Result<Dict> dict = Dict::Open(LockOptions(kSmallLog));
  ASSERT_OK(dict);
  const int kills = Scaled(50);
  for (int round = 0; round < kills && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string victim_prefix = "v" + std::to_string(round);
    const std::string contender_prefix = "c" + std::to_string(round);
    std::vector<std::string> victim_args = {
        "write", name_, victim_prefix, kForever, "--value-bytes=96", "--print-pid"};
    if (round % 2 == 1) victim_args.push_back("--inline-compaction");
    if (round % 5 == 4) victim_args.push_back("--hold-lock");
    auto victim = SpawnInOwnPidNamespace(victim_args);
    ASSERT_NO_FATAL_FAILURE(ExpectPidOne(*victim));
    const pid_t victim_pid = OuterPid(*victim);
    auto contender =
        SpawnInOwnPidNamespace({"write", name_, contender_prefix, "200",
                                "--lock-timeout-ms=" + std::to_string(kLockTimeout.count())});

    // Let the victim acknowledge a random number of writes, then kill it wherever it is.
    const int acks = static_cast<int>(Random(600));
    int64_t acked = -1;
    auto take_ack = [&](const std::string& line) {
      if (line.starts_with("error")) ADD_FAILURE() << victim->description() << ": " << line;
      if (line.starts_with("acked ")) acked = std::strtoll(line.c_str() + 6, nullptr, 10);
    };
    std::string line;
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    while (acked + 1 < acks && victim->ReadLine(&line, deadline) == LineStatus::kLine) {
      take_ack(line);
    }
    ASSERT_NO_FATAL_FAILURE(KillNamespacedWorker(*victim, victim_pid));
    for (const std::string& rest : victim->TakeLines()) take_ack(rest);

    const ExitInfo contender_exit = contender->Wait(DeadlineIn(kWorkerTimeout));
    EXPECT_TRUE(contender_exit.Succeeded()) << contender_exit.ToString() << "; output:\n"
                                            << contender->output();

    ASSERT_OK(dict->Refresh());
    Value value;
    for (int64_t i = 0; i <= acked; ++i) {
      ASSERT_TRUE(*dict->Get(KeyFor(victim_prefix, i), &value))
          << "acknowledged write " << KeyFor(victim_prefix, i) << " was lost";
      ASSERT_TRUE(ValueMatchesIndex(value.view(), i));
    }
    for (int64_t i = 0; i < 200; ++i) {
      ASSERT_TRUE(*dict->Get(KeyFor(contender_prefix, i), &value))
          << "the contender's write " << KeyFor(contender_prefix, i) << " is missing";
    }
  }
  EXPECT_GT(dict->GetStatus().snapshots_built, 0u) << "no round reached a snapshot build";
}

// Fork: a child inherits its parent's descriptors, but must not inherit its lock or its
// liveness. (Plain fork here, as Python's multiprocessing does; the child only touches the
// inherited handle and leaves with _exit.)
TEST_F(WriterLockTest, ForkedChildOfAHolderDoesNotHoldTheLock) {
  Result<Dict> dict = Dict::Open(LockOptions());
  ASSERT_OK(dict);
  Result<LockGuard> guard = dict->Lock();
  ASSERT_OK(guard);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The inherited guard's depth is the parent's: a write must wait for the parent's lock
    // (and give up after its timeout), not slip in as if it held it.
    Result<LockGuard> again = dict->TryLock();
    _exit(again.status().code() == StatusCode::kUnavailable ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child could take the lock its parent holds";
  EXPECT_TRUE(dict->GetStatus().lock_held);
  EXPECT_OK(dict->Set("parent", Value::Int(1))) << "the parent still holds its lock";
}

TEST_F(WriterLockTest, ForkedChildKilledHoldingTheLockDoesNotBlockItsParent) {
  Options options = LockOptions();
  options.lock_timeout = seconds(60);  // a missed death would be a 60 s DEADLINE_EXCEEDED
  Result<Dict> dict = Dict::Open(options);
  ASSERT_OK(dict);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    Result<LockGuard> guard = dict->Lock();
    const char ok = guard.ok() ? 'y' : 'n';
    (void)!write(ready[1], &ok, 1);
    pause();  // holds the lock until SIGKILLed
    _exit(0);
  }
  close(ready[1]);
  char answer = 0;
  ASSERT_EQ(read(ready[0], &answer, 1), 1);
  close(ready[0]);
  ASSERT_EQ(answer, 'y') << "the child could not take the lock";
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  Result<uint64_t> rev = dict->Set("after", Value::Int(1));
  ASSERT_OK(rev) << " (the parent's own liveness must not vouch for its dead child)";
  EXPECT_EQ(dict->GetStatus().lock_recoveries, 1u);
}

// The child of a process whose handle had its snapshot builder running writes enough to need
// builds of its own, and closes: it must neither wait for the parent's builder thread (which does
// not exist in the child) nor be left without one.
TEST_F(WriterLockTest, ForkedChildOfAProcessWithARunningBuilderWritesAndCloses) {
  Result<Dict> dict = Dict::Open(LockOptions(kSmallLog));
  ASSERT_OK(dict);
  // Past a sixteenth of the log: the builder thread starts and watches for writers to pause.
  for (int i = 0; i < 200; ++i) ASSERT_OK(dict->Set(KeyFor("p", i), ValueFor(i, 96)));
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Exit codes tell which step failed: 1 a write, 2 no snapshot was built, 3 Close().
    for (int i = 0; i < 3000; ++i) {
      if (!dict->Set(KeyFor("c", i), ValueFor(i, 96)).ok()) _exit(1);
    }
    if (dict->GetStatus().snapshots_built == 0) _exit(2);
    _exit(dict->Close().ok() ? 0 : 3);
  }
  int status = 0;
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  pid_t reaped = 0;
  while ((reaped = waitpid(child, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));  // polling a child's exit, not synchronizing
  }
  if (reaped == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the forked child hung (joining its parent's builder thread?)";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: a write failed, 2: no snapshot, 3: Close() failed";
  ASSERT_OK(dict->Refresh());
  EXPECT_TRUE(*dict->Contains(KeyFor("c", 2999)));
}

}  // namespace
}  // namespace shmdict::testing
