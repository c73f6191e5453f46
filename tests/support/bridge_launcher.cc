#include "bridge_launcher.h"

#include <signal.h>

#include <algorithm>

namespace shmdict::internal {
namespace {

bool IsPortZero(const std::string& address) {
  return address.rfind("unix:", 0) != 0 && address.size() >= 2 &&
         address.compare(address.size() - 2, 2, ":0") == 0;
}

}  // namespace

std::unique_ptr<BridgeLauncher> BridgeLauncher::Start(const BridgeLaunchOptions& options,
                                                      std::string* error) {
  if (options.listen.empty()) {
    *error = "BridgeLauncher: no --listen address";
    return nullptr;
  }
  SpawnOptions spawn;
  spawn.path = options.program;
  spawn.argv = {options.program};
  for (const std::string& address : options.listen) {
    spawn.argv.push_back("--listen");
    spawn.argv.push_back(address);
  }
  const std::vector<std::string>& extra = options.extra_args;
  if (!options.log_level.empty() &&
      std::find(extra.begin(), extra.end(), "--log-level") == extra.end()) {
    spawn.argv.push_back("--log-level");
    spawn.argv.push_back(options.log_level);
  }
  spawn.argv.push_back("--exit-with-parent");
  spawn.argv.insert(spawn.argv.end(), extra.begin(), extra.end());
  spawn.env = options.env;
  spawn.pipe_stdin = true;  // never the caller's terminal
  spawn.pipe_stdout = true;
  spawn.kill_with_parent = true;

  std::unique_ptr<BridgeLauncher> bridge(new BridgeLauncher());
  bridge->process_ = Subprocess::Start(spawn, error);
  if (bridge->process_ == nullptr) return nullptr;
  bridge->address_ = options.listen.front();
  const Deadline deadline = DeadlineIn(options.ready_timeout);
  for (;;) {
    std::string line;
    const LineStatus status = bridge->process_->ReadLine(&line, deadline);
    if (status != LineStatus::kLine) {
      bridge->process_->Kill();
      *error = std::string("shmdict-bridge did not become ready (") +
               (status == LineStatus::kEof ? "it closed its stdout" : "timed out") +
               "); it printed: " + bridge->process_->output();
      return nullptr;
    }
    if (line.rfind("listening on ", 0) == 0 && IsPortZero(bridge->address_)) {
      bridge->address_ = line.substr(13);  // the port the bridge chose for ":0"
    }
    if (line == "ready") return bridge;
  }
}

ExitInfo BridgeLauncher::Terminate(Deadline deadline) {
  if (process_->reaped()) return ExitInfo{};
  process_->Signal(SIGTERM);
  return process_->Wait(deadline);
}

}  // namespace shmdict::internal
