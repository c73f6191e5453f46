// BridgeLauncher: the one way tests and benchmarks start a real shmdict-bridge. It spawns the
// bridge (a Subprocess, subprocess.h) with the given --listen addresses, waits for the "ready"
// line the bridge prints once it serves, and learns the port it chose for a "HOST:0" address
// from its "listening on ADDR" line. Reporting is the caller's: failures come back as an error
// string (the tests' BridgeProcess turns them into gtest failures, the benchmarks into
// exceptions), so this file depends on neither GoogleTest nor the benchmark harness.
//
//   BridgeLaunchOptions options;
//   options.program = SHMDICT_BRIDGE_PATH;
//   options.listen = {"127.0.0.1:0"};
//   std::string error;
//   std::unique_ptr<BridgeLauncher> bridge = BridgeLauncher::Start(options, &error);
//   if (bridge == nullptr) ...error...
//   Connect(bridge->address());  // "127.0.0.1:40123"
//
// Thread-safety: thread-compatible; use a BridgeLauncher from one thread, the one that started it
// (the bridge is killed when that thread dies, see SpawnOptions::kill_with_parent). Lifetime:
// destroying a BridgeLauncher whose bridge still runs SIGKILLs and reaps it.
#ifndef SHMDICT_TESTS_SUPPORT_BRIDGE_LAUNCHER_H_
#define SHMDICT_TESTS_SUPPORT_BRIDGE_LAUNCHER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "subprocess.h"

namespace shmdict::internal {

struct BridgeLaunchOptions {
  std::string program;                  // the shmdict-bridge executable
  std::vector<std::string> listen;      // its --listen values, at least one
  std::vector<std::string> extra_args;  // any other flags, after ours
  std::vector<std::string> env;         // "NAME=value", added to this process's environment
  // "--log-level warn" unless extra_args names a --log-level (CLI11 refuses the flag twice).
  std::string log_level = "warn";
  // The longest wait for "ready". Generous: sanitizer builds on a loaded machine start slowly.
  Clock::duration ready_timeout = std::chrono::seconds(60);
};

class BridgeLauncher {
 public:
  // Starts the bridge with --exit-with-parent (a parent killed by SIGKILL runs no destructor: the
  // bridge must not outlive it) and waits for "ready". On failure (no such program, the bridge
  // exited or stayed silent until ready_timeout, no listen address given) returns nullptr and
  // sets *error to what happened and what the bridge printed; nothing is left running.
  static std::unique_ptr<BridgeLauncher> Start(const BridgeLaunchOptions& options,
                                               std::string* error);
  BridgeLauncher(const BridgeLauncher&) = delete;
  BridgeLauncher& operator=(const BridgeLauncher&) = delete;
  ~BridgeLauncher() = default;

  // The first --listen value, with the port the bridge chose when it was "HOST:0".
  const std::string& address() const { return address_; }
  // The bridge's process: its pid, what it printed so far (up to "ready" and after), its exit.
  Subprocess& process() { return *process_; }
  bool running() const { return !process_->reaped(); }

  // SIGKILL and reap: the bridge gets no chance to clean up (its presence record stays).
  void Kill() { process_->Kill(); }
  // SIGTERM (a graceful shutdown that removes its presence record), then waits for its exit; at
  // the deadline it is SIGKILLed (timed_out). An ExitInfo{} when it was reaped already.
  ExitInfo Terminate(Deadline deadline);

 private:
  BridgeLauncher() = default;

  std::unique_ptr<Subprocess> process_;
  std::string address_;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_TESTS_SUPPORT_BRIDGE_LAUNCHER_H_
