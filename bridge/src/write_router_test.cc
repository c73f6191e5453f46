// The write seam (write_router.h), in-process: with a WriteRouter every write call of the service
// runs against the Store the router gives (here another local dict standing in for an upstream),
// and answers with that Store's revision; its errors reach the client with their code and message;
// requests the service refuses never reach it; reads never do.
#include "write_router.h"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "in_process_bridge.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using ::testing::HasSubstr;

// Records the dict each call was routed for; then attaches `target` (a dict of its own, standing
// in for the upstream a replica writes to) or fails with `error`.
class FakeRouter final : public WriteRouter {
 public:
  explicit FakeRouter(std::string target) : target_(std::move(target)) {}

  void FailWith(Status error) {
    std::lock_guard lock(mu_);
    error_ = std::move(error);
  }
  std::vector<std::string> routed() const {
    std::lock_guard lock(mu_);
    return routed_;
  }

  Result<std::unique_ptr<Store>> Route(Dict& dict) override {
    std::lock_guard lock(mu_);
    routed_.push_back(dict.name());
    if (error_) return *error_;
    Options options;
    options.name = target_;
    options.create_mode = CreateMode::kMustAttach;
    options.auto_unlink = false;
    Result<Dict> attached = Dict::Open(options);
    if (!attached.ok()) return attached.status();
    return std::unique_ptr<Store>(std::make_unique<Dict>(std::move(*attached)));
  }

 private:
  const std::string target_;
  mutable std::mutex mu_;
  std::vector<std::string> routed_;  // guarded by mu_
  std::optional<Status> error_;      // guarded by mu_
};

v1::Value Proto(const Value& value) {
  v1::Value out;
  wire::ToProto(value, &out);
  return out;
}

class WriteRouterTest : public InProcessBridgeWithDict {
 protected:
  void SetUp() override {
    InProcessBridgeWithDict::SetUp();
    upstream_name_ = NewDictName();
    auto upstream = Dict::Open(CreateOptions(upstream_name_));
    ASSERT_TRUE(upstream.ok()) << upstream.status().ToString();
    upstream_.emplace(std::move(*upstream));
    // Revisions ahead of the served dict's: an answer carrying the served dict's revision is
    // told apart from one carrying the upstream's.
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(upstream_->Set("warm", Value::Int(i)).ok());
    router_ = std::make_unique<FakeRouter>(upstream_name_);
  }
  void TearDown() override {
    StopBridge();
    upstream_.reset();
    InProcessBridgeWithDict::TearDown();
  }

  void StartRouted() {
    config_.write_router = router_.get();
    StartBridge();
  }

  // The nine write calls, each with its answer's revision (or the call's error).
  struct Answer {
    grpc::Status status;
    uint64_t revision = 0;
  };
  Answer CallSet(const std::string& key, const Value& value) {
    v1::SetRequest request;
    request.set_dict(name_);
    request.set_key(key);
    *request.mutable_value() = Proto(value);
    v1::WriteResponse response;
    grpc::Status status = stub_->Set(Context().get(), request, &response);
    return {status, response.revision()};
  }
  Answer CallDelete(const std::string& key) {
    v1::DeleteRequest request;
    request.set_dict(name_);
    request.set_key(key);
    v1::DeleteResponse response;
    grpc::Status status = stub_->Delete(Context().get(), request, &response);
    return {status, response.revision()};
  }
  Answer CallPop(const std::string& key, std::optional<Value>* popped) {
    v1::PopRequest request;
    request.set_dict(name_);
    request.set_key(key);
    v1::PopResponse response;
    grpc::Status status = stub_->Pop(Context().get(), request, &response);
    if (response.found()) {
      EXPECT_TRUE(wire::FromProto(response.value(), &popped->emplace()).ok());
    }
    return {status, response.revision()};
  }
  Answer CallPopItem(std::string* key) {
    v1::PopItemRequest request;
    request.set_dict(name_);
    v1::PopResponse response;
    grpc::Status status = stub_->PopItem(Context().get(), request, &response);
    *key = response.key();
    return {status, response.revision()};
  }
  Answer CallSetDefault(const std::string& key, const Value& value) {
    v1::SetDefaultRequest request;
    request.set_dict(name_);
    request.set_key(key);
    *request.mutable_default_value() = Proto(value);
    v1::SetDefaultResponse response;
    grpc::Status status = stub_->SetDefault(Context().get(), request, &response);
    return {status, response.revision()};
  }
  Answer CallClear() {
    v1::ClearRequest request;
    request.set_dict(name_);
    v1::WriteResponse response;
    grpc::Status status = stub_->Clear(Context().get(), request, &response);
    return {status, response.revision()};
  }
  Answer CallBatch(const std::vector<std::pair<std::string, std::optional<Value>>>& ops) {
    v1::BatchRequest request;
    request.set_dict(name_);
    for (const auto& [key, value] : ops) {
      v1::Mutation* mutation = request.add_mutations();
      mutation->set_key(key);
      mutation->set_op(value ? v1::OP_SET : v1::OP_DELETE);
      if (value) *mutation->mutable_value() = Proto(*value);
    }
    v1::WriteResponse response;
    grpc::Status status = stub_->Batch(Context().get(), request, &response);
    return {status, response.revision()};
  }
  Answer CallCompareAndSet(const std::string& key, const Value& expected, const Value& desired) {
    v1::CompareAndSetRequest request;
    request.set_dict(name_);
    request.set_key(key);
    *request.mutable_expected() = Proto(expected);
    *request.mutable_desired() = Proto(desired);
    v1::CompareAndSetResponse response;
    grpc::Status status = stub_->CompareAndSet(Context().get(), request, &response);
    EXPECT_TRUE(!status.ok() || response.swapped());
    return {status, response.revision()};
  }
  Answer CallIncrement(const std::string& key, int64_t delta) {
    v1::IncrementRequest request;
    request.set_dict(name_);
    request.set_key(key);
    request.set_delta(delta);
    v1::IncrementResponse response;
    grpc::Status status = stub_->Increment(Context().get(), request, &response);
    return {status, response.revision()};
  }

  // Every write call once, in an order where each changes something; `expect(name, answer)`
  // judges each answer.
  template <typename Expect>
  void CallEveryWrite(Expect&& expect) {
    expect("Set", CallSet("a", Value::Str("1")));
    expect("SetDefault", CallSetDefault("b", Value::Str("2")));
    expect("CompareAndSet", CallCompareAndSet("a", Value::Str("1"), Value::Str("3")));
    expect("Increment", CallIncrement("n", 4));
    std::optional<Value> popped;
    expect("Pop", CallPop("b", &popped));
    expect("Delete", CallDelete("n"));
    expect("Batch", CallBatch({{"c", Value::Str("5")}, {"d", Value::Str("6")}, {"a", {}}}));
    std::string key;
    expect("PopItem", CallPopItem(&key));
    expect("Clear", CallClear());
  }

  uint64_t Size(Dict& dict) {
    Result<uint64_t> size = dict.Size();
    EXPECT_TRUE(size.ok());
    return size.ok() ? *size : 0;
  }

  std::string upstream_name_;
  std::optional<Dict> upstream_;
  std::unique_ptr<FakeRouter> router_;
};

TEST_F(WriteRouterTest, EveryWriteGoesThroughTheRouterAndAnswersWithItsStoresRevision) {
  StartRouted();
  const uint64_t served_before = dict_->revision();
  size_t calls = 0;
  CallEveryWrite([&](const char* method, const Answer& answer) {
    SCOPED_TRACE(method);
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    ++calls;
    // Each call was routed once, for the dict it named, and committed upstream.
    const std::vector<std::string> routed = router_->routed();
    ASSERT_EQ(routed.size(), calls);
    EXPECT_EQ(routed.back(), name_);
    EXPECT_EQ(answer.revision, 5u + calls);
  });
  EXPECT_EQ(calls, 9u);
  // The served dict saw none of it.
  EXPECT_EQ(dict_->revision(), served_before);
  EXPECT_EQ(Size(*dict_), 0u);
  // The upstream saw all of it: 5 warm-up commits, then one per call.
  EXPECT_EQ(upstream_->revision(), 5u + 9u);
}

TEST_F(WriteRouterTest, TheRoutedStoresValuesAreWhatTheCallsAnswer) {
  StartRouted();
  ASSERT_TRUE(CallSet("a", Value::Str("x")).status.ok());
  EXPECT_EQ(upstream_->Get("a")->value_or(Value::Null()).data(), "x");
  std::optional<Value> popped;
  ASSERT_TRUE(CallPop("a", &popped).status.ok());
  ASSERT_TRUE(popped.has_value());
  EXPECT_EQ(popped->data(), "x");
  EXPECT_FALSE(*upstream_->Contains("a"));
  // A write that changed nothing answers with the routed Store's current revision.
  Answer missing = CallDelete("a");
  ASSERT_TRUE(missing.status.ok());
  EXPECT_EQ(missing.revision, upstream_->revision());
}

TEST_F(WriteRouterTest, ARouterErrorReachesTheClientWithItsCodeAndMessage) {
  StartRouted();
  router_->FailWith(Status(StatusCode::kUnavailable, "etcd 127.0.0.1:1 is unreachable: retry"));
  const uint64_t upstream_before = upstream_->revision();
  CallEveryWrite([&](const char* method, const Answer& answer) {
    SCOPED_TRACE(method);
    EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_THAT(answer.status.error_message(), HasSubstr("etcd 127.0.0.1:1 is unreachable: retry"));
    // Every bridge error names the dict.
    EXPECT_THAT(answer.status.error_message(), HasSubstr(name_));
  });
  EXPECT_EQ(router_->routed().size(), 9u);
  EXPECT_EQ(upstream_->revision(), upstream_before);
  EXPECT_EQ(dict_->revision(), 0u);
}

// A replica dict refuses local writes with FAILED_PRECONDITION naming the dict, its upstream and
// where writes go: the client must see that code and that message as they are, not INTERNAL and
// not a rewritten text.
TEST_F(WriteRouterTest, FailedPreconditionNamingTheDictPassesThroughUnchanged) {
  StartRouted();
  const std::string message = "dict " + QuoteForMessage(name_) +
                              " is a replica of etcd prefix '/app/': write through "
                              "127.0.0.1:7390 (shmdict-replica --listen)";
  router_->FailWith(Status(StatusCode::kFailedPrecondition, message));
  CallEveryWrite([&](const char* method, const Answer& answer) {
    SCOPED_TRACE(method);
    EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(answer.status.error_message(), message);
  });
}

TEST_F(WriteRouterTest, RequestsTheServiceRefusesNeverReachTheRouter) {
  config_.max_batch_ops = 2;
  StartRouted();
  // A pickle without --allow-pickle, an empty key, a batch over --max-batch-ops, a malformed int.
  v1::SetRequest pickle;
  pickle.set_dict(name_);
  pickle.set_key("k");
  pickle.mutable_value()->set_type(static_cast<uint32_t>(ValueType::kPickle));
  pickle.mutable_value()->set_data("\x80\x04N.");
  v1::WriteResponse written;
  EXPECT_EQ(stub_->Set(Context().get(), pickle, &written).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(CallSet("", Value::Str("v")).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CallBatch({{"a", Value::Str("1")}, {"b", Value::Str("2")}, {"c", Value::Str("3")}})
                .status.error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::CompareAndSetRequest malformed;
  malformed.set_dict(name_);
  malformed.set_key("k");
  malformed.mutable_desired()->set_type(static_cast<uint32_t>(ValueType::kInt64));
  malformed.mutable_desired()->set_data("abc");  // an int is 8 bytes
  v1::CompareAndSetResponse swapped;
  EXPECT_EQ(stub_->CompareAndSet(Context().get(), malformed, &swapped).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // A dict that does not exist here is NOT_FOUND before any routing.
  v1::ClearRequest missing;
  missing.set_dict(NewDictName());
  EXPECT_EQ(stub_->Clear(Context().get(), missing, &written).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(router_->routed().empty());
}

TEST_F(WriteRouterTest, ReadsAreServedByTheLocalDictWithoutTheRouter) {
  StartRouted();
  ASSERT_TRUE(dict_->Set("local", Value::Str("here")).ok());
  v1::GetRequest get;
  get.set_dict(name_);
  get.set_key("local");
  v1::GetResponse got;
  ASSERT_TRUE(stub_->Get(Context().get(), get, &got).ok());
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.value().data(), "here");
  EXPECT_EQ(got.revision(), dict_->revision());
  v1::ListRequest list;
  list.set_dict(name_);
  auto context = Context();
  auto reader = stub_->List(context.get(), list);
  v1::ListResponse page;
  size_t entries = 0;
  while (reader->Read(&page)) entries += page.entries_size();
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(entries, 1u);
  EXPECT_TRUE(router_->routed().empty());
}

TEST_F(WriteRouterTest, WithoutARouterEveryWriteLandsInTheServedDict) {
  StartBridge();  // config_.write_router stays null
  const uint64_t upstream_before = upstream_->revision();
  size_t calls = 0;
  CallEveryWrite([&](const char* method, const Answer& answer) {
    SCOPED_TRACE(method);
    ASSERT_TRUE(answer.status.ok()) << answer.status.error_message();
    ++calls;
    EXPECT_EQ(answer.revision, dict_->revision());
    EXPECT_EQ(dict_->revision(), calls);
  });
  EXPECT_EQ(calls, 9u);
  EXPECT_TRUE(router_->routed().empty());
  EXPECT_EQ(upstream_->revision(), upstream_before);
}

}  // namespace
}  // namespace shmdict::bridge
