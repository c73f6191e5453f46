#include "shmdict/bridge/presence.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace shmdict::bridge {
namespace {

using std::chrono::steady_clock;

// A record of this process stands for a live bridge: flock conflicts between open file
// descriptions even within one process, so a publisher here holds its record as a bridge would.
class PresenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shmdict-presence-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::unique_ptr<PresencePublisher> StartPublisher(PresencePublisher::CountsFunction counts) {
    PresencePublisher::Options options;
    options.dir = dir_;
    options.addresses = {"unix:/run/a.sock", "127.0.0.1:7377"};
    options.counts = std::move(counts);
    options.interval = std::chrono::milliseconds(20);
    auto started = PresencePublisher::Start(std::move(options));
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    return started.ok() ? std::move(*started) : nullptr;
  }

  std::string dir_;
};

BridgeRecord Example() {
  BridgeRecord record;
  record.pid = 4242;
  record.since_unix = 1764582242;
  record.addresses = {"unix:/tmp/a b/bridge.sock", "[::1]:7377"};
  record.dicts = {{"orders", 2}, {"carts.v2", 0}};
  return record;
}

TEST_F(PresenceTest, ARecordReadsBackAsWritten) {
  const std::string text = FormatRecord(Example());
  EXPECT_NE(text.find("since 1764582242 2025-12-01T09:44:02Z\n"), std::string::npos) << text;
  std::optional<BridgeRecord> parsed = ParseRecord(text);
  ASSERT_TRUE(parsed.has_value()) << text;
  EXPECT_EQ(parsed->pid, 4242);
  EXPECT_EQ(parsed->since_unix, 1764582242);
  EXPECT_EQ(parsed->addresses, Example().addresses);
  EXPECT_EQ(parsed->dicts, Example().dicts);
  // A shorter rewrite read before the writer truncated: the old tail after "end" is ignored.
  EXPECT_TRUE(ParseRecord(text + "dict 9 stale\n").has_value());
}

TEST_F(PresenceTest, TornTruncatedOrForeignRecordsAreRejected) {
  const std::string text = FormatRecord(Example());
  for (size_t cut = 0; cut < text.size(); ++cut) {
    EXPECT_FALSE(ParseRecord(text.substr(0, cut)).has_value()) << "cut at " << cut;
  }
  std::string torn = text;
  torn[torn.find("orders")] = 'X';  // half of a rewrite
  EXPECT_FALSE(ParseRecord(torn).has_value());
  EXPECT_FALSE(ParseRecord("hello\n").has_value());
  EXPECT_FALSE(ParseRecord("").has_value());
}

TEST_F(PresenceTest, APublishedBridgeIsListedWithItsDictsAndSubscribers) {
  std::atomic<uint64_t> subscribers{1};
  auto publisher = StartPublisher([&] {
    return std::map<std::string, uint64_t>{{"orders", subscribers.load()}};
  });
  ASSERT_NE(publisher, nullptr);
  std::vector<BridgeRecord> live = ListLiveBridges(dir_);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].pid, getpid());
  EXPECT_EQ(live[0].addresses, (std::vector<std::string>{"unix:/run/a.sock", "127.0.0.1:7377"}));
  EXPECT_EQ(live[0].dicts.at("orders"), 1u);
  EXPECT_EQ(live[0].path, publisher->path());

  // A change is published within a few intervals.
  subscribers = 3;
  const auto deadline = steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    live = ListLiveBridges(dir_);
    if (live.size() == 1 && live[0].dicts.at("orders") == 3) break;
    ASSERT_LT(steady_clock::now(), deadline) << "the new subscriber count was never published";
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  const std::string path = publisher->path();
  publisher.reset();
  EXPECT_FALSE(std::filesystem::exists(path)) << "a clean exit removes the record";
  EXPECT_TRUE(ListLiveBridges(dir_).empty());
}

TEST_F(PresenceTest, ARecordNobodyHoldsIsNotListedAndIsRemoved) {
  // What a SIGKILLed bridge leaves: an intact record whose lock died with it.
  BridgeRecord record = Example();
  record.pid = getpid();  // even a pid that is alive does not make it look alive
  const std::string dead = WriteFile("1-dead.bridge", FormatRecord(record));
  auto publisher = StartPublisher(nullptr);
  ASSERT_NE(publisher, nullptr);

  std::vector<BridgeRecord> live = ListLiveBridges(dir_);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].path, publisher->path());
  EXPECT_FALSE(std::filesystem::exists(dead)) << "the dead record is removed";
}

TEST_F(PresenceTest, AMalformedRecordIsSkippedWithoutError) {
  auto publisher = StartPublisher(nullptr);
  ASSERT_NE(publisher, nullptr);
  // Held locked (as by a live process), so that only its content decides.
  const std::string garbage = WriteFile("2-garbage.bridge", "shmdict-bridge 1\npid x\nend 0\n");
  const int fd = open(garbage.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  WriteFile("3-empty.bridge", "");
  mkdir((dir_ + "/4-directory.bridge").c_str(), 0755);
  WriteFile("notes.txt", "not a record");

  std::vector<BridgeRecord> live = ListLiveBridges(dir_);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].path, publisher->path());
  EXPECT_TRUE(std::filesystem::exists(garbage)) << "a live holder's record is never removed";
  close(fd);
}

TEST_F(PresenceTest, AMissingDirectoryListsNoBridge) {
  EXPECT_TRUE(ListLiveBridges(dir_ + "/nothing-here").empty());
}

}  // namespace
}  // namespace shmdict::bridge
