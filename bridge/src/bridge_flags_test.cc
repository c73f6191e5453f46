// AddServingFlags, in-process: both flag sets parse into a BridgeConfig, converted flags land in
// their fields, a bad value is a parse error naming the flag, and the replica's set is the bridge's
// without the flags that choose or create dicts or end the process when idle.
#include "bridge_flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace shmdict::bridge {
namespace {

using ::testing::HasSubstr;

// Parses `args` (without the program name) with the flags of `set` into *config.
void Parse(ServingFlagSet set, std::vector<std::string> args, BridgeConfig* config) {
  CLI::App app{"test"};
  AddServingFlags(app, config, set);
  // CLI11 takes the arguments in reverse order.
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  app.parse(reversed);
}

std::vector<std::string> LongFlags(ServingFlagSet set) {
  BridgeConfig config;
  CLI::App app{"test"};
  AddServingFlags(app, &config, set);
  std::vector<std::string> names;
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames()) names.push_back("--" + name);
  }
  return names;
}

TEST(ServingFlagsTest, TheBridgesFlagsFillTheConfigIncludingConvertedOnes) {
  BridgeConfig config;
  Parse(ServingFlagSet::kBridge, {"--listen",        "unix:/tmp/a.sock",
                                  "--listen",        "127.0.0.1:0",
                                  "--dict",          "orders",
                                  "--create-mode",   "0640",
                                  "--socket-mode",   "0600",
                                  "--idle-exit",     "7",
                                  "--max-wait-ms",   "250",
                                  "--allow-create",  "--ensure",
                                  "--max-batch-ops", "3",
                                  "--log-level",     "warn"},
        &config);
  EXPECT_EQ(config.listen, (std::vector<std::string>{"unix:/tmp/a.sock", "127.0.0.1:0"}));
  EXPECT_EQ(config.dicts.count("orders"), 1u);
  EXPECT_EQ(config.create_mode, mode_t{0640});
  EXPECT_EQ(config.socket_mode, mode_t{0600});
  EXPECT_EQ(config.idle_exit, std::chrono::seconds(7));
  EXPECT_EQ(config.max_wait, std::chrono::milliseconds(250));
  EXPECT_TRUE(config.allow_create);
  EXPECT_TRUE(config.ensure);
  EXPECT_EQ(config.max_batch_ops, 3u);
  EXPECT_EQ(config.log_level, "warn");
}

TEST(ServingFlagsTest, FlagsNotGivenKeepTheConfigsDefaults) {
  BridgeConfig config;
  config.socket_mode = 0640;  // a caller's own default stays too
  Parse(ServingFlagSet::kBridge, {}, &config);
  const BridgeConfig defaults;
  EXPECT_EQ(config.socket_mode, mode_t{0640});
  EXPECT_EQ(config.create_mode, defaults.create_mode);
  EXPECT_EQ(config.idle_exit, defaults.idle_exit);
  EXPECT_EQ(config.max_wait, defaults.max_wait);
  EXPECT_TRUE(config.listen.empty());
}

TEST(ServingFlagsTest, ABadFileModeIsAParseErrorNamingTheFlag) {
  for (const char* flag : {"--socket-mode", "--create-mode"}) {
    BridgeConfig config;
    try {
      Parse(ServingFlagSet::kBridge, {flag, "0999"}, &config);
      ADD_FAILURE() << flag << " 0999 was accepted";
    } catch (const CLI::ValidationError& error) {
      EXPECT_THAT(error.what(), HasSubstr(std::string(flag) + " '0999'"));
    }
  }
}

TEST(ServingFlagsTest, TheReplicasSetIsTheBridgesWithoutChoosingCreatingOrIdling) {
  const std::vector<std::string> bridge = LongFlags(ServingFlagSet::kBridge);
  const std::vector<std::string> replica = LongFlags(ServingFlagSet::kReplica);
  const std::vector<std::string> omitted = {
      "--dict", "--allow-create", "--create-mode", "--max-create-bytes", "--idle-exit", "--ensure"};
  for (const std::string& name : bridge) {
    const bool left_out = std::find(omitted.begin(), omitted.end(), name) != omitted.end();
    const bool kept = std::find(replica.begin(), replica.end(), name) != replica.end();
    EXPECT_NE(left_out, kept) << name;
  }
  EXPECT_EQ(replica.size() + omitted.size(), bridge.size());
  for (const char* needed :
       {"--listen", "--tls-cert", "--tls-key", "--tls-client-ca", "--token-file", "--health-listen",
        "--metrics-listen", "--max-batch-ops", "--max-value-bytes", "--log-level"}) {
    EXPECT_NE(std::find(replica.begin(), replica.end(), needed), replica.end()) << needed;
  }
  BridgeConfig config;
  EXPECT_THROW(Parse(ServingFlagSet::kReplica, {"--dict", "orders"}, &config), CLI::ParseError);
  EXPECT_THROW(Parse(ServingFlagSet::kReplica, {"--idle-exit", "3"}, &config), CLI::ParseError);
  Parse(ServingFlagSet::kReplica, {"--listen", "unix:/tmp/r.sock", "--max-wait-ms", "9"}, &config);
  EXPECT_EQ(config.listen, std::vector<std::string>{"unix:/tmp/r.sock"});
  EXPECT_EQ(config.max_wait, std::chrono::milliseconds(9));
}

}  // namespace
}  // namespace shmdict::bridge
