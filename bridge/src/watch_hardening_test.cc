// The Watch stream against hostile or careless clients (issue 19): a start ahead of the dict, a
// start far beyond it, a token revoked while its streams are open, a stream whose start message
// never comes or does not parse, more streams than the waiting-calls gate admits, shutdown while a
// stream has not started, and dict names made to forge or flood the log.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "authorizer.h"
#include "call_limits.h"
#include "dict_registry.h"
#include "in_process_bridge.h"
#include "metrics.h"
#include "watch_stream.h"

namespace shmdict::bridge {
namespace {

using Stream = grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>;

v1::WatchRequest StartRequest(const std::string& dict, uint64_t after) {
  v1::WatchRequest request;
  request.mutable_start()->set_dict(dict);
  request.mutable_start()->set_after_revision(after);
  request.mutable_start()->set_progress_interval_ms(3600 * 1000);  // only asked-for progress
  return request;
}

v1::WatchRequest ProgressRequest() {
  v1::WatchRequest request;
  request.mutable_progress();
  return request;
}

// Reads to the end of the stream and returns how it finished.
grpc::Status Drain(Stream* stream) {
  v1::WatchResponse response;
  while (stream->Read(&response)) {
  }
  return stream->Finish();
}

// Every log line of the process while it lives, captured from spdlog's default logger. Swapping
// the default logger races with threads that log: construct it before the bridge starts and
// destroy it after the bridge stopped.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::trace);
    logger->set_pattern("level=%l %v");
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::vector<std::string> Lines() {
    spdlog::default_logger()->flush();
    std::vector<std::string> lines;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

// A BridgeServer in this process with a dict and, optionally, tokens.
class WatchContractTest : public InProcessBridgeWithDict {
 protected:
  void WriteTokens(const std::string& lines) {
    std::ofstream(dir_ + "/tokens") << lines;
    config_.token_file = dir_ + "/tokens";
  }

  struct OpenStream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<Stream> stream;
  };
  OpenStream Open(const std::string& token = "",
                  std::chrono::seconds patience = std::chrono::seconds(60)) {
    OpenStream open;
    open.context = Context(patience);
    if (!token.empty()) open.context->AddMetadata("authorization", "Bearer " + token);
    open.stream = stub_->Watch(open.context.get());
    return open;
  }
  // Opens a stream after the dict's current revision and waits for its answer to a progress
  // request: the stream is started and attached when this returns.
  OpenStream OpenStarted(const std::string& token) {
    OpenStream open = Open(token);
    EXPECT_TRUE(open.stream->Write(StartRequest(name_, dict_->revision())));
    EXPECT_TRUE(open.stream->Write(ProgressRequest()));
    v1::WatchResponse response;
    EXPECT_TRUE(open.stream->Read(&response));
    EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
    return open;
  }

  void Write(int count) {
    for (int i = 0; i < count; ++i) {
      ASSERT_OK(dict_->Set("k" + std::to_string(i), Value::Int(i)));
    }
  }
};

TEST_F(WatchContractTest, StartAheadOfTheDictWaitsForItAndProgressNeverPassesTheDict) {
  StartBridge();
  Write(3);
  const uint64_t current = dict_->revision();
  const uint64_t after = current + 5;
  OpenStream open = Open();
  ASSERT_TRUE(open.stream->Write(StartRequest(name_, after)));
  ASSERT_TRUE(open.stream->Write(ProgressRequest()));
  v1::WatchResponse response;
  ASSERT_TRUE(open.stream->Read(&response));
  ASSERT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
  EXPECT_LE(response.revision(), current) << "a progress message claimed a revision the dict "
                                             "has not committed";

  // The dict reaches the start and passes it: only the changes after `after` arrive.
  Write(10);
  const uint64_t last = dict_->revision();
  std::vector<uint64_t> revisions;
  while (revisions.empty() || revisions.back() < last) {
    ASSERT_TRUE(open.stream->Read(&response));
    EXPECT_LE(response.revision(), dict_->revision());
    for (const v1::Change& change : response.changes()) revisions.push_back(change.revision());
  }
  ASSERT_FALSE(revisions.empty());
  EXPECT_EQ(revisions.front(), after + 1);
  EXPECT_EQ(revisions.size(), last - after);
  open.context->TryCancel();
}

TEST_F(WatchContractTest, StartBeyondTheHorizonEndsWithOutOfRange) {
  StartBridge();
  Write(2);
  const uint64_t horizon = uint64_t{1} << 32;  // kWatchStartHorizon, as documented
  OpenStream at_horizon = Open();
  ASSERT_TRUE(at_horizon.stream->Write(StartRequest(name_, dict_->revision() + horizon)));
  ASSERT_TRUE(at_horizon.stream->Write(ProgressRequest()));
  v1::WatchResponse response;
  ASSERT_TRUE(at_horizon.stream->Read(&response)) << "a start at the horizon waits";
  EXPECT_LE(response.revision(), dict_->revision());
  at_horizon.context->TryCancel();

  for (const uint64_t after : {dict_->revision() + horizon + 1, ~uint64_t{0}}) {
    OpenStream open = Open("", std::chrono::seconds(20));
    ASSERT_TRUE(open.stream->Write(StartRequest(name_, after)));
    grpc::Status status = Drain(open.stream.get());
    EXPECT_EQ(status.error_code(), grpc::StatusCode::OUT_OF_RANGE) << status.error_message();
  }
}

TEST_F(WatchContractTest, TokenReloadEndsTheStreamsOfRevokedTokensOnly) {
  WriteTokens("revoked rw\nkept ro\ndowngraded rw\n");
  StartBridge();
  OpenStream revoked = OpenStarted("revoked");
  OpenStream kept = OpenStarted("kept");
  OpenStream downgraded = OpenStarted("downgraded");

  WriteTokens("kept ro\ndowngraded ro\n");
  ASSERT_OK(server_->ReloadTokens());
  Write(1);
  grpc::Status status = Drain(revoked.stream.get());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  // A Watch needs read access only: a token that lost write access keeps watching.
  for (OpenStream* open : {&kept, &downgraded}) {
    v1::WatchResponse response;
    ASSERT_TRUE(open->stream->Read(&response));
    EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_CHANGES);
    open->context->TryCancel();
  }
}

TEST_F(WatchContractTest, HalfCloseBeforeStartEndsTheStreamWithInvalidArgument) {
  StartBridge();
  OpenStream open = Open("", std::chrono::seconds(20));
  ASSERT_TRUE(open.stream->WritesDone());
  grpc::Status status = Drain(open.stream.get());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
}

TEST_F(WatchContractTest, FirstMessageThatDoesNotParseEndsTheStreamWithInvalidArgument) {
  StartBridge();
  auto channel =
      grpc::CreateChannel(server_->addresses().front(), grpc::InsecureChannelCredentials());
  const grpc::internal::RpcMethod method("/shmdict.v1.Dict/Watch",
                                         grpc::internal::RpcMethod::BIDI_STREAMING, channel);
  auto context = Context(std::chrono::seconds(20));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> raw(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(), method, context.get()));
  // Field 1 (start), length-delimited, claiming 2^32-1 bytes that are not there.
  const std::string garbage("\x0a\xff\xff\xff\xff\x0f", 6);
  grpc::Slice slice(garbage);
  grpc::ByteBuffer message(&slice, 1);
  ASSERT_TRUE(raw->Write(message));
  grpc::ByteBuffer response;
  while (raw->Read(&response)) {
  }
  grpc::Status status = raw->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
}

TEST_F(WatchContractTest, UntrustedDictNamesAreLoggedEscapedAndBounded) {
  WriteTokens("good rw\n");
  config_.dicts = {name_};
  LogCapture capture;
  StartBridge();
  const std::string forged = "x\n2026-01-01T00:00:00.000 level=error forged line";
  const std::string huge(1 << 20, 'n');
  for (const std::string& name : {forged, huge}) {
    OpenStream open = Open("good", std::chrono::seconds(20));
    ASSERT_TRUE(open.stream->Write(StartRequest(name, 0)));
    grpc::Status status = Drain(open.stream.get());
    // Refused for the name itself, before the --dict list is asked (as every unary call is).
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_LT(status.error_message().size(), 1024u);
    // Without a token the name is never read: refused before the start message.
    OpenStream anonymous = Open("", std::chrono::seconds(20));
    anonymous.stream->Write(StartRequest(name, 0));
    EXPECT_EQ(Drain(anonymous.stream.get()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  StopBridge();
  const std::vector<std::string> lines = capture.Lines();
  size_t refusals = 0;
  for (const std::string& line : lines) {
    EXPECT_EQ(line.rfind("level=", 0), 0u) << "a line not written by the logger: " << line;
    if (line.find("forged line") != std::string::npos) {
      EXPECT_NE(line.find("x\\x0a2026"), std::string::npos) << "the newline was not escaped";
    }
    EXPECT_LT(line.size(), 1024u) << line.substr(0, 200);
    if (line.find("Watch refused dict=") != std::string::npos) ++refusals;
  }
  EXPECT_EQ(refusals, 2u);
}

// A Watch-only server around WatchStream, for what BridgeServer does not expose: its own limits,
// waiting-calls gate, registry and metrics.
class WatchOnlyService : public v1::Dict::WithRawCallbackMethod_Watch<v1::Dict::Service> {
 public:
  WatchOnlyService(DictRegistry* registry, const StreamLimits& limits, const Authorizer* authorizer,
                   Metrics* metrics, WaitingCalls* waiting)
      : registry_(registry),
        limits_(limits),
        authorizer_(authorizer),
        metrics_(metrics),
        waiting_(waiting) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Watch(
      grpc::CallbackServerContext* context) override {
    auto* stream = new WatchStream(registry_, limits_, authorizer_, metrics_, *context, waiting_);
    opened.fetch_add(1);
    return stream;
  }
  std::atomic<int> opened{0};

 private:
  DictRegistry* const registry_;
  const StreamLimits limits_;
  const Authorizer* const authorizer_;
  Metrics* const metrics_;
  WaitingCalls* const waiting_;
};

class WatchStreamLimitsTest : public InProcessBridge {
 protected:
  void Serve(std::chrono::milliseconds start_timeout, size_t max_waiting) {
    auto authorizer = Authorizer::Create({});
    ASSERT_TRUE(authorizer.ok());
    authorizer_ = std::move(*authorizer);
    registry_ = std::make_unique<DictRegistry>(DictRegistry::Limits{});
    gate_ = std::make_unique<WaitingCalls>(max_waiting);
    StreamLimits limits;
    limits.start_timeout = start_timeout;
    service_ = std::make_unique<WatchOnlyService>(registry_.get(), limits, authorizer_.get(),
                                                  &metrics_, gate_.get());
    grpc::ServerBuilder builder;
    const std::string address = "unix:" + dir_ + "/watch.sock";
    builder.AddListeningPort(address, grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    watch_server_ = builder.BuildAndStart();
    ASSERT_NE(watch_server_, nullptr);
    watch_stub_ =
        v1::Dict::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (registry_) registry_->Shutdown(Status(StatusCode::kUnavailable, "test over"));
    if (watch_server_) watch_server_->Shutdown(std::chrono::system_clock::now());
    watch_server_.reset();
    watch_stub_.reset();
    InProcessBridge::TearDown();
  }
  // Waits until the server has created `count` streams in all.
  void AwaitOpened(int count) {
    ASSERT_TRUE(Eventually([&] { return service_->opened.load() >= count; }))
        << "the server created fewer than " << count << " streams";
  }

  Metrics metrics_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<DictRegistry> registry_;
  std::unique_ptr<WaitingCalls> gate_;
  std::unique_ptr<WatchOnlyService> service_;
  std::unique_ptr<grpc::Server> watch_server_;
  std::unique_ptr<v1::Dict::Stub> watch_stub_;
};

TEST_F(WatchStreamLimitsTest, StreamWithoutStartEndsAfterTheStartTimeoutAndLeavesNothingInFlight) {
  Serve(std::chrono::milliseconds(200), 8);
  auto context = Context(std::chrono::seconds(30));
  auto stream = watch_stub_->Watch(context.get());
  grpc::Status status = Drain(stream.get());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_NE(status.error_message().find("no `start` message"), std::string::npos)
      << status.error_message();
  // Its slot and its place among the calls in flight (--idle-exit) are given back.
  EXPECT_TRUE(Eventually([&] {
    return gate_->in_use() == 0 && metrics_.IdleFor() != std::chrono::nanoseconds::zero();
  }));
}

TEST_F(WatchStreamLimitsTest, StreamsBeyondTheWaitingCallsCapAreRefusedNamingTheFlag) {
  Serve(std::chrono::seconds(600), 1);
  auto first_context = Context();
  auto first = watch_stub_->Watch(first_context.get());
  AwaitOpened(1);
  auto second_context = Context(std::chrono::seconds(20));
  auto second = watch_stub_->Watch(second_context.get());
  grpc::Status status = Drain(second.get());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("--max-waiting-calls"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(gate_->in_use(), 1u);
  // The slot is given back when the stream ends.
  first_context->TryCancel();
  Drain(first.get());
  EXPECT_TRUE(Eventually([&] { return gate_->in_use() == 0; }));
}

TEST_F(WatchStreamLimitsTest, ShutdownEndsAStreamThatHasNotStartedWithUnavailable) {
  Serve(std::chrono::seconds(600), 8);
  auto context = Context(std::chrono::seconds(20));
  auto stream = watch_stub_->Watch(context.get());
  AwaitOpened(1);
  registry_->Shutdown(Status(StatusCode::kUnavailable, "the bridge is shutting down"));
  grpc::Status status = Drain(stream.get());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

}  // namespace
}  // namespace shmdict::bridge
