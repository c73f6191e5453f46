// BridgeProcess: a real shmdict-bridge for a test, on a Unix socket in a directory of its own,
// started, SIGKILLed and restarted at will. Destruction kills it and removes the directory, so
// no test leaves a bridge or a socket behind. It starts the bridge through BridgeLauncher
// (tests/support/bridge_launcher.h, shared with the benchmarks) and turns its errors into test
// failures.
//
// Thread-safety: use from the test's main thread.
#ifndef SHMDICT_TESTS_BRIDGE_BRIDGE_PROCESS_H_
#define SHMDICT_TESTS_BRIDGE_BRIDGE_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "bridge_launcher.h"
#include "worker_process.h"

namespace shmdict::testing {

// A fresh directory under /tmp, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The bridge presence registry (shmdict/bridge/presence.h, bridge/presence/) of this test process:
// a fresh directory in $SHMDICT_BRIDGE_REGISTRY_DIR, set before main so that every bridge and CLI a
// test starts registers and looks there, never in /dev/shm (tests SIGKILL bridges, whose records
// stay until a reader removes them). Removed at exit.
const std::string& BridgeRegistryDir();

// What `shmdict ARGS` printed and how it exited (code -1: it did not exit by itself).
struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};
// Runs the CLI (SHMDICT_CLI_PATH) with `input` on its stdin, to completion.
CliRun RunCli(const std::vector<std::string>& args, const std::string& input = "");

inline std::string BridgeProgram() { return SHMDICT_BRIDGE_PATH; }
inline std::string RemoteWorkerProgram() { return SHMDICT_REMOTE_WORKER_PATH; }

class BridgeProcess {
 public:
  // `listen`: the bridge's --listen values; empty: unix:<dir>/bridge.sock.
  explicit BridgeProcess(std::vector<std::string> listen = {},
                         std::vector<std::string> extra_args = {});
  ~BridgeProcess();

  // Starts it and waits for its "ready" line (a test failure, and false, if it does not come).
  bool Start();
  // SIGKILL and reap: the bridge gets no chance to clean up.
  void Kill();
  // SIGTERM and wait for its exit.
  ExitInfo Terminate();
  bool running() const { return bridge_ != nullptr && bridge_->running(); }

  // "unix:/tmp/shmdict-test-XXXX/bridge.sock", or the first --listen value with its real port.
  const std::string& address() const { return address_; }
  const std::string& socket_path() const { return socket_path_; }
  // The bridge's process (pid, output, Wait); null before the first successful Start.
  internal::Subprocess* process() { return bridge_ != nullptr ? &bridge_->process() : nullptr; }

 private:
  TempDir dir_;
  std::vector<std::string> listen_;
  std::vector<std::string> extra_args_;
  std::string socket_path_;
  std::string address_;
  std::unique_ptr<internal::BridgeLauncher> bridge_;
};

}  // namespace shmdict::testing

#endif  // SHMDICT_TESTS_BRIDGE_BRIDGE_PROCESS_H_
