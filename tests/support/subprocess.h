// Subprocess: the one way tests and benchmarks start a helper process. posix_spawn + exec (never
// a bare fork: the parents are multi-threaded), an optional stdin pipe, stdout captured line by
// line through a pipe, and a deadline on every wait. Reporting is the caller's: the test wrapper
// (WorkerProcess) turns failures into gtest failures, the benchmark harness (peers::Process)
// into exceptions. This library depends on neither, so the benchmarks link it when tests are off.
//
//   SpawnOptions options;
//   options.path = "/usr/bin/redis-server";
//   options.argv = {"redis-server", "--port", "0"};
//   options.pipe_stdout = true;
//   std::string error;
//   std::unique_ptr<Subprocess> p = Subprocess::Start(options, &error);
//   if (p == nullptr) ...error...
//   ExitInfo exit = p->Wait(DeadlineIn(std::chrono::seconds(30)));
//
// The child starts as a fresh program: SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE at their
// default actions (even if the parent ignores them), an empty signal mask, and no descriptor of
// the parent but 0, 1 and 2 (every pipe here is close-on-exec). Exit is observed through a pidfd
// (no polling), output through poll(2).
//
// Thread-safety: thread-compatible; use a Subprocess from one thread. Lifetime: destroying a
// Subprocess that still runs SIGKILLs it (its whole group with new_process_group) and reaps it,
// so nothing outlives its owner. Writing to a child that closed its stdin raises SIGPIPE in the
// parent unless the parent ignores SIGPIPE: that policy is the caller's.
#ifndef SHMDICT_TESTS_SUPPORT_SUBPROCESS_H_
#define SHMDICT_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace shmdict::internal {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineIn(Clock::duration d) { return Clock::now() + d; }

struct SpawnOptions {
  std::string path;               // the executable; "/proc/self/exe" re-executes this binary
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // "NAME=value", added to (or replacing in) our environment
  bool pipe_stdin = false;        // else stdin is inherited
  bool pipe_stdout = false;       // else stdout is inherited (or /dev/null when quiet)
  bool quiet = false;             // stderr, and stdout unless piped, to /dev/null
  // The child leads a new process group; Kill, the deadline of Wait and the destructor SIGKILL
  // the whole group, and reaping the child SIGKILLs what it left there (a server's helpers).
  bool new_process_group = false;
  // The child is SIGKILLed when the thread that started it dies (PR_SET_PDEATHSIG), so a parent
  // killed by SIGKILL leaves no child behind. See SpawnWithParentDeath in subprocess.cc for how.
  // Start the child from a thread that outlives it (the main thread).
  bool kill_with_parent = false;
};

struct ExitInfo {
  bool reaped = false;     // false only if the process could not be waited for
  bool exited = false;     // terminated by exit()/return from main
  int exit_code = -1;      // valid when exited
  int signal = 0;          // the terminating signal when !exited
  bool timed_out = false;  // the deadline passed and the process was SIGKILLed

  bool Succeeded() const { return reaped && exited && exit_code == 0 && !timed_out; }
  bool KilledBy(int sig) const { return reaped && !exited && signal == sig && !timed_out; }
  // "exited with code 3", "killed by SIGTERM", "... (SIGKILLed at the deadline)", "not reaped".
  std::string ToString() const;
};

enum class LineStatus { kLine, kEof, kTimeout };

class Subprocess {
 public:
  // Starts the process. On failure (no such executable, out of descriptors) returns nullptr and
  // sets *error to a message naming the program and the cause.
  static std::unique_ptr<Subprocess> Start(const SpawnOptions& options, std::string* error);
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool reaped() const { return reaped_; }

  // The next complete stdout line, without its '\n'. kEof when stdout is closed (or not piped)
  // and no complete line is left; kTimeout when the deadline passed first.
  LineStatus ReadLine(std::string* line, Deadline deadline);
  // Every complete line not yet returned by ReadLine, plus an unterminated last line.
  std::vector<std::string> TakeLines();
  // Everything the process printed so far (for failure messages).
  const std::string& output() const { return output_; }

  // Writes `line` + '\n' to the process's stdin. False if it is not piped or the process
  // closed it (see SIGPIPE above).
  bool WriteLine(std::string_view line);
  void CloseStdin();

  // Sends `sig` to the process (not its group) if it is still running. It is not reaped before
  // Wait, so its pid cannot be reused meanwhile.
  void Signal(int sig);
  // Waits until the process exited and its stdout reached EOF, reading (and keeping) its output
  // meanwhile so that it never blocks on a full pipe. At the deadline: SIGKILL, reap, and
  // return timed_out.
  ExitInfo Wait(Deadline deadline);
  // SIGKILLs the process (its group with new_process_group) and reaps it at once, without
  // waiting for its stdout. Does nothing once it is reaped.
  void Kill();

 private:
  friend std::vector<ExitInfo> WaitAll(const std::vector<Subprocess*>& processes,
                                       Deadline deadline);
  friend void Pump(const std::vector<Subprocess*>& processes, Deadline until);

  explicit Subprocess(bool group) : group_(group) {}
  bool Done() const { return reaped_ && stdout_fd_ < 0; }
  void ReadAvailable();
  void TryReap();
  void Reaped(int wait_status);
  void KillBlocking();
  ExitInfo Info(bool timed_out) const;

  const bool group_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int stdout_fd_ = -1;
  int stdin_fd_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  std::string output_;
  size_t consumed_ = 0;  // bytes of output_ already returned as lines
};

// Waits for all processes together (draining every pipe, so none blocks on a full pipe), with
// one deadline; at the deadline each unfinished one is SIGKILLed and reaped (timed_out).
std::vector<ExitInfo> WaitAll(const std::vector<Subprocess*>& processes, Deadline deadline);

// The executable `name` on $PATH, else in /usr/sbin or /usr/bin (where Debian puts servers that a
// user's PATH may lack); "" when there is none.
std::string FindProgram(std::string_view name);

// Reads whatever output and exits the processes have until `until` or until one of them changes
// state (new output, exit). Lower-level than WaitAll; for callers that watch several at once.
void Pump(const std::vector<Subprocess*>& processes, Deadline until);

}  // namespace shmdict::internal

#endif  // SHMDICT_TESTS_SUPPORT_SUBPROCESS_H_
