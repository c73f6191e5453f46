// BridgeServer in this process: its addresses, what it refuses to start with, tokens and the
// allow-list on real calls, health, the presence record, --idle-exit and shutdown.
#include "bridge_server.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <future>
#include <string>

#include "in_process_bridge.h"
#include "shmdict/bridge/presence.h"
#include "shmdict/remote_catalog.h"
#include "shmdict/remote_dict.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using namespace std::chrono_literals;

class BridgeServerTest : public InProcessBridgeWithDict {
 protected:
  // Get of `key` in `dict` with `token` (empty: none) through stub_.
  grpc::Status Get(const std::string& dict, const std::string& token = "") {
    auto context = Context();
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    v1::GetRequest request;
    request.set_dict(dict);
    request.set_key("k");
    v1::GetResponse response;
    return stub_->Get(context.get(), request, &response);
  }
  grpc::Status Set(const std::string& dict, const std::string& token = "") {
    auto context = Context();
    if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
    v1::SetRequest request;
    request.set_dict(dict);
    request.set_key("k");
    wire::ToProto(Value::Int(7), request.mutable_value());
    v1::WriteResponse response;
    return stub_->Set(context.get(), request, &response);
  }
};

TEST_F(BridgeServerTest, ServesTheDictsOfThisHostOnItsUnixSocket) {
  StartBridge();
  EXPECT_EQ(server_->addresses(), std::vector<std::string>{"unix:" + dir_ + "/bridge.sock"});
  ASSERT_TRUE(Set(name_).ok());
  auto value = dict_->Get("k");
  ASSERT_OK(value);
  ASSERT_TRUE(value->has_value());
  EXPECT_EQ(**value, Value::Int(7));
}

TEST_F(BridgeServerTest, TcpPortZeroIsShownAsThePortChosen) {
  config_.listen = {"127.0.0.1:0"};
  StartBridge();
  ASSERT_EQ(server_->addresses().size(), 1u);
  // (Parsed by hand: GCC 12 under -fsanitize=address,undefined warns inside <regex>, an error
  // with -Werror.)
  const std::string& address = server_->addresses()[0];
  const std::string prefix = "127.0.0.1:";
  ASSERT_EQ(address.rfind(prefix, 0), 0u) << address;
  const std::string port = address.substr(prefix.size());
  ASSERT_FALSE(port.empty()) << address;
  ASSERT_EQ(port.find_first_not_of("0123456789"), std::string::npos) << address;
  EXPECT_NE(std::stoi(port), 0);
  EXPECT_TRUE(Get(name_).ok()) << "nothing serves at " << server_->addresses()[0];
}

TEST_F(BridgeServerTest, AddressAnotherBridgeServesIsRefusedAndTheFirstKeepsServing) {
  config_.listen.push_back("127.0.0.1:0");
  StartBridge();
  BridgeConfig same_socket = config_;
  same_socket.listen = {config_.listen[0]};
  auto second = BridgeServer::Start(same_socket);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists) << second.status().ToString();

  BridgeConfig same_port = config_;
  same_port.listen = {server_->addresses()[1]};  // the TCP port the first one chose
  auto third = BridgeServer::Start(same_port);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kUnavailable) << third.status().ToString();
  EXPECT_NE(third.status().message().find("cannot listen on " + server_->addresses()[1]),
            std::string::npos)
      << third.status().message();

  EXPECT_TRUE(Get(name_).ok()) << "the refused servers took the first one's address";
}

TEST_F(BridgeServerTest, SettingsNoServerCanUseAreRefusedNamingTheFlag) {
  struct Case {
    std::function<void(BridgeConfig*)> change;
    StatusCode code;
    std::string says;
  };
  const std::string absent = dir_ + "/absent.pem";
  const std::vector<Case> cases = {
      {[](BridgeConfig* c) { c->listen = {"localhost"}; }, StatusCode::kInvalidArgument,
       "neither HOST:PORT nor unix:PATH"},
      {[](BridgeConfig* c) { c->health_listen = "nowhere"; }, StatusCode::kInvalidArgument,
       "--health-listen"},
      {[](BridgeConfig* c) { c->metrics_listen = "unix:/tmp/m.sock"; },
       StatusCode::kInvalidArgument, "--metrics-listen"},
      {[&](BridgeConfig* c) { c->tls_cert = absent; }, StatusCode::kInvalidArgument, "--tls-key"},
      {[&](BridgeConfig* c) {
         c->tls_cert = absent;
         c->tls_key = absent;
       },
       StatusCode::kNotFound, "--tls-cert '" + absent + "' cannot be read"},
      {[&](BridgeConfig* c) { c->token_file = absent; }, StatusCode::kNotFound, absent},
      {[](BridgeConfig* c) { c->create_mode = 01777; }, StatusCode::kInvalidArgument,
       "--create-mode"},
  };
  for (const Case& test : cases) {
    BridgeConfig config = config_;
    test.change(&config);
    auto server = BridgeServer::Start(config);
    ASSERT_FALSE(server.ok()) << test.says;
    EXPECT_EQ(server.status().code(), test.code) << server.status().ToString();
    EXPECT_NE(server.status().message().find(test.says), std::string::npos)
        << server.status().message();
  }
  // Nothing was left claimed: a server starts on the same socket now.
  StartBridge();
}

TEST_F(BridgeServerTest, TokensAndTheAllowListDecideEveryCall) {
  const std::string tokens = dir_ + "/tokens";
  std::ofstream(tokens) << "writer rw\nreader ro\n";
  config_.token_file = tokens;
  config_.dicts = {name_};
  StartBridge();

  EXPECT_EQ(Get(name_).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Get(name_, "stranger").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Get(name_, "reader").ok());
  EXPECT_EQ(Set(name_, "reader").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Set(name_, "writer").ok());
  EXPECT_EQ(Get(NewDictName(), "writer").error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << "a dict off the --dict list was served";

  // SIGHUP's work: the new file is in force at once, a broken one changes nothing.
  std::ofstream(tokens, std::ios::trunc) << "rotated rw\n";
  ASSERT_OK(server_->ReloadTokens());
  EXPECT_EQ(Get(name_, "writer").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Set(name_, "rotated").ok());
  std::ofstream(tokens, std::ios::trunc) << "rotated\n";
  EXPECT_EQ(server_->ReloadTokens().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Set(name_, "rotated").ok());
}

TEST_F(BridgeServerTest, HealthReportsTheBridgeAndEachDictItServes) {
  config_.health_listen = "unix:" + dir_ + "/health.sock";
  StartBridge();
  EXPECT_EQ(server_->health_address(), config_.health_listen);
  RemoteOptions options;
  options.address = server_->health_address();
  auto bridge = RemoteCatalog(options).CheckHealth("");
  ASSERT_OK(bridge);
  EXPECT_TRUE(*bridge);
  auto service = RemoteCatalog(options).CheckHealthOfService("shmdict.v1.Dict");
  ASSERT_OK(service);
  EXPECT_TRUE(*service);

  ASSERT_TRUE(Get(name_).ok());  // attaches the dict
  options.address = server_->addresses()[0];
  auto dict = RemoteCatalog(options).CheckHealth(name_);
  ASSERT_OK(dict);
  EXPECT_TRUE(*dict);
}

TEST_F(BridgeServerTest, PresenceRecordListsTheServerUntilShutdown) {
  StartBridge();
  ASSERT_TRUE(Get(name_).ok());  // attaches the dict
  std::vector<BridgeRecord> live = ListLiveBridges(config_.presence_dir);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].pid, getpid());
  EXPECT_EQ(live[0].addresses, server_->addresses());

  server_->Shutdown(std::chrono::system_clock::now() + 5s);
  EXPECT_TRUE(ListLiveBridges(config_.presence_dir).empty());
  EXPECT_FALSE(Get(name_).ok()) << "served after Shutdown";
}

TEST_F(BridgeServerTest, WaitReturnsOnceIdleExitFindsNothingInFlight) {
  config_.idle_exit = 1s;
  StartBridge();
  ASSERT_TRUE(Get(name_).ok());
  auto waited = std::async(std::launch::async, [this] { server_->Wait(); });
  const bool returned = waited.wait_for(60s) == std::future_status::ready;
  if (!returned) server_->RequestStop();  // let the test end
  EXPECT_TRUE(returned) << "--idle-exit never ended Wait()";
  // Wait does not stop serving by itself: the owner shuts down.
  EXPECT_TRUE(Get(name_).ok());
}

TEST_F(BridgeServerTest, RequestStopEndsWaitFromAnotherThread) {
  StartBridge();
  auto waited = std::async(std::launch::async, [this] { server_->Wait(); });
  server_->RequestStop();
  EXPECT_EQ(waited.wait_for(60s), std::future_status::ready);
}

}  // namespace
}  // namespace shmdict::bridge
