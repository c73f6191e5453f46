// `shmdict --remote ADDR ...` against the same commands run locally: two fresh dicts get the same
// command sequence, one through shared memory and one through a real bridge, and every command
// must print the same stdout and exit with the same status (0; 1 key missing; 2 error with one
// stderr line naming the dict).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/dict_status.h"
#include "shmdict/local_catalog.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using Ran = CliRun;

class CliRemoteTest : public DictTestBase {
 protected:
  void SetUp() override {
    if (std::string_view(SHMDICT_CLI_PATH).empty()) GTEST_SKIP() << "the CLI is not built";
    ASSERT_TRUE(bridge_.Start());
  }

  Ran Run(std::vector<std::string> args, const std::string& input = "") {
    return RunCli(args, input);
  }

  BridgeProcess bridge_;
  TempDir dir_;
};

TEST_F(CliRemoteTest, EveryDataCommandBehavesAsLocally) {
  const std::string local = name_;
  const std::string remote = NewDictName();
  for (const std::string& name : {local, remote}) ASSERT_EQ(Run({"create", name}).code, 0);
  // Each step: the arguments after the dict name's position are the same for both.
  struct Step {
    std::vector<std::string> before_name;
    std::vector<std::string> after_name;
    std::string input;
  };
  const std::vector<Step> steps = {
      {{"set"}, {"n", "5", "--type", "int"}},
      {{"get"}, {"n"}},
      {{"get"}, {"missing"}},
      {{"del"}, {"missing"}},
      {{"incr"}, {"n", "3"}},
      {{"incr"}, {"counter", "-2"}},
      {{"set"}, {"s", "hello"}},
      {{"incr"}, {"s"}},
      {{"set"}, {"j", "{\"a\":[1,2]}", "--type", "json"}},
      {{"set"}, {"j2", "{not json", "--type", "json"}},
      {{"set"}, {"f", "2.5", "--type", "float"}},
      {{"set"}, {"b", "true", "--type", "bool"}},
      {{"set"}, {"raw", "\x01\x02", "--type", "bytes"}},
      {{"import"}, {"-"}, "{\"key\":\"i1\",\"value\":1}\n{\"key\":\"i2\",\"value\":\"two\"}"},
      {{"import"}, {"-"}, "{\"key\":\"i3\",\"value\":3}\nnot json"},
      {{"del"}, {"n"}},
      {{"list"}, {}},
      {{"list"}, {"--json"}},
      {{"export"}, {}},
      {{"watch"}, {"--from", "0", "--count", "12"}},
      {{"watch"}, {"--from", "3", "--count", "4", "--json"}},
  };
  for (const Step& step : steps) {
    auto args = [&](const std::string& name, bool through_bridge) {
      std::vector<std::string> all;
      if (through_bridge) all = {"--remote", bridge_.address()};
      all.insert(all.end(), step.before_name.begin(), step.before_name.end());
      all.push_back(name);
      all.insert(all.end(), step.after_name.begin(), step.after_name.end());
      return all;
    };
    const Ran here = Run(args(local, false), step.input);
    const Ran there = Run(args(remote, true), step.input);
    std::string shown;
    for (const std::string& a : args(remote, true)) shown += " " + a;
    SCOPED_TRACE("shmdict" + shown);
    EXPECT_EQ(there.code, here.code) << "local stderr: " << here.err << "remote: " << there.err;
    EXPECT_EQ(there.out, here.out);
    if (there.code == 2) {
      EXPECT_EQ(std::count(there.err.begin(), there.err.end(), '\n'), 1) << there.err;
      EXPECT_NE(there.err.find("'" + remote + "'"), std::string::npos) << there.err;
    }
  }
  // Status and ls through the bridge name the dict and its revision.
  const Ran status = Run({"--remote", bridge_.address(), "status", remote, "--json"});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("\"name\":\"" + remote + "\""), std::string::npos) << status.out;
  // One status schema for both transports: a bridge reports every field the local catalog does,
  // but the one about the caller's own pid namespace, and names itself.
  const Ran local_status = Run({"status", remote});
  const Ran remote_status = Run({"--remote", bridge_.address(), "status", remote});
  ASSERT_EQ(local_status.code, 0) << local_status.err;
  ASSERT_EQ(remote_status.code, 0) << remote_status.err;
  for (const StatusField& field : StatusFields()) {
    const std::string line = "\n" + std::string(field.name) + ": ";
    // (Locally, "bridge: ..." lines list this host's bridges serving the dict instead.)
    if (field.name != "bridge") {
      EXPECT_NE(("\n" + local_status.out).find(line), std::string::npos)
          << field.name << " locally:\n"
          << local_status.out;
    }
    EXPECT_EQ(("\n" + remote_status.out).find(line) != std::string::npos,
              field.name != "lock_holder_in_this_pid_namespace")
        << field.name << " through the bridge:\n"
        << remote_status.out;
  }
  EXPECT_NE(remote_status.out.find("bridge: " + bridge_.address() + "\n"), std::string::npos)
      << remote_status.out;
  const Ran ls = Run({"--remote", bridge_.address(), "ls"});
  EXPECT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find(remote + "\t"), std::string::npos) << ls.out;
  for (const std::string& name : {local, remote}) EXPECT_EQ(Run({"unlink", name}).code, 0);
}

TEST_F(CliRemoteTest, ErrorsAreOneLineWithExitStatusTwo) {
  const std::string missing = name_;
  Ran ran = Run({"--remote", bridge_.address(), "get", missing, "k"});
  EXPECT_EQ(ran.code, 2);
  EXPECT_NE(ran.err.find("NOT_FOUND"), std::string::npos) << ran.err;
  EXPECT_THAT(LocalCatalog().Inspect(missing), StatusIs(StatusCode::kNotFound))
      << "a remote command must never create the dict";

  ran = Run({"--remote", bridge_.address(), "create", missing});
  EXPECT_EQ(ran.code, 2);
  EXPECT_NE(ran.err.find("--allow-create"), std::string::npos) << ran.err;
  EXPECT_THAT(LocalCatalog().Inspect(missing), StatusIs(StatusCode::kNotFound));

  // No bridge there: UNAVAILABLE, never "key missing".
  ran = Run({"--remote", "unix:" + dir_.path() + "/nobody.sock", "get", missing, "k"});
  EXPECT_EQ(ran.code, 2);
  EXPECT_NE(ran.err.find("UNAVAILABLE"), std::string::npos) << ran.err;
  EXPECT_EQ(std::count(ran.err.begin(), ran.err.end(), '\n'), 1) << ran.err;
}

}  // namespace
}  // namespace shmdict::testing
