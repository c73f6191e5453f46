#include "worker_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>

#include "gtest/gtest.h"

namespace shmdict::testing {
namespace {

// The started ones among `workers`, in order.
std::vector<internal::Subprocess*> Processes(const std::vector<WorkerProcess*>& workers) {
  std::vector<internal::Subprocess*> processes;
  for (WorkerProcess* w : workers) {
    if (w->subprocess() != nullptr) processes.push_back(w->subprocess());
  }
  return processes;
}

}  // namespace

const std::string WorkerProcess::kNoOutput;

WorkerProcess::WorkerProcess(const std::string& program, std::vector<std::string> args,
                             std::vector<std::string> env) {
  description_ = program.substr(program.rfind('/') + 1);
  for (const std::string& a : args) description_ += " " + a;
  internal::SpawnOptions options;
  options.path = program;
  options.argv.push_back(program);
  for (std::string& a : args) options.argv.push_back(std::move(a));
  options.env = std::move(env);
  // stderr is inherited, so that a worker's diagnostics land in the test log.
  options.pipe_stdin = true;
  options.pipe_stdout = true;
  std::string error;
  process_ = internal::Subprocess::Start(options, &error);
  if (process_ == nullptr) {
    ADD_FAILURE() << error;
    return;
  }
  // Writing to a worker that died must fail with EPIPE, not kill the test with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  description_ = "pid " + std::to_string(pid()) + ": " + description_;
}

WorkerProcess::~WorkerProcess() = default;

void Pump(const std::vector<WorkerProcess*>& workers, Deadline until) {
  internal::Pump(Processes(workers), until);
}

LineStatus WorkerProcess::ReadLine(std::string* line, Deadline deadline) {
  return process_ != nullptr ? process_->ReadLine(line, deadline) : LineStatus::kEof;
}

std::optional<std::string> WorkerProcess::AwaitLine(std::string_view prefix, Deadline deadline) {
  std::string line;
  for (;;) {
    switch (ReadLine(&line, deadline)) {
      case LineStatus::kLine:
        if (line.starts_with(prefix)) return line;
        if (line.starts_with("error")) {
          ADD_FAILURE() << description_ << " reported: " << line;
          return std::nullopt;
        }
        break;
      case LineStatus::kEof:
        ADD_FAILURE() << description_ << ": stdout closed before a line starting with '" << prefix
                      << "'; output:\n"
                      << output();
        return std::nullopt;
      case LineStatus::kTimeout:
        ADD_FAILURE() << description_ << ": no line starting with '" << prefix
                      << "' before the deadline; output:\n"
                      << output();
        return std::nullopt;
    }
  }
}

std::vector<std::string> WorkerProcess::TakeLines() {
  return process_ != nullptr ? process_->TakeLines() : std::vector<std::string>{};
}

bool WorkerProcess::SendLine(std::string_view line) {
  return process_ != nullptr && process_->WriteLine(line);
}

void WorkerProcess::CloseStdin() {
  if (process_ != nullptr) process_->CloseStdin();
}

void WorkerProcess::Signal(int sig) {
  if (process_ != nullptr) process_->Signal(sig);
}

ExitInfo WorkerProcess::Wait(Deadline deadline) { return WaitAll({this}, deadline)[0]; }

ExitInfo WorkerProcess::KillAndWait() {
  Signal(SIGKILL);
  return Wait(DeadlineIn(kWorkerTimeout));
}

std::vector<ExitInfo> WaitAll(const std::vector<WorkerProcess*>& workers, Deadline deadline) {
  const std::vector<ExitInfo> exits = internal::WaitAll(Processes(workers), deadline);
  std::vector<ExitInfo> result;
  size_t next = 0;
  for (WorkerProcess* w : workers) {
    if (w->subprocess() == nullptr) {
      result.emplace_back();
      continue;
    }
    const ExitInfo& exit = exits[next++];
    if (exit.timed_out) {
      ADD_FAILURE() << w->description() << ": still running at the deadline; SIGKILLed it. "
                    << "Output:\n"
                    << w->output();
    } else if (!exit.reaped) {
      ADD_FAILURE() << w->description() << ": waitpid failed";
    }
    result.push_back(exit);
  }
  return result;
}

bool AwaitBlockedInFutex(pid_t pid, Deadline deadline) {
  const std::string path =
      "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/syscall";
  for (;;) {
    std::ifstream in(path);
    long nr = -1;
    if (in >> nr) {
#ifdef SYS_futex_waitv
      if (nr == SYS_futex_waitv) return true;
#endif
      if (nr == SYS_futex) return true;
    }
    if (Clock::now() >= deadline) return false;
    // Polling /proc is the only way to observe another process's syscall; 1 ms slices keep the
    // cost negligible while the deadline bounds the wait.
    poll(nullptr, 0, 1);
  }
}

}  // namespace shmdict::testing
