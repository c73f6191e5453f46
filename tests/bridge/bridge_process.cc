#include "bridge_process.h"

#include <algorithm>

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace shmdict::testing {
namespace {

class RegistryDir {
 public:
  RegistryDir() {
    char pattern[] = "/tmp/shmdict-test-bridges-XXXXXX";
    if (mkdtemp(pattern) == nullptr) std::abort();
    path_ = pattern;
    setenv("SHMDICT_BRIDGE_REGISTRY_DIR", path_.c_str(), 1);
  }
  ~RegistryDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Constructed before main (environment inherited by every process a test spawns), destroyed
// after the tests, whose bridges are gone by then.
const RegistryDir g_registry_dir;

}  // namespace

const std::string& BridgeRegistryDir() { return g_registry_dir.path(); }

CliRun RunCli(const std::vector<std::string>& args, const std::string& input) {
  TempDir dir;
  const std::string err_path = dir.path() + "/stderr";
  std::vector<std::string> sh = {"-c", "exec \"$0\" \"$@\" 2>'" + err_path + "'", SHMDICT_CLI_PATH};
  sh.insert(sh.end(), args.begin(), args.end());
  WorkerProcess process("/bin/sh", sh);
  if (!input.empty()) process.SendLine(input);
  process.CloseStdin();
  ExitInfo exit = process.Wait(DeadlineIn(kWorkerTimeout));
  CliRun ran;
  ran.code = exit.exited ? exit.exit_code : -1;
  ran.out = process.output();
  std::ifstream err(err_path);
  ran.err.assign(std::istreambuf_iterator<char>(err), std::istreambuf_iterator<char>());
  return ran;
}

TempDir::TempDir() {
  char pattern[] = "/tmp/shmdict-test-XXXXXX";
  const char* made = mkdtemp(pattern);
  if (made == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return;
  }
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

BridgeProcess::BridgeProcess(std::vector<std::string> listen, std::vector<std::string> extra_args)
    : listen_(std::move(listen)), extra_args_(std::move(extra_args)) {
  socket_path_ = dir_.path() + "/bridge.sock";
  if (listen_.empty()) listen_.push_back("unix:" + socket_path_);
  address_ = listen_.front();
}

BridgeProcess::~BridgeProcess() {
  if (process_ && !process_->reaped()) process_->KillAndWait();
}

bool BridgeProcess::Start() {
  if (process_ && !process_->reaped()) process_->KillAndWait();
  std::vector<std::string> args;
  for (const std::string& address : listen_) {
    args.push_back("--listen");
    args.push_back(address);
  }
  // Quiet unless a test asks for more (CLI11 refuses the option twice).
  if (std::find(extra_args_.begin(), extra_args_.end(), "--log-level") == extra_args_.end()) {
    args.push_back("--log-level");
    args.push_back("warn");
  }
  // A test binary killed by its timeout runs no destructor: the bridge must not outlive it.
  args.push_back("--exit-with-parent");
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  process_ = std::make_unique<WorkerProcess>(BridgeProgram(), args);
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  for (;;) {
    std::string line;
    if (process_->ReadLine(&line, deadline) != LineStatus::kLine) {
      ADD_FAILURE() << "shmdict-bridge did not become ready: " << process_->output();
      return false;
    }
    if (line.rfind("listening on ", 0) == 0 && address_.rfind("unix:", 0) != 0 &&
        address_.find(":0") == address_.size() - 2) {
      address_ = line.substr(13);  // the port the bridge chose for ":0"
    }
    if (line == "ready") return true;
  }
}

void BridgeProcess::Kill() {
  if (process_ && !process_->reaped()) process_->KillAndWait();
}

ExitInfo BridgeProcess::Terminate() {
  if (!process_ || process_->reaped()) return ExitInfo{};
  process_->Signal(SIGTERM);
  return process_->Wait(DeadlineIn(kWorkerTimeout));
}

}  // namespace shmdict::testing
