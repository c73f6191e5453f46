// Live bridges in `shmdict ls`, `shmdict status NAME` and `shmdict bridges`: real bridge
// processes, a real watcher (`shmdict --remote ADDR watch`), the CLI reading the registry.
// A bridge SIGKILLed must disappear from the listings at once (its lock died with it), and its
// record must be gone once a reader has looked.
#include <gtest/gtest.h>
#include <signal.h>
#include <time.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using Json = nlohmann::json;

// The record files of the bridge with this pid ("<pid>-<random>.bridge"); the registry may hold
// records of other tests' bridges too.
std::vector<std::string> RecordsOf(pid_t pid) {
  std::vector<std::string> records;
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator(BridgeRegistryDir(), ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(std::to_string(pid) + "-") && name.ends_with(".bridge")) {
      records.push_back(entry.path().string());
    }
  }
  return records;
}

class BridgePresenceTest : public DictTestBase {
 protected:
  void SetUp() override {
    if (std::string_view(SHMDICT_CLI_PATH).empty()) GTEST_SKIP() << "the CLI is not built";
    ASSERT_EQ(RunCli({"create", name_}).code, 0);
    started_ = time(nullptr);
    ASSERT_TRUE(bridge_.Start());
  }
  void TearDown() override {
    watcher_.reset();
    bridge_.Kill();
    DictTestBase::TearDown();
  }

  // `shmdict status NAME --json`.
  Json Status() {
    const CliRun run = RunCli({"status", name_, "--json"});
    EXPECT_EQ(run.code, 0) << run.err;
    return run.code == 0 ? Json::parse(run.out) : Json::object();
  }
  // This dict's row of `shmdict ls --json`.
  Json LsRow() {
    const CliRun run = RunCli({"ls", "--json"});
    EXPECT_EQ(run.code, 0) << run.err;
    if (run.code == 0) {
      for (const Json& row : Json::parse(run.out)) {
        if (row["name"] == name_) return row;
      }
    }
    ADD_FAILURE() << name_ << " not in ls: " << run.out << run.err;
    return Json::object();
  }

  // Starts `shmdict --remote BRIDGE watch NAME` and waits until the bridge's record reports it
  // (the record is refreshed about once a second). Returns the status then.
  Json WatchAndAwaitSubscriber() {
    watcher_ = std::make_unique<WorkerProcess>(
        SHMDICT_CLI_PATH, std::vector<std::string>{"--remote", bridge_.address(), "watch", name_});
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    for (;;) {
      Json status = Status();
      if (status.contains("bridges") && status["bridges"].size() == 1 &&
          status["bridges"][0]["subscribers"] == 1) {
        return status;
      }
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "the watcher never showed in status: " << status.dump();
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  BridgeProcess bridge_;
  std::unique_ptr<WorkerProcess> watcher_;
  time_t started_ = 0;
};

TEST_F(BridgePresenceTest, ARunningBridgeShowsInStatusAndLsWithItsWatcher) {
  const Json status = WatchAndAwaitSubscriber();
  ASSERT_EQ(status["bridges"].size(), 1u) << status.dump();
  const Json& bridge = status["bridges"][0];
  EXPECT_EQ(bridge["pid"], bridge_.process()->pid()) << bridge.dump();
  EXPECT_EQ(bridge["addresses"], Json::array({bridge_.address()})) << bridge.dump();
  EXPECT_EQ(bridge["subscribers"], 1) << bridge.dump();
  EXPECT_GE(bridge["since_unix"].get<int64_t>(), started_ - 1) << bridge.dump();
  EXPECT_LE(bridge["since_unix"].get<int64_t>(), time(nullptr) + 1) << bridge.dump();

  const CliRun plain = RunCli({"status", name_});
  EXPECT_NE(plain.out.find("bridges: 1\n"), std::string::npos) << plain.out;
  EXPECT_NE(plain.out.find("bridge: " + bridge_.address() +
                           " pid=" + std::to_string(bridge_.process()->pid()) + " since="),
            std::string::npos)
      << plain.out;
  EXPECT_NE(plain.out.find(" subscribers=1\n"), std::string::npos) << plain.out;

  EXPECT_EQ(LsRow()["bridges"], 1);
  const CliRun ls = RunCli({"ls"});
  const size_t line = ls.out.find(name_ + "\t");
  ASSERT_NE(line, std::string::npos) << ls.out;
  EXPECT_EQ(ls.out.substr(line, ls.out.find('\n', line) - line), name_ + "\t0\t0\tin-use\t1")
      << ls.out;

  const CliRun bridges = RunCli({"bridges"});
  EXPECT_EQ(bridges.code, 0) << bridges.err;
  EXPECT_NE(bridges.out.find(std::to_string(bridge_.process()->pid()) + "\t"), std::string::npos)
      << bridges.out;
  EXPECT_NE(bridges.out.find("\t" + bridge_.address() + "\t"), std::string::npos) << bridges.out;
  EXPECT_NE(bridges.out.find(name_ + ":1"), std::string::npos) << bridges.out;
}

TEST_F(BridgePresenceTest, ASigkilledBridgeDisappearsFromLsAndStatus) {
  WatchAndAwaitSubscriber();
  ASSERT_EQ(LsRow()["bridges"], 1);
  const pid_t pid = bridge_.process()->pid();
  ASSERT_EQ(RecordsOf(pid).size(), 1u);

  bridge_.Kill();  // SIGKILL: no chance to remove its record
  EXPECT_EQ(RecordsOf(pid).size(), 1u) << "the record outlives the bridge, unlocked";
  // At once, no waiting: the lock died with the process.
  EXPECT_EQ(LsRow()["bridges"], 0);
  EXPECT_TRUE(RecordsOf(pid).empty()) << "the reader removes the dead bridge's record";
  const Json status = Status();
  EXPECT_EQ(status["bridges"], Json::array()) << status.dump();
  const CliRun bridges = RunCli({"bridges", "--json"});
  EXPECT_EQ(bridges.code, 0) << bridges.err;
  EXPECT_EQ(Json::parse(bridges.out), Json::array()) << bridges.out;

  // A restarted bridge shows again (a fresh record: the old one's removal cannot hide it).
  ASSERT_TRUE(bridge_.Start());
  watcher_.reset();
  WatchAndAwaitSubscriber();
}

TEST_F(BridgePresenceTest, ACleanExitRemovesTheRecord) {
  const pid_t pid = bridge_.process()->pid();
  ASSERT_EQ(RecordsOf(pid).size(), 1u);
  const ExitInfo exit = bridge_.Terminate();
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
  EXPECT_TRUE(RecordsOf(pid).empty());
}

}  // namespace
}  // namespace shmdict::testing
