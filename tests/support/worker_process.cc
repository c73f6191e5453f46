#include "worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

extern char** environ;

namespace shmdict::testing {
namespace {

// Milliseconds until `deadline`, clamped to [0, INT_MAX/2] for poll(2).
int MillisUntil(Deadline deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  // Round up so that poll does not return just before the deadline and spin.
  return static_cast<int>(std::clamp<long long>(left + 1, 0, 1 << 30));
}

int PidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  const long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
    return static_cast<int>(fd);
  }
#else
  (void)pid;
#endif
  return -1;  // older kernel: fall back to short poll slices + waitpid(WNOHANG)
}

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : std::to_string(sig);
}

}  // namespace

std::string ExitInfo::ToString() const {
  if (!reaped) return "not reaped";
  std::string s =
      exited ? "exited with code " + std::to_string(exit_code) : "killed by " + SignalName(signal);
  if (timed_out) s += " (SIGKILLed at the deadline)";
  return s;
}

WorkerProcess::WorkerProcess(const std::string& program, std::vector<std::string> args) {
  description_ = program.substr(program.rfind('/') + 1);
  for (const std::string& a : args) description_ += " " + a;

  int out_pipe[2] = {-1, -1};
  int in_pipe[2] = {-1, -1};
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(in_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    for (int fd : {out_pipe[0], out_pipe[1], in_pipe[0], in_pipe[1]}) {
      if (fd >= 0) close(fd);
    }
    return;
  }

  std::vector<std::string> argv_storage;
  argv_storage.push_back(program);
  for (std::string& a : args) argv_storage.push_back(std::move(a));
  std::vector<char*> argv;
  for (std::string& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the target descriptor only; stderr is inherited so that a
  // worker's diagnostics land in the test log.
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << program << ": " << strerror(rc);
    close(in_pipe[1]);
    close(out_pipe[0]);
    return;
  }
  pid_ = pid;
  stdout_fd_ = out_pipe[0];
  stdin_fd_ = in_pipe[1];
  pidfd_ = PidfdOpen(pid);
  // Writing to a worker that died must fail with EPIPE, not kill the test with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  description_ = "pid " + std::to_string(pid_) + ": " + description_;
}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  CloseFd(&stdout_fd_);
  CloseFd(&stdin_fd_);
  CloseFd(&pidfd_);
}

void WorkerProcess::CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

void WorkerProcess::ReadAvailable() {
  if (stdout_fd_ < 0) return;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(stdout_fd_, buf, sizeof(buf));
    if (n > 0) {
      output_.append(buf, static_cast<size_t>(n));
      // Keep reading only while the pipe is full; otherwise go back to poll.
      if (static_cast<size_t>(n) < sizeof(buf)) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    CloseFd(&stdout_fd_);  // EOF, or an error that would repeat forever
    return;
  }
}

void WorkerProcess::TryReap() {
  if (pid_ <= 0 || reaped_) return;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    CloseFd(&pidfd_);
  } else if (r < 0) {
    ADD_FAILURE() << description_ << ": waitpid: " << strerror(errno);
    reaped_ = true;
    wait_status_ = -1;
  }
}

void Pump(const std::vector<WorkerProcess*>& workers, Deadline until) {
  std::vector<pollfd> fds;
  std::vector<std::pair<WorkerProcess*, bool>> owners;  // (worker, is_stdout)
  bool need_slices = false;
  for (WorkerProcess* w : workers) {
    if (w->stdout_fd_ >= 0) {
      fds.push_back({w->stdout_fd_, POLLIN, 0});
      owners.emplace_back(w, true);
    }
    if (w->pid_ > 0 && !w->reaped_) {
      if (w->pidfd_ >= 0) {
        fds.push_back({w->pidfd_, POLLIN, 0});
        owners.emplace_back(w, false);
      } else {
        need_slices = true;
      }
    }
  }
  int timeout = MillisUntil(until);
  if (need_slices) timeout = std::min(timeout, 5);
  const int n = poll(fds.data(), fds.size(), timeout);
  if (n < 0 && errno != EINTR) {
    ADD_FAILURE() << "poll: " << strerror(errno);
    return;
  }
  for (size_t i = 0; i < fds.size() && n > 0; ++i) {
    if (fds[i].revents == 0) continue;
    if (owners[i].second) {
      owners[i].first->ReadAvailable();
    } else {
      owners[i].first->TryReap();
    }
  }
  if (need_slices) {
    for (WorkerProcess* w : workers) w->TryReap();
  }
}

LineStatus WorkerProcess::ReadLine(std::string* line, Deadline deadline) {
  for (;;) {
    const size_t nl = output_.find('\n', consumed_);
    if (nl != std::string::npos) {
      line->assign(output_, consumed_, nl - consumed_);
      consumed_ = nl + 1;
      return LineStatus::kLine;
    }
    if (stdout_fd_ < 0) return LineStatus::kEof;
    if (Clock::now() >= deadline) return LineStatus::kTimeout;
    Pump({this}, deadline);
  }
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
                      << output_;
        return std::nullopt;
      case LineStatus::kTimeout:
        ADD_FAILURE() << description_ << ": no line starting with '" << prefix
                      << "' before the deadline; output:\n"
                      << output_;
        return std::nullopt;
    }
  }
}

std::vector<std::string> WorkerProcess::TakeLines() {
  ReadAvailable();
  std::vector<std::string> lines;
  while (consumed_ < output_.size()) {
    size_t nl = output_.find('\n', consumed_);
    if (nl == std::string::npos) nl = output_.size();
    lines.push_back(output_.substr(consumed_, nl - consumed_));
    consumed_ = std::min(nl + 1, output_.size());
  }
  return lines;
}

bool WorkerProcess::SendLine(std::string_view line) {
  if (stdin_fd_ < 0) return false;
  std::string data(line);
  data += '\n';
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = write(stdin_fd_, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

void WorkerProcess::CloseStdin() { CloseFd(&stdin_fd_); }

void WorkerProcess::Signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

ExitInfo WorkerProcess::Wait(Deadline deadline) { return WaitAll({this}, deadline)[0]; }

ExitInfo WorkerProcess::KillAndWait() {
  Signal(SIGKILL);
  return Wait(DeadlineIn(kWorkerTimeout));
}

std::vector<ExitInfo> WaitAll(const std::vector<WorkerProcess*>& workers, Deadline deadline) {
  for (;;) {
    bool all_done = true;
    for (WorkerProcess* w : workers) all_done = all_done && (w->pid_ <= 0 || w->Done());
    if (all_done || Clock::now() >= deadline) break;
    Pump(workers, deadline);
  }
  std::vector<ExitInfo> result;
  for (WorkerProcess* w : workers) {
    ExitInfo info;
    if (w->pid_ <= 0) {
      result.push_back(info);
      continue;
    }
    if (!w->Done()) {
      ADD_FAILURE() << w->description_ << ": still running at the deadline; SIGKILLing it. "
                    << "Output:\n"
                    << w->output_;
      info.timed_out = true;
      kill(w->pid_, SIGKILL);
      if (!w->reaped_) {
        int status = 0;
        while (waitpid(w->pid_, &status, 0) < 0 && errno == EINTR) {
        }
        w->reaped_ = true;
        w->wait_status_ = status;
        w->CloseFd(&w->pidfd_);
      }
      w->ReadAvailable();
      w->CloseFd(&w->stdout_fd_);
    }
    info.reaped = w->wait_status_ != -1;
    if (info.reaped) {
      info.exited = WIFEXITED(w->wait_status_);
      info.exit_code = info.exited ? WEXITSTATUS(w->wait_status_) : -1;
      info.signal = WIFSIGNALED(w->wait_status_) ? WTERMSIG(w->wait_status_) : 0;
    }
    result.push_back(info);
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
