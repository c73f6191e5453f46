// WorkerProcess: a real, unrelated helper process for a test: a Subprocess (subprocess.h:
// posix_spawn + exec, stdout captured line by line, a stdin pipe, deadlines) whose failures are
// gtest failures. A worker that does not answer in time is SIGKILLed, reaped and reported as a
// test failure, so a broken engine fails the test instead of hanging it.
//
//   auto worker = SpawnWorker({"incr", name, "counter", "1000"});
//   ExitInfo exit = worker->Wait(DeadlineIn(kWorkerTimeout));
//   EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
//
// A stdin pipe lets tests release workers (barriers, "unlock") without sleeps.
//
// Thread-safety: thread-compatible; use a WorkerProcess from one thread. Lifetime: destroying a
// WorkerProcess that still runs SIGKILLs and reaps it, so no test leaves processes behind.
#ifndef SHMDICT_TESTS_SUPPORT_WORKER_PROCESS_H_
#define SHMDICT_TESTS_SUPPORT_WORKER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "subprocess.h"

namespace shmdict::testing {

using internal::Clock;
using internal::Deadline;
using internal::DeadlineIn;
using internal::ExitInfo;
using internal::LineStatus;

// Generous: CI machines are slow and loaded; a correct worker finishes far sooner.
inline constexpr std::chrono::seconds kWorkerTimeout{60};

class WorkerProcess {
 public:
  // Starts `program` with `args` (argv[1..]) and this process's environment plus `env`
  // ("NAME=value"). A failure to start is a test failure (ADD_FAILURE) and leaves pid() == -1;
  // every other call then behaves as for a dead worker.
  WorkerProcess(const std::string& program, std::vector<std::string> args,
                std::vector<std::string> env = {});
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;
  ~WorkerProcess();

  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }
  // "pid 123: shmdict_worker incr d counter 10", for failure messages.
  const std::string& description() const { return description_; }
  bool reaped() const { return process_ != nullptr && process_->reaped(); }
  // The process itself; null when it could not be started.
  internal::Subprocess* subprocess() const { return process_.get(); }

  // The next complete stdout line, without its '\n'. kEof when stdout is closed and no complete
  // line is left; kTimeout when the deadline passed first (not a test failure by itself).
  LineStatus ReadLine(std::string* line, Deadline deadline);
  // Reads lines until one starts with `prefix` and returns it. A line starting with "error"
  // (the worker's failure report), EOF or the deadline is a test failure and returns nullopt.
  std::optional<std::string> AwaitLine(std::string_view prefix, Deadline deadline);
  // Every complete line not yet returned by ReadLine/AwaitLine, plus an unterminated last line.
  std::vector<std::string> TakeLines();
  // Everything the worker printed so far (for failure messages).
  const std::string& output() const { return process_ != nullptr ? process_->output() : kNoOutput; }

  // Writes `line` + '\n' to the worker's stdin. False if the worker closed it.
  bool SendLine(std::string_view line);
  void CloseStdin();

  // As Subprocess::Signal and Subprocess::Wait; a worker still running at the deadline is also
  // a test failure.
  void Signal(int sig);
  ExitInfo Wait(Deadline deadline);
  // SIGKILL, then Wait. The output printed before death stays readable (TakeLines).
  ExitInfo KillAndWait();

 private:
  std::unique_ptr<internal::Subprocess> process_;
  std::string description_;
  static const std::string kNoOutput;
};

// Waits for all workers together (draining every pipe, so none blocks on a full pipe), with one
// deadline; at the deadline each unfinished worker is SIGKILLed and reported as a test failure.
std::vector<ExitInfo> WaitAll(const std::vector<WorkerProcess*>& workers, Deadline deadline);

// Reads whatever output and exits the workers have until `until` or until one of them changes
// state (new output, exit). Lower-level than WaitAll; for tests that watch several at once.
void Pump(const std::vector<WorkerProcess*>& workers, Deadline until);

// Blocks until `pid`'s main thread sleeps in a futex syscall (read from /proc/PID/syscall),
// or the deadline passes; false then. Lets a test act only once another process is really blocked
// in a wait, instead of guessing with a sleep.
bool AwaitBlockedInFutex(pid_t pid, Deadline deadline);

#ifdef SHMDICT_WORKER_DIR
// The worker program built from tests/workers/shmdict_worker.cc.
inline std::string WorkerProgram() { return std::string(SHMDICT_WORKER_DIR) + "/shmdict_worker"; }

inline std::unique_ptr<WorkerProcess> SpawnWorker(std::vector<std::string> args,
                                                  std::vector<std::string> env = {}) {
  return std::make_unique<WorkerProcess>(WorkerProgram(), std::move(args), std::move(env));
}
#endif

}  // namespace shmdict::testing

#endif  // SHMDICT_TESTS_SUPPORT_WORKER_PROCESS_H_
