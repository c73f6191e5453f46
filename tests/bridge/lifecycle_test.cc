// A real bridge's lifecycle and files (issue 19): a flag error's exit status, SIGTERM with calls
// waiting and a write stuck behind a local writer's lock, and --ensure's lock file against
// symlinks planted where another user could plant them.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;

// Runs the bridge with `args` and `env` to completion; stderr joins stdout.
struct Ran {
  int code = -1;
  std::string out;
};
Ran RunBridge(const std::vector<std::string>& args, std::vector<std::string> env = {}) {
  std::vector<std::string> sh = {"-c", "exec \"$0\" \"$@\" 2>&1", BridgeProgram()};
  sh.insert(sh.end(), args.begin(), args.end());
  WorkerProcess process("/bin/sh", sh, std::move(env));
  process.CloseStdin();
  ExitInfo exit = process.Wait(DeadlineIn(kWorkerTimeout));
  return Ran{exit.exited ? exit.exit_code : -1, process.output()};
}

TEST(BridgeFlagsTest, AFlagErrorExitsWithTheDocumentedStatus2) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--no-such-flag"},
                                               {"--max-message-bytes", "1"},
                                               {"--log-level", "loud"},
                                               {"--socket-mode", "0999"},
                                               {"--max-waiting-calls", "0"},
                                               {"--listen"}}) {
    Ran ran = RunBridge(args);
    EXPECT_EQ(ran.code, 2) << args.front() << ": " << ran.out;
  }
  EXPECT_EQ(RunBridge({"--help"}).code, 0);
  EXPECT_EQ(RunBridge({"--version"}).code, 0);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class BridgeStopTest : public DictTestBase {
 protected:
  void SetUp() override {
    auto dict = Dict::Open(CreateOptions(name_));
    ASSERT_OK(dict);
    dict_.emplace(std::move(*dict));
  }
  std::optional<Dict> dict_;
};

// The value of `gauge` in the bridge's /metrics.
int64_t Gauge(httplib::Client* http, const std::string& gauge) {
  auto response = http->Get("/metrics");
  if (!response) return -1;
  const size_t at = response->body.find("\n" + gauge + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(response->body.substr(at + gauge.size() + 2));
}

TEST_F(BridgeStopTest, SigtermEndsWaitingStreamsAtOnceAndAStuckWriteDoesNotOutliveTheGrace) {
  TempDir logs;
  const std::string log_file = logs.path() + "/bridge.log";
  BridgeProcess bridge(
      {}, {"--metrics-listen", "127.0.0.1:0", "--log-file", log_file, "--log-level", "info"});
  ASSERT_TRUE(bridge.Start());
  const std::string& printed = bridge.process()->output();
  const std::string marker = "metrics listening on ";
  const size_t at = printed.find(marker);
  ASSERT_NE(at, std::string::npos) << printed;
  const std::string metrics =
      printed.substr(at + marker.size(), printed.find('\n', at) - at - marker.size());
  const size_t colon = metrics.rfind(':');
  httplib::Client http(metrics.substr(0, colon), std::stoi(metrics.substr(colon + 1)));
  http.set_read_timeout(30, 0);

  // A local writer holds the dict's lock: the bridge's Set waits for it (up to its 10 s lock
  // timeout, longer than the stop's 5 s grace).
  WorkerProcess holder(WorkerProgram(), {"lockhold", name_});
  ASSERT_TRUE(holder.AwaitLine("locked", DeadlineIn(kWorkerTimeout)));

  auto stub =
      v1::Dict::NewStub(grpc::CreateChannel(bridge.address(), grpc::InsecureChannelCredentials()));
  using Stream = grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>;
  grpc::ClientContext started_context;
  grpc::ClientContext silent_context;
  started_context.set_deadline(std::chrono::system_clock::now() + 60s);
  silent_context.set_deadline(std::chrono::system_clock::now() + 60s);
  std::unique_ptr<Stream> started = stub->Watch(&started_context);
  v1::WatchRequest start;
  start.mutable_start()->set_dict(name_);
  start.mutable_start()->set_from_current(true);
  ASSERT_TRUE(started->Write(start));
  v1::WatchResponse response;
  ASSERT_TRUE(started->Read(&response));  // attached: its first progress message came
  std::unique_ptr<Stream> silent = stub->Watch(&silent_context);  // never sends `start`

  std::thread writer([&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 60s);
    v1::SetRequest request;
    request.set_dict(name_);
    request.set_key("stuck");
    request.mutable_value()->set_type(2);
    request.mutable_value()->set_data(std::string(8, '\0'));
    v1::WriteResponse reply;
    stub->Set(&context, request, &reply);  // ends however the bridge ends
  });
  // Both streams and the Set are in the bridge.
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  while (Gauge(&http, "shmdict_bridge_calls_in_flight") < 3 && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(Gauge(&http, "shmdict_bridge_calls_in_flight"), 3);

  bridge.process()->Signal(SIGTERM);
  for (Stream* stream : {started.get(), silent.get()}) {
    while (stream->Read(&response)) {
    }
    grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    EXPECT_NE(status.error_message().find("shutting down"), std::string::npos)
        << "ended by the bridge's stop, not by its death: " << status.error_message();
  }
  ExitInfo exit = bridge.Terminate();
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
  writer.join();
  // The bridge exited while the write was still stuck: the watchdog, not the write, ended it.
  const std::string log = ReadAll(log_file);
  EXPECT_NE(log.find("exiting anyway"), std::string::npos) << log;
  holder.SendLine("unlock");
  EXPECT_TRUE(holder.Wait(DeadlineIn(kWorkerTimeout)).Succeeded());
}

// --ensure on TCP, with TMPDIR pointing at a directory of the test's and no XDG_RUNTIME_DIR: the
// lock goes to TMPDIR/shmdict-bridge-EUID, never to the shared TMPDIR itself.
class EnsureLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Something answers at the address: --ensure takes its lock, finds it serving, and starts
    // nothing.
    ASSERT_TRUE(bridge_.Start());
    address_ = bridge_.address();
  }
  Ran Ensure() {
    return RunBridge({"--ensure", "--listen", address_},
                     {"TMPDIR=" + tmp_.path(), "XDG_RUNTIME_DIR="});
  }
  std::string PrivateDir() { return tmp_.path() + "/shmdict-bridge-" + std::to_string(geteuid()); }
  std::string LockName() {
    std::string name = address_;
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
    }
    return name;
  }

  TempDir tmp_;
  BridgeProcess bridge_{{"127.0.0.1:0"}};
  std::string address_;
};

TEST_F(EnsureLockTest, ASymlinkAtTheOldSharedLockPathIsNeverFollowed) {
  const std::string target = tmp_.path() + "/planted-target";
  const std::string old_path = tmp_.path() + "/shmdict-bridge-ensure-" + std::to_string(getuid()) +
                               "-" + LockName() + ".lock";
  ASSERT_EQ(symlink(target.c_str(), old_path.c_str()), 0);
  Ran ran = Ensure();
  EXPECT_EQ(ran.code, 0) << ran.out;
  EXPECT_NE(ran.out.find("already serving"), std::string::npos) << ran.out;
  EXPECT_FALSE(std::filesystem::exists(target)) << "--ensure created the planted symlink's target";
  struct stat info {};
  ASSERT_EQ(lstat(PrivateDir().c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_mode & 07777, 0700u);
}

TEST_F(EnsureLockTest, ASymlinkPlantedAsThePrivateDirectoryIsRefused) {
  const std::string elsewhere = tmp_.path() + "/elsewhere";
  ASSERT_EQ(mkdir(elsewhere.c_str(), 0700), 0);
  ASSERT_EQ(symlink(elsewhere.c_str(), PrivateDir().c_str()), 0);
  Ran ran = Ensure();
  EXPECT_EQ(ran.code, 2) << ran.out;
  EXPECT_NE(ran.out.find("not a private directory"), std::string::npos) << ran.out;
  EXPECT_TRUE(std::filesystem::is_empty(elsewhere));
}

TEST_F(EnsureLockTest, ASymlinkPlantedAsTheLockFileIsRefused) {
  ASSERT_EQ(mkdir(PrivateDir().c_str(), 0700), 0);
  const std::string target = tmp_.path() + "/planted-target";
  const std::string lock = PrivateDir() + "/shmdict-bridge-ensure-" + LockName() + ".lock";
  ASSERT_EQ(symlink(target.c_str(), lock.c_str()), 0);
  Ran ran = Ensure();
  EXPECT_EQ(ran.code, 2) << ran.out;
  EXPECT_FALSE(std::filesystem::exists(target)) << "--ensure created the planted symlink's target";
}

}  // namespace
}  // namespace shmdict::testing
