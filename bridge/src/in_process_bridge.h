// InProcessBridge: a fixture for the bridge's unit tests that serves a BridgeServer from the test
// process on a Unix socket in a fresh temporary directory (which also holds its presence record,
// so that nothing is written to /dev/shm but the test's own dicts), with a raw shmdict.v1.Dict
// stub connected to it.
//
// Test-only (included by bridge/src/*_test.cc). Use from the test's main thread.
#ifndef SHMDICT_BRIDGE_IN_PROCESS_BRIDGE_H_
#define SHMDICT_BRIDGE_IN_PROCESS_BRIDGE_H_

#include <grpcpp/grpcpp.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "bridge_config.h"
#include "bridge_server.h"
#include "dict_test_base.h"
#include "shmdict/v1/dict.grpc.pb.h"

namespace shmdict::bridge {

// Polls `done` until it holds or 30 s pass: a regression fails the test instead of hanging it
// until ctest's timeout (a deadline for what must happen, never a measured time).
template <typename Fn>
bool Eventually(Fn&& done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class InProcessBridge : public testing::DictTestBase {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shmdict-bridge-unit-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    config_.listen = {"unix:" + dir_ + "/bridge.sock"};
    config_.presence_dir = dir_ + "/presence";
  }
  void TearDown() override {
    StopBridge();  // closes its handles before the base checks /dev/shm
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    DictTestBase::TearDown();
  }

  // Starts the server with config_ (adjust it first) and connects stub_ to its first address.
  void StartBridge() {
    auto server = BridgeServer::Start(config_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
    ASSERT_FALSE(server_->addresses().empty());
    stub_ = v1::Dict::NewStub(
        grpc::CreateChannel(server_->addresses().front(), grpc::InsecureChannelCredentials()));
  }

  void StopBridge() {
    stub_.reset();
    server_.reset();
  }

  // A client context whose calls give up after `patience` (a hung bridge fails the test instead
  // of hanging it).
  static std::unique_ptr<grpc::ClientContext> Context(
      std::chrono::seconds patience = std::chrono::seconds(60)) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + patience);
    return context;
  }

  std::string dir_;
  BridgeConfig config_;
  std::unique_ptr<BridgeServer> server_;
  std::unique_ptr<v1::Dict::Stub> stub_;
};

// InProcessBridge with a dict of its own (name_) created before each test and closed after the
// server stopped; dict_ is the test's local handle of it.
class InProcessBridgeWithDict : public InProcessBridge {
 protected:
  void SetUp() override {
    InProcessBridge::SetUp();
    auto created = Dict::Open(DictOptions());
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    dict_.emplace(std::move(*created));
  }
  void TearDown() override {
    StopBridge();
    dict_.reset();
    InProcessBridge::TearDown();
  }

  // The options the fixture's dict is created with; a test suite that needs another log size
  // overrides this.
  virtual Options DictOptions() { return CreateOptions(name_); }

  std::optional<Dict> dict_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_IN_PROCESS_BRIDGE_H_
