#include "bridge_process.h"

#include <gtest/gtest.h>
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

BridgeProcess::~BridgeProcess() = default;

bool BridgeProcess::Start() {
  bridge_.reset();  // SIGKILLs a bridge still running
  internal::BridgeLaunchOptions options;
  options.program = BridgeProgram();
  options.listen = listen_;
  options.extra_args = extra_args_;
  options.ready_timeout = kWorkerTimeout;
  std::string error;
  bridge_ = internal::BridgeLauncher::Start(options, &error);
  if (bridge_ == nullptr) {
    ADD_FAILURE() << error;
    return false;
  }
  address_ = bridge_->address();
  return true;
}

void BridgeProcess::Kill() {
  if (bridge_ != nullptr) bridge_->Kill();
}

ExitInfo BridgeProcess::Terminate() {
  if (bridge_ == nullptr) return ExitInfo{};
  return bridge_->Terminate(DeadlineIn(kWorkerTimeout));
}

}  // namespace shmdict::testing
