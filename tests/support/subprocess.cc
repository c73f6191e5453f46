#include "subprocess.h"

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
#include <climits>
#include <cstdlib>

extern char** environ;

namespace shmdict::internal {
namespace {

// Milliseconds until `deadline`, clamped to [0, 2^30] for poll(2).
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

void CloseFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

// Our environment with `additions` added, an addition replacing a variable of the same name.
std::vector<std::string> Environment(const std::vector<std::string>& additions) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view name = entry.substr(0, entry.find('=') + 1);
    const bool replaced = std::any_of(additions.begin(), additions.end(), [&](const auto& x) {
      return std::string_view(x).substr(0, x.find('=') + 1) == name;
    });
    if (!replaced) env.emplace_back(entry);
  }
  env.insert(env.end(), additions.begin(), additions.end());
  return env;
}

std::vector<char*> Pointers(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// The path a child must exec: "/proc/self/exe" means this binary, which must be resolved here
// because the child may exec the trampoline first (whose /proc/self/exe is the trampoline).
std::string ResolvedPath(const std::string& path) {
  if (path != "/proc/self/exe") return path;
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf);
  return n > 0 && static_cast<size_t>(n) < sizeof buf ? std::string(buf, static_cast<size_t>(n))
                                                      : path;
}

// Parent death (kill_with_parent). posix_spawn cannot set PR_SET_PDEATHSIG, and the choices are:
// - fork + prctl in the child: what the benchmarks did; a multi-threaded parent's child may only
//   make async-signal-safe calls, and fork copies the page tables of a parent that maps
//   gigabytes of dicts;
// - clone(CLONE_VM | CLONE_VFORK) by hand: posix_spawn rewritten, invisible to the sanitizers;
// - a registry of children that the parent kills on exit or on a fatal signal: misses exactly
//   the case that matters, a parent SIGKILLed (by ctest's timeout, by the OOM killer).
// So posix_spawn starts a 20-line trampoline (subprocess_trampoline.cc) that sets the signal,
// checks that its parent is still the one that spawned it (else the signal came too late), and
// execs the real program in place: same pid, descriptors, environment and process group.
#ifdef SHMDICT_SUBPROCESS_TRAMPOLINE
constexpr const char* kTrampoline = SHMDICT_SUBPROCESS_TRAMPOLINE;
#else
constexpr const char* kTrampoline = nullptr;
#endif

}  // namespace

std::string FindProgram(std::string_view name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "";
  dirs += ":/usr/sbin:/usr/bin";
  size_t begin = 0;
  while (begin <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', begin), dirs.size());
    const std::string candidate = dirs.substr(begin, end - begin) + "/" + std::string(name);
    if (end > begin && access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return "";
}

std::string ExitInfo::ToString() const {
  if (!reaped) return "not reaped";
  std::string s =
      exited ? "exited with code " + std::to_string(exit_code) : "killed by " + SignalName(signal);
  if (timed_out) s += " (SIGKILLed at the deadline)";
  return s;
}

std::unique_ptr<Subprocess> Subprocess::Start(const SpawnOptions& options, std::string* error) {
  // Everything the child needs is built here, before posix_spawn.
  const std::string path = ResolvedPath(options.path);
  std::vector<std::string> argv_storage;
  if (options.kill_with_parent) {
    if (kTrampoline == nullptr) {
      *error = "kill_with_parent: this build has no subprocess trampoline";
      return nullptr;
    }
    // The trampoline's exec failure would only show as exit code 127: check here instead.
    if (access(path.c_str(), X_OK) != 0) {
      *error = "cannot execute " + path + ": " + strerror(errno);
      return nullptr;
    }
    argv_storage = {kTrampoline, std::to_string(getpid()), path};
  }
  argv_storage.insert(argv_storage.end(), options.argv.begin(), options.argv.end());
  std::vector<char*> argv = Pointers(argv_storage);
  std::vector<std::string> env_storage = Environment(options.env);
  std::vector<char*> envp = Pointers(env_storage);

  int in_pipe[2] = {-1, -1};
  int out_pipe[2] = {-1, -1};
  if ((options.pipe_stdin && pipe2(in_pipe, O_CLOEXEC) != 0) ||
      (options.pipe_stdout && pipe2(out_pipe, O_CLOEXEC) != 0)) {
    *error = std::string("pipe2: ") + strerror(errno);
    for (int* fd : {&in_pipe[0], &in_pipe[1], &out_pipe[0], &out_pipe[1]}) CloseFd(fd);
    return nullptr;
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the target descriptor only.
  if (in_pipe[0] >= 0) posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
  if (out_pipe[1] >= 0) posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  if (options.quiet) {
    if (out_pipe[1] < 0) {
      posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    }
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  sigset_t empty;
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  if (options.new_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attr, 0);  // the child leads a group of its own
  }
  posix_spawnattr_setflags(&attr, flags);

  pid_t pid = -1;
  const char* program = options.kill_with_parent ? kTrampoline : path.c_str();
  const int rc = posix_spawn(&pid, program, &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  CloseFd(&in_pipe[0]);
  CloseFd(&out_pipe[1]);
  if (rc != 0) {
    *error = "posix_spawn " + path + ": " + strerror(rc);
    CloseFd(&in_pipe[1]);
    CloseFd(&out_pipe[0]);
    return nullptr;
  }
  std::unique_ptr<Subprocess> p(new Subprocess(options.new_process_group));
  p->pid_ = pid;
  p->stdin_fd_ = in_pipe[1];
  p->stdout_fd_ = out_pipe[0];
  p->pidfd_ = PidfdOpen(pid);
  return p;
}

Subprocess::~Subprocess() {
  KillBlocking();
  CloseFd(&stdout_fd_);
  CloseFd(&stdin_fd_);
  CloseFd(&pidfd_);
}

void Subprocess::KillBlocking() {
  if (pid_ <= 0 || reaped_) return;
  if (group_) kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  int status = 0;
  pid_t r;
  while ((r = waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
  }
  Reaped(r == pid_ ? status : -1);
}

void Subprocess::Reaped(int wait_status) {
  reaped_ = true;
  wait_status_ = wait_status;
  CloseFd(&pidfd_);
  // Anything the child left in its group (a server's helpers) goes with it. The group id stays
  // ours until the last member is gone, so this cannot hit another group.
  if (group_) kill(-pid_, SIGKILL);
}

void Subprocess::Kill() {
  KillBlocking();
  CloseFd(&stdin_fd_);
}

void Subprocess::ReadAvailable() {
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

void Subprocess::TryReap() {
  if (pid_ <= 0 || reaped_) return;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    Reaped(status);
  } else if (r < 0) {
    Reaped(-1);  // reported as "not reaped"
  }
}

void Pump(const std::vector<Subprocess*>& processes, Deadline until) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Subprocess*, bool>> owners;  // (process, is_stdout)
  bool need_slices = false;
  for (Subprocess* p : processes) {
    if (p->stdout_fd_ >= 0) {
      fds.push_back({p->stdout_fd_, POLLIN, 0});
      owners.emplace_back(p, true);
    }
    if (p->pid_ > 0 && !p->reaped_) {
      if (p->pidfd_ >= 0) {
        fds.push_back({p->pidfd_, POLLIN, 0});
        owners.emplace_back(p, false);
      } else {
        need_slices = true;
      }
    }
  }
  int timeout = MillisUntil(until);
  if (need_slices) timeout = std::min(timeout, 5);
  const int n = poll(fds.data(), fds.size(), timeout);
  for (size_t i = 0; i < fds.size() && n > 0; ++i) {
    if (fds[i].revents == 0) continue;
    if (owners[i].second) {
      owners[i].first->ReadAvailable();
    } else {
      owners[i].first->TryReap();
    }
  }
  if (need_slices) {
    for (Subprocess* p : processes) p->TryReap();
  }
}

LineStatus Subprocess::ReadLine(std::string* line, Deadline deadline) {
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

std::vector<std::string> Subprocess::TakeLines() {
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

bool Subprocess::WriteLine(std::string_view line) {
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

void Subprocess::CloseStdin() { CloseFd(&stdin_fd_); }

void Subprocess::Signal(int sig) {
  if (pid_ > 0 && !reaped_) kill(pid_, sig);
}

ExitInfo Subprocess::Wait(Deadline deadline) { return WaitAll({this}, deadline)[0]; }

ExitInfo Subprocess::Info(bool timed_out) const {
  ExitInfo info;
  info.timed_out = timed_out;
  info.reaped = wait_status_ != -1;
  if (info.reaped) {
    info.exited = WIFEXITED(wait_status_);
    info.exit_code = info.exited ? WEXITSTATUS(wait_status_) : -1;
    info.signal = WIFSIGNALED(wait_status_) ? WTERMSIG(wait_status_) : 0;
  }
  return info;
}

std::vector<ExitInfo> WaitAll(const std::vector<Subprocess*>& processes, Deadline deadline) {
  for (;;) {
    bool all_done = true;
    for (Subprocess* p : processes) all_done = all_done && p->Done();
    if (all_done || Clock::now() >= deadline) break;
    Pump(processes, deadline);
  }
  std::vector<ExitInfo> result;
  for (Subprocess* p : processes) {
    const bool timed_out = !p->Done();
    if (timed_out) {
      p->KillBlocking();
      Pump({p}, Clock::now());  // what it printed last, without blocking on a grandchild
      CloseFd(&p->stdout_fd_);
    }
    result.push_back(p->Info(timed_out));
  }
  return result;
}

}  // namespace shmdict::internal
