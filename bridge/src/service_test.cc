// DictService against a client, in-process: the limits one call meets (Batch's size, Create's log,
// the waiting calls), what it may store (encodings, pickles, nested references, keys), what List
// and ListDicts answer, and what the log shows of untrusted text (issue 19).
#include "service.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "in_process_bridge.h"
#include "shmdict/remote_dict.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using ::testing::HasSubstr;

// Threads of this process now.
size_t ThreadCount() {
  size_t count = 0;
  for ([[maybe_unused]] const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    ++count;
  }
  return count;
}

v1::Value Raw(ValueType type, std::string data) {
  v1::Value value;
  value.set_type(static_cast<uint32_t>(type));
  value.set_data(std::move(data));
  return value;
}

class ServiceTest : public InProcessBridgeWithDict {
 protected:
  grpc::Status SetRaw(const std::string& key, const v1::Value& value) {
    v1::SetRequest request;
    request.set_dict(name_);
    request.set_key(key);
    *request.mutable_value() = value;
    v1::WriteResponse response;
    return stub_->Set(Context().get(), request, &response);
  }
  uint64_t Size() {
    Result<uint64_t> size = dict_->Size();
    EXPECT_TRUE(size.ok());
    return size.ok() ? *size : 0;
  }

  // Sends a Get and a Set naming a dict with a forged log line and a 1 MiB name: each is refused
  // with INVALID_ARGUMENT and a short message, and logged once, escaped and cut.
  void ExpectHostileNamesLoggedEscapedAndBounded() {
    std::ostringstream log;
    auto previous = spdlog::default_logger();
    auto capture = std::make_shared<spdlog::logger>(
        "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
    capture->set_pattern("%v");
    spdlog::set_default_logger(capture);
    const std::string forged = "x\nlevel=error FORGED";
    for (const std::string& name : {forged, std::string(size_t{1} << 20, 'n')}) {
      v1::GetRequest get;
      get.set_dict(name);
      get.set_key("k");
      v1::GetResponse response;
      ExpectShortRefusal("Get", stub_->Get(Context().get(), get, &response));
      v1::SetRequest set;
      set.set_dict(name);
      set.set_key("k");
      *set.mutable_value() = Raw(ValueType::kString, "v");
      v1::WriteResponse written;
      ExpectShortRefusal("Set", stub_->Set(Context().get(), set, &written));
    }
    // Every handler has returned (and logged) once the server is gone; a client may see its
    // answer first.
    StopBridge();
    spdlog::set_default_logger(previous);
    const std::string text = log.str();
    EXPECT_EQ(text.find("\nlevel=error FORGED"), std::string::npos) << text.substr(0, 2000);
    EXPECT_NE(text.find("level=error FORGED"), std::string::npos);  // logged, escaped
    std::istringstream lines(text);
    size_t refused = 0;
    size_t forged_refused = 0;
    for (std::string line; std::getline(lines, line);) {
      EXPECT_LT(line.size(), 2048u) << line.substr(0, 200);
      if (line.find(" refused dict=") == std::string::npos) continue;
      ++refused;
      if (line.find("FORGED") != std::string::npos) ++forged_refused;
    }
    EXPECT_EQ(forged_refused, 2u);
    EXPECT_EQ(refused, 4u);  // one line per call
  }

  // An RPC's name and its answer.
  using Answer = std::pair<std::string, grpc::Status>;

  // The answer of every RPC that names a dict, each naming `dict` (and `key` where it takes one).
  std::vector<Answer> CallEveryRpc(const std::string& dict, const std::string& key) {
    std::vector<Answer> answers = CallEveryKeyedRpc(dict, key);
    {
      v1::PopItemRequest request;
      request.set_dict(dict);
      v1::PopResponse response;
      answers.emplace_back("PopItem", stub_->PopItem(Context().get(), request, &response));
    }
    {
      v1::ClearRequest request;
      request.set_dict(dict);
      v1::WriteResponse response;
      answers.emplace_back("Clear", stub_->Clear(Context().get(), request, &response));
    }
    {
      v1::ListRequest request;
      request.set_dict(dict);
      auto context = Context();
      auto reader = stub_->List(context.get(), request);
      v1::ListResponse message;
      while (reader->Read(&message)) {
      }
      answers.emplace_back("List", reader->Finish());
    }
    {
      v1::StatusRequest request;
      request.set_dict(dict);
      v1::StatusResponse response;
      answers.emplace_back("Status", stub_->Status(Context().get(), request, &response));
    }
    {
      v1::CreateRequest request;
      request.set_dict(dict);
      v1::CreateResponse response;
      answers.emplace_back("Create", stub_->Create(Context().get(), request, &response));
    }
    {
      v1::UnlinkRequest request;
      request.set_dict(dict);
      v1::UnlinkResponse response;
      answers.emplace_back("Unlink", stub_->Unlink(Context().get(), request, &response));
    }
    {
      auto context = Context();
      auto stream = stub_->Watch(context.get());
      v1::WatchRequest request;
      request.mutable_start()->set_dict(dict);
      request.mutable_start()->set_from_current(true);
      stream->Write(request);
      stream->WritesDone();
      v1::WatchResponse response;
      while (stream->Read(&response)) {
      }
      answers.emplace_back("Watch", stream->Finish());
    }
    return answers;
  }

  // The answer of every RPC that takes a key, each naming `dict` and `key`.
  std::vector<Answer> CallEveryKeyedRpc(const std::string& dict, const std::string& key) {
    std::vector<Answer> answers;
    const v1::Value value = Raw(ValueType::kString, "v");
    {
      v1::GetRequest request;
      request.set_dict(dict);
      request.set_key(key);
      v1::GetResponse response;
      answers.emplace_back("Get", stub_->Get(Context().get(), request, &response));
    }
    {
      v1::SetRequest request;
      request.set_dict(dict);
      request.set_key(key);
      *request.mutable_value() = value;
      v1::WriteResponse response;
      answers.emplace_back("Set", stub_->Set(Context().get(), request, &response));
    }
    {
      v1::DeleteRequest request;
      request.set_dict(dict);
      request.set_key(key);
      v1::DeleteResponse response;
      answers.emplace_back("Delete", stub_->Delete(Context().get(), request, &response));
    }
    {
      v1::PopRequest request;
      request.set_dict(dict);
      request.set_key(key);
      v1::PopResponse response;
      answers.emplace_back("Pop", stub_->Pop(Context().get(), request, &response));
    }
    {
      v1::SetDefaultRequest request;
      request.set_dict(dict);
      request.set_key(key);
      *request.mutable_default_value() = value;
      v1::SetDefaultResponse response;
      answers.emplace_back("SetDefault", stub_->SetDefault(Context().get(), request, &response));
    }
    {
      v1::CompareAndSetRequest request;
      request.set_dict(dict);
      request.set_key(key);
      *request.mutable_desired() = value;
      v1::CompareAndSetResponse response;
      answers.emplace_back("CompareAndSet",
                           stub_->CompareAndSet(Context().get(), request, &response));
    }
    {
      v1::IncrementRequest request;
      request.set_dict(dict);
      request.set_key(key);
      v1::IncrementResponse response;
      answers.emplace_back("Increment", stub_->Increment(Context().get(), request, &response));
    }
    {
      v1::BatchRequest request;
      request.set_dict(dict);
      v1::Mutation* mutation = request.add_mutations();
      mutation->set_op(v1::OP_SET);
      mutation->set_key(key);
      *mutation->mutable_value() = value;
      v1::WriteResponse response;
      answers.emplace_back("Batch", stub_->Batch(Context().get(), request, &response));
    }
    return answers;
  }

  // The answer a client gets for a name or key it should not have sent: INVALID_ARGUMENT, with a
  // message far under what an HTTP/2 peer accepts in a header.
  static void ExpectShortRefusal(const std::string& what, const grpc::Status& status,
                                 grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
    EXPECT_EQ(status.error_code(), code)
        << what << ": " << status.error_code() << " " << status.error_message().substr(0, 300);
    EXPECT_LT(status.error_message().size(), 1024u)
        << what << ": " << status.error_message().substr(0, 300);
  }
};

// Row 1: a Batch is bounded in mutations and bytes before anything is decoded or written.
TEST_F(ServiceTest, BatchOverMaxOpsIsRefusedNamingTheFlagAndWritesNothing) {
  config_.max_batch_ops = 3;
  StartBridge();
  v1::BatchRequest request;
  request.set_dict(name_);
  for (int i = 0; i < 4; ++i) {
    v1::Mutation* mutation = request.add_mutations();
    mutation->set_op(v1::OP_SET);
    mutation->set_key("k" + std::to_string(i));
    *mutation->mutable_value() = Raw(ValueType::kString, "v");
  }
  v1::WriteResponse response;
  grpc::Status status = stub_->Batch(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-batch-ops 3"));
  EXPECT_EQ(Size(), 0u);
  // The cap comes before decoding: a malformed mutation in an oversized batch is not looked at.
  request.mutable_mutations(0)->set_op(v1::OP_UNSPECIFIED);
  status = stub_->Batch(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  request.mutable_mutations()->RemoveLast();
  request.mutable_mutations(0)->set_op(v1::OP_SET);
  ASSERT_TRUE(stub_->Batch(Context().get(), request, &response).ok());
  EXPECT_EQ(Size(), 3u);
}

TEST_F(ServiceTest, BatchOverMaxBatchBytesIsRefusedNamingTheFlagAndWritesNothing) {
  config_.max_batch_bytes = 100;
  StartBridge();
  v1::BatchRequest request;
  request.set_dict(name_);
  for (int i = 0; i < 2; ++i) {
    v1::Mutation* mutation = request.add_mutations();
    mutation->set_op(v1::OP_SET);
    mutation->set_key("k" + std::to_string(i));
    *mutation->mutable_value() = Raw(ValueType::kBytes, std::string(60, 'x'));
  }
  v1::WriteResponse response;
  grpc::Status status = stub_->Batch(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-batch-bytes 100"));
  EXPECT_EQ(Size(), 0u);
}

// Row 2: a pickle runs code in every Python reader; only an operator's flag lets one in.
TEST_F(ServiceTest, PicklesAreRefusedInEveryWriteUnlessAllowPickle) {
  StartBridge();
  const v1::Value pickle = Raw(ValueType::kPickle, "cos\nsystem\n(S'echo PICKLE-RCE'\ntR.");
  const std::string message =
      "the bridge refuses pickled values (start it with --allow-pickle: any writer can then run "
      "code in every Python reader)";
  grpc::Status status = SetRaw("p", pickle);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), HasSubstr(message));

  v1::SetDefaultRequest set_default;
  set_default.set_dict(name_);
  set_default.set_key("p");
  *set_default.mutable_default_value() = pickle;
  v1::SetDefaultResponse set_default_response;
  EXPECT_EQ(stub_->SetDefault(Context().get(), set_default, &set_default_response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  v1::CompareAndSetRequest cas;
  cas.set_dict(name_);
  cas.set_key("p");
  *cas.mutable_desired() = pickle;
  v1::CompareAndSetResponse cas_response;
  EXPECT_EQ(stub_->CompareAndSet(Context().get(), cas, &cas_response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  v1::BatchRequest batch;
  batch.set_dict(name_);
  v1::Mutation* mutation = batch.add_mutations();
  mutation->set_op(v1::OP_SET);
  mutation->set_key("p");
  *mutation->mutable_value() = pickle;
  v1::WriteResponse response;
  EXPECT_EQ(stub_->Batch(Context().get(), batch, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Size(), 0u);

  StopBridge();
  config_.allow_pickle = true;
  StartBridge();
  ASSERT_TRUE(SetRaw("p", pickle).ok());
  EXPECT_EQ(Size(), 1u);
}

// Smaller items: a tag describes its bytes, or the value is not stored.
TEST_F(ServiceTest, MalformedEncodingsAreRefusedInEveryWrite) {
  StartBridge();
  const std::vector<v1::Value> malformed = {Raw(ValueType::kInt64, "abc"),
                                            Raw(ValueType::kBool, std::string(5, '\1')),
                                            Raw(ValueType::kBool, std::string(1, '\2')),
                                            Raw(ValueType::kString, "\xff\xfe"),
                                            Raw(ValueType::kJson, "{\"a\":"),
                                            Raw(ValueType::kNull, "x"),
                                            Raw(ValueType::kDouble, "1234567")};
  for (const v1::Value& value : malformed) {
    SCOPED_TRACE("type " + std::to_string(value.type()));
    EXPECT_EQ(SetRaw("k", value).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

    v1::SetDefaultRequest set_default;
    set_default.set_dict(name_);
    set_default.set_key("k");
    *set_default.mutable_default_value() = value;
    v1::SetDefaultResponse set_default_response;
    EXPECT_EQ(stub_->SetDefault(Context().get(), set_default, &set_default_response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);

    v1::CompareAndSetRequest cas;
    cas.set_dict(name_);
    cas.set_key("k");
    *cas.mutable_expected() = value;
    *cas.mutable_desired() = Raw(ValueType::kString, "fine");
    v1::CompareAndSetResponse cas_response;
    EXPECT_EQ(stub_->CompareAndSet(Context().get(), cas, &cas_response).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);

    v1::BatchRequest batch;
    batch.set_dict(name_);
    v1::Mutation* good = batch.add_mutations();
    good->set_op(v1::OP_SET);
    good->set_key("fine");
    *good->mutable_value() = Raw(ValueType::kString, "fine");
    v1::Mutation* bad = batch.add_mutations();
    bad->set_op(v1::OP_SET);
    bad->set_key("k");
    *bad->mutable_value() = value;
    v1::WriteResponse response;
    grpc::Status status = stub_->Batch(Context().get(), batch, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("mutation 1"));
  }
  EXPECT_EQ(Size(), 0u);
  ASSERT_TRUE(SetRaw("k", Raw(ValueType::kInt64, std::string(8, '\0'))).ok());
}

// Row 3: a nested reference may only name a child of the dict it is written to.
TEST_F(ServiceTest, NestedReferencesToOtherDictsAreRefused) {
  const std::string other = NewDictName();
  auto victim = Dict::Open(CreateOptions(other));
  ASSERT_TRUE(victim.ok()) << victim.status().ToString();
  StartBridge();
  for (const std::string& reference :
       {other, other + "@c1", name_ + "x@c1", name_ + "@s1", std::string("@c1")}) {
    SCOPED_TRACE(reference);
    grpc::Status status = SetRaw("n", Raw(ValueType::kNestedDict, reference));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(Size(), 0u);
}

// The proto's key rule: 1 to 65,536 bytes, in every call that takes a key, answered in a short
// message (finding A1: a 64 KiB key quoted back whole broke the client's HTTP/2 trailers).
TEST_F(ServiceTest, EmptyAndOverlongKeysAreRefusedInEveryKeyedCall) {
  StartBridge();
  for (const std::string& key : {std::string(), std::string(kMaxKeyBytes + 1, 'k')}) {
    SCOPED_TRACE(key.size());
    // Empty is malformed; too long is a limit, RESOURCE_EXHAUSTED as a local Dict answers.
    const grpc::StatusCode expected =
        key.empty() ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::RESOURCE_EXHAUSTED;
    std::vector<Answer> answers = CallEveryKeyedRpc(name_, key);
    v1::BatchRequest erase;
    erase.set_dict(name_);
    v1::Mutation* mutation = erase.add_mutations();
    mutation->set_op(v1::OP_DELETE);
    mutation->set_key(key);
    v1::WriteResponse erased;
    answers.emplace_back("Batch OP_DELETE", stub_->Batch(Context().get(), erase, &erased));
    for (const auto& [rpc, status] : answers) {
      ExpectShortRefusal(rpc, status, expected);
      EXPECT_THAT(status.error_message(), HasSubstr("keys are 1 to 65,536 bytes")) << rpc;
    }
  }
  EXPECT_EQ(Size(), 0u);
  // A Batch's OP_CLEAR takes no key.
  v1::BatchRequest clear;
  clear.set_dict(name_);
  clear.add_mutations()->set_op(v1::OP_CLEAR);
  v1::WriteResponse response;
  EXPECT_TRUE(stub_->Batch(Context().get(), clear, &response).ok());
}

// Row 8: a client does not choose how much tmpfs a Create costs.
TEST_F(ServiceTest, CreateOverMaxCreateBytesIsRefusedNamingTheFlag) {
  config_.allow_create = true;
  config_.max_create_bytes = uint64_t{1} << 20;
  StartBridge();
  const std::string name = NewDictName();
  v1::CreateRequest request;
  request.set_dict(name);
  request.set_buffer_size(uint64_t{1} << 31);
  v1::CreateResponse response;
  grpc::Status status = stub_->Create(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-create-bytes 1048576"));
  EXPECT_TRUE(testing::ShmEntriesWithPrefix(name).empty());

  request.set_buffer_size(uint64_t{1} << 20);
  ASSERT_TRUE(stub_->Create(Context().get(), request, &response).ok());
  v1::UnlinkRequest unlink;
  unlink.set_dict(name);
  v1::UnlinkResponse unlinked;
  EXPECT_TRUE(stub_->Unlink(Context().get(), unlink, &unlinked).ok());
}

// Names: '@' is the engine's, in Create and (but for nested children) in Unlink (row 9).
TEST_F(ServiceTest, CreateWithAtAndUnlinkOfAnInternalSegmentAreRefused) {
  config_.allow_create = true;
  StartBridge();
  v1::CreateRequest create;
  create.set_dict(name_ + "@s1");
  v1::CreateResponse created;
  grpc::Status status = stub_->Create(Context().get(), create, &created);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("'@' is reserved"));

  // A snapshot segment stands in for any internal one: unlinking it would break the dict.
  const std::string segment = name_ + "@s1";
  const int fd = shm_open(("/shmdict." + segment).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  close(fd);
  for (const std::string& name : {segment, name_ + "@r2", name_ + "@b3", name_ + "@c1@s1"}) {
    SCOPED_TRACE(name);
    v1::UnlinkRequest unlink;
    unlink.set_dict(name);
    v1::UnlinkResponse unlinked;
    status = stub_->Unlink(Context().get(), unlink, &unlinked);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("internal segments"));
  }
  EXPECT_EQ(testing::ShmEntriesWithPrefix(segment).size(), 1u);
  shm_unlink(("/shmdict." + segment).c_str());
  // A nested child's name stays a dict's: this one does not exist.
  v1::UnlinkRequest child;
  child.set_dict(name_ + "@c1f");
  v1::UnlinkResponse unlinked;
  EXPECT_EQ(stub_->Unlink(Context().get(), child, &unlinked).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// Smaller item: one value over the message limit is marked, the listing goes on.
TEST_F(ServiceTest, ListMarksAValueOverTheMessageLimitAsWatchDoes) {
  config_.max_message_bytes = size_t{64} << 10;
  StartBridge();
  // Over the limit and over the wire's slack above it (1 MiB): not sendable in any message.
  const std::string large(size_t{1200} << 10, 'L');
  ASSERT_OK(dict_->Set("big", Value::Bytes(large)));
  ASSERT_OK(dict_->Set("a", Value::Str("small")));
  ASSERT_OK(dict_->Set("b", Value::Str("small")));
  v1::ListRequest request;
  request.set_dict(name_);
  auto context = Context();
  auto reader = stub_->List(context.get(), request);
  v1::ListResponse message;
  std::vector<std::string> keys;
  std::vector<v1::Change> markers;
  bool last = false;
  while (reader->Read(&message)) {
    for (const v1::Entry& entry : message.entries()) keys.push_back(entry.key());
    for (const v1::Change& marker : message.too_large()) markers.push_back(marker);
    last = last || message.last();
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(last);
  EXPECT_EQ(keys.size(), 2u);
  ASSERT_EQ(markers.size(), 1u);
  EXPECT_EQ(markers[0].key(), "big");
  EXPECT_TRUE(markers[0].value_too_large());
  EXPECT_EQ(markers[0].value_size(), large.size());
  EXPECT_EQ(markers[0].value_type(), static_cast<uint32_t>(ValueType::kBytes));

  // RemoteDict reads a marked value alone; this one no message carries, and the error names it.
  RemoteOptions options;
  options.address = server_->addresses().front();
  options.dict = name_;
  options.mirror = false;
  auto remote = RemoteDict::Open(options);
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  auto items = (*remote)->Items();
  ASSERT_FALSE(items.ok());
  EXPECT_THAT(items.status().message(), HasSubstr("key 'big'"));
  ASSERT_OK(dict_->Erase("big").status());
  items = (*remote)->Items();
  ASSERT_TRUE(items.ok()) << items.status().ToString();
  EXPECT_EQ(items->size(), 2u);
}

// Smaller item: max_entries_per_message >= 2^31 was cast to a negative int (a message per entry).
TEST_F(ServiceTest, ListClampsAHugeEntriesPerMessage) {
  StartBridge();
  for (int i = 0; i < 5; ++i) ASSERT_OK(dict_->Set("k" + std::to_string(i), Value::Int(i)));
  v1::ListRequest request;
  request.set_dict(name_);
  request.set_max_entries_per_message(uint32_t{1} << 31);
  auto context = Context();
  auto reader = stub_->List(context.get(), request);
  v1::ListResponse message;
  std::vector<int> sizes;
  while (reader->Read(&message)) sizes.push_back(message.entries_size());
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(sizes, std::vector<int>{5});
}

// Smaller item: ListDicts names only what a call could open.
TEST_F(ServiceTest, ListDictsListsOnlyDictsTheBridgeCanOpen) {
  const std::string junk = NewDictName();
  const int fd = shm_open(("/shmdict." + junk).c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "not a dict", 10), 10);
  close(fd);
  StartBridge();
  v1::ListDictsResponse response;
  ASSERT_TRUE(stub_->ListDicts(Context().get(), v1::ListDictsRequest(), &response).ok());
  std::vector<std::string> names(response.dicts().begin(), response.dicts().end());
  EXPECT_NE(std::find(names.begin(), names.end(), name_), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), junk), names.end());
  shm_unlink(("/shmdict." + junk).c_str());
}

// Row 7: a client's name reaches the log escaped and cut, never raw; and finding A1: its answer
// quotes it bounded, so the client's HTTP/2 layer never refuses the answer's headers.
TEST_F(ServiceTest, UntrustedNamesAreLoggedEscapedAndBounded) {
  config_.dicts = {name_};
  StartBridge();
  ExpectHostileNamesLoggedEscapedAndBounded();
}

// The same on a bridge without a --dict list, where nothing but the name's own rules refuses them.
TEST_F(ServiceTest, UntrustedNamesAreLoggedEscapedAndBoundedWithoutADictList) {
  StartBridge();
  ExpectHostileNamesLoggedEscapedAndBounded();
}

// Finding A1: every RPC that names a dict answers a name it refuses with a short message, on a
// bridge with no --dict list (which would refuse it first) and with --allow-create (which lets
// Create and Unlink reach the name).
TEST_F(ServiceTest, EveryRpcRefusesAHugeNameWithAShortMessage) {
  config_.allow_create = true;
  StartBridge();
  const std::string huge(size_t{1} << 20, 'n');
  for (const auto& [rpc, status] : CallEveryRpc(huge, "k")) {
    ExpectShortRefusal(rpc + " of a 1 MiB name", status);
  }
}

// Finding A1: the engine's own refusal of a valid key (the largest, control bytes in it) quotes
// the key escaped and cut.
TEST_F(ServiceTest, AnErrorAboutTheLargestKeyQuotesItShort) {
  StartBridge();
  const std::string key(kMaxKeyBytes, '\n');
  ASSERT_OK(dict_->Set(key, Value::Str("not a number")));
  v1::IncrementRequest request;
  request.set_dict(name_);
  request.set_key(key);
  v1::IncrementResponse response;
  const grpc::Status status = stub_->Increment(Context().get(), request, &response);
  ExpectShortRefusal("Increment of a string", status, grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("\\x0a\\x0a"));
}

// Row 6: --max-wait-ms bounds a wait the client did not bound.
TEST_F(ServiceTest, AGetWaitsNoLongerThanMaxWait) {
  config_.max_wait = std::chrono::milliseconds(100);
  StartBridge();
  v1::GetRequest request;
  request.set_dict(name_);
  request.set_key("k");
  request.set_min_revision(dict_->revision() + 1000);
  v1::GetResponse response;
  grpc::Status status = stub_->Get(Context(std::chrono::seconds(30)).get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max-wait-ms 100"));
}

// Row 6 and the SIGTERM rule, through BridgeServer: a waiting Get ends with UNAVAILABLE as soon as
// the bridge shuts down, not when the grace period or its deadline ends.
TEST_F(ServiceTest, ShutdownEndsWaitingGetsWithUnavailable) {
  config_.metrics_listen = "127.0.0.1:0";
  StartBridge();
  v1::GetRequest request;
  request.set_dict(name_);
  request.set_key("k");
  request.set_min_revision(dict_->revision() + 1000);
  grpc::ClientContext context;  // no deadline: only the shutdown can end it
  v1::GetResponse response;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> ended;
  stub_->async()->Get(&context, &request, &response, [&](grpc::Status status) {
    std::lock_guard lock(mu);
    ended = status;
    cv.notify_all();
  });
  // Once its handler runs (the call is in flight on the bridge), the Get ends with UNAVAILABLE
  // whether it already waits or is about to; before that, gRPC's own shutdown would cancel it.
  const std::string metrics = server_->metrics_address();
  httplib::Client http(metrics.substr(0, metrics.rfind(':')),
                       std::stoi(metrics.substr(metrics.rfind(':') + 1)));
  ASSERT_TRUE(Eventually([&] {
    auto page = http.Get("/metrics");
    return page && page->body.find("\nshmdict_bridge_calls_in_flight 1\n") != std::string::npos;
  }));
  // A long grace period: the waiting Get must end at the start of it, not when it runs out.
  std::thread stopper(
      [&] { server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(60)); });
  bool ended_in_grace = false;
  {
    std::unique_lock lock(mu);
    ended_in_grace = cv.wait_for(lock, std::chrono::seconds(30), [&] { return ended.has_value(); });
  }
  stopper.join();
  ASSERT_TRUE(ended_in_grace);
  std::lock_guard lock(mu);
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::UNAVAILABLE) << ended->error_message();
}

// Row 6, against the service with its gate in view: waiting Gets hold no thread each, the gate
// refuses the one over the cap, a local commit answers them all, a cancel frees its slot, and the
// registry's shutdown ends them with UNAVAILABLE.
class WaitingGetTest : public testing::DictTestBase {
 protected:
  static constexpr size_t kCap = 256;

  void SetUp() override {
    char pattern[] = "/tmp/shmdict-service-unit-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    auto created = Dict::Open(CreateOptions(name_));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    dict_.emplace(std::move(*created));
    auto authorizer = Authorizer::Create(AuthorizerOptions());
    ASSERT_TRUE(authorizer.ok()) << authorizer.status().ToString();
    authorizer_ = std::move(*authorizer);
    registry_ = std::make_unique<DictRegistry>(RegistryLimits());
    service_ = std::make_unique<DictService>(registry_.get(), StreamLimits{}, authorizer_.get(),
                                             &waiting_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + dir_ + "/s.sock", grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::Dict::NewStub(
        grpc::CreateChannel("unix:" + dir_ + "/s.sock", grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (registry_) registry_->Shutdown(Status(StatusCode::kUnavailable, "the test ended"));
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    stub_.reset();
    server_.reset();
    service_.reset();
    registry_.reset();
    dict_.reset();
    std::filesystem::remove_all(dir_);
    DictTestBase::TearDown();
  }

  // The authorizer's options (a subclass adds a token file); dir_ exists when it is called.
  virtual Authorizer::Options AuthorizerOptions() { return {}; }
  virtual DictRegistry::Limits RegistryLimits() { return {}; }

  // `count` Gets of "k" at `min_revision` in flight at once, each with its own context.
  struct Calls {
    struct Call {
      grpc::ClientContext context;
      v1::GetRequest request;
      v1::GetResponse response;
      grpc::Status status;
    };
    std::vector<std::unique_ptr<Call>> calls;
    std::mutex mu;
    std::condition_variable cv;
    size_t done = 0;  // guarded by mu

    // A test that failed half-way still waits for its callbacks, which point here.
    ~Calls() {
      for (auto& call : calls) call->context.TryCancel();
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return done == calls.size(); });
    }

    bool WaitAllDone() {
      std::unique_lock lock(mu);
      return cv.wait_for(lock, std::chrono::seconds(30), [&] { return done == calls.size(); });
    }
  };
  // `token`: sent as "authorization: Bearer TOKEN" unless empty.
  void Start(Calls* calls, size_t count, uint64_t min_revision, const std::string& token = "") {
    for (size_t i = 0; i < count; ++i) {
      auto call = std::make_unique<Calls::Call>();
      call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      if (!token.empty()) call->context.AddMetadata("authorization", "Bearer " + token);
      call->request.set_dict(name_);
      call->request.set_key("k");
      call->request.set_min_revision(min_revision);
      Calls::Call* raw = call.get();
      calls->calls.push_back(std::move(call));
      stub_->async()->Get(&raw->context, &raw->request, &raw->response,
                          [calls, raw](grpc::Status status) {
                            std::lock_guard lock(calls->mu);
                            raw->status = std::move(status);
                            ++calls->done;
                            calls->cv.notify_all();
                          });
    }
  }

  grpc::Status SyncGet(uint64_t min_revision) {
    v1::GetRequest request;
    request.set_dict(name_);
    request.set_key("k");
    request.set_min_revision(min_revision);
    v1::GetResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->Get(&context, request, &response);
  }

  std::string dir_;
  std::optional<Dict> dict_;
  WaitingCalls waiting_{kCap};
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<DictRegistry> registry_;
  std::unique_ptr<DictService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Dict::Stub> stub_;
};

TEST_F(WaitingGetTest, WaitingGetsHoldNoThreadEachAndACommitAnswersThem) {
  ASSERT_OK(dict_->Set("k", Value::Str("before")));
  const uint64_t wanted = dict_->revision() + 1;
  // Warm up: the first call starts gRPC's threads, which are not the waiting calls' cost.
  ASSERT_TRUE(SyncGet(0).ok());
  const size_t threads_before = ThreadCount();

  Calls calls;
  Start(&calls, kCap, wanted);
  ASSERT_TRUE(Eventually([&] { return waiting_.in_use() == kCap; }));
  const size_t threads_waiting = ThreadCount();
  std::printf("threads: %zu before, %zu with %zu Gets waiting\n", threads_before, threads_waiting,
              kCap);
  RecordProperty("threads_before", std::to_string(threads_before));
  RecordProperty("threads_waiting", std::to_string(threads_waiting));
  EXPECT_LT(threads_waiting, threads_before + kCap / 8);

  grpc::Status refused = SyncGet(wanted);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max-waiting-calls"));
  // A Get that need not wait is answered at the cap.
  EXPECT_TRUE(SyncGet(0).ok());
  // Parked Gets are not Watch streams: the metrics' and `shmdict ls`'s subscriber counts skip them.
  EXPECT_EQ(registry_->SubscriberCounts()[dict_->name()], 0u);

  ASSERT_OK(dict_->Set("k", Value::Str("after")));  // a local writer's commit
  ASSERT_TRUE(calls.WaitAllDone());
  for (const auto& call : calls.calls) {
    ASSERT_TRUE(call->status.ok()) << call->status.error_message();
    EXPECT_TRUE(call->response.found());
    EXPECT_EQ(call->response.value().data(), "after");
    EXPECT_GE(call->response.revision(), wanted);
  }
  EXPECT_TRUE(Eventually([&] { return waiting_.in_use() == 0; }));
}

TEST_F(WaitingGetTest, ACancelledWaitingGetFreesItsSlot) {
  Calls calls;
  Start(&calls, 1, dict_->revision() + 1000);
  ASSERT_TRUE(Eventually([&] { return waiting_.in_use() == 1; }));
  calls.calls[0]->context.TryCancel();
  ASSERT_TRUE(calls.WaitAllDone());
  EXPECT_EQ(calls.calls[0]->status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return waiting_.in_use() == 0; }));
}

TEST_F(WaitingGetTest, RegistryShutdownEndsWaitingGetsWithUnavailable) {
  Calls calls;
  Start(&calls, 20, dict_->revision() + 1000);
  ASSERT_TRUE(Eventually([&] { return waiting_.in_use() == 20; }));
  registry_->Shutdown(Status(StatusCode::kUnavailable, "the bridge is shutting down: reconnect"));
  ASSERT_TRUE(calls.WaitAllDone());
  for (const auto& call : calls.calls) {
    EXPECT_EQ(call->status.error_code(), grpc::StatusCode::UNAVAILABLE)
        << call->status.error_message();
  }
  EXPECT_TRUE(Eventually([&] { return waiting_.in_use() == 0; }));
}

// A waiting Get whose check cannot lease a handle (an attach that fails: EMFILE, or here a dict
// whose snapshot segment was unlinked under it) ends with that error. It used to return quietly
// and wait for a retirement that never comes, past its deadline and --max-wait-ms.
class WaitingGetAttachTest : public WaitingGetTest {
 protected:
  // No idle handles: with the first one held by the test, every check attaches its own handle.
  DictRegistry::Limits RegistryLimits() override {
    DictRegistry::Limits limits;
    limits.max_idle_handles_per_dict = 0;
    return limits;
  }
};

// Counts the notifier's pokes: once it pokes, the notifier holds its own handle (taken before its
// loop), so a later failing attach cannot make it retire the dict.
class NotifierProbe final : public Subscriber {
 public:
  void Pump() override { pumps.fetch_add(1); }
  void End(const Status&) override {}
  uint64_t SentRevision() const override { return std::numeric_limits<uint64_t>::max(); }
  bool IsWatchStream() const override { return false; }
  std::atomic<int> pumps{0};
};

TEST_F(WaitingGetAttachTest, AWaitingGetWhoseHandleCannotBeAttachedEndsWithTheError) {
  ASSERT_OK(dict_->Set("k", Value::Str("before")));
  Result<DictRegistry::Lease> held = registry_->Acquire(name_);  // the pool's first handle
  ASSERT_OK(held);
  NotifierProbe probe;
  registry_->Subscribe(held->entry(), &probe);
  struct Unsubscribe {  // also when an assertion returns early: the probe dies with this scope
    DictRegistry* registry;
    const std::shared_ptr<DictEntry>& entry;
    Subscriber* probe;
    ~Unsubscribe() { registry->Unsubscribe(entry, probe); }
  } unsubscribe{registry_.get(), held->entry(), &probe};
  ASSERT_TRUE(Eventually([&] { return probe.pumps.load() > 0; }));
  Calls calls;
  Start(&calls, 1, dict_->revision() + 1000);
  ASSERT_TRUE(Eventually([&] { return waiting_.in_use() == 1; }));

  // The dict stays the same incarnation (so the registry retires nothing), but no new handle of
  // it can be attached (an internal segment unlinked: issue 19, row 9).
  Result<uint64_t> generation = dict_->Dump();
  ASSERT_OK(generation);
  const std::string snapshot = "/shmdict." + name_ + "@s" + std::to_string(*generation);
  ASSERT_EQ(shm_unlink(snapshot.c_str()), 0) << snapshot;
  Options attach = CreateOptions(name_);
  attach.create_mode = CreateMode::kMustAttach;
  attach.auto_unlink = false;
  Result<Dict> attached = Dict::Open(attach);
  ASSERT_FALSE(attached.ok()) << "the test's premise: an attach fails";

  ASSERT_TRUE(calls.WaitAllDone()) << "the waiting Get did not end";
  const grpc::Status& status = calls.calls[0]->status;
  EXPECT_EQ(status.error_code(), wire::ToGrpc(attached.status()).error_code())
      << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(name_));
  EXPECT_TRUE(Eventually([&] { return waiting_.in_use() == 0; }));
}

// A notifier that cannot open its own handle of a dict that is still the same incarnation
// (EMFILE, or here a snapshot segment unlinked under it) retires the entry with UNAVAILABLE, on
// which clients resume: it used to say ABORTED, "deleted or replaced", and a RemoteDict then
// emptied its mirror and ended its watchers for a dict that never changed.
TEST_F(WaitingGetAttachTest, ANotifierWithoutAHandleOfAnUnchangedDictEndsStreamsUnavailable) {
  ASSERT_OK(dict_->Set("k", Value::Str("before")));
  Result<DictRegistry::Lease> held = registry_->Acquire(name_);  // the pool's first handle
  ASSERT_OK(held);
  Result<uint64_t> generation = dict_->Dump();
  ASSERT_OK(generation);
  const std::string snapshot = "/shmdict." + name_ + "@s" + std::to_string(*generation);
  ASSERT_EQ(shm_unlink(snapshot.c_str()), 0) << snapshot;
  // The notifier starts with the first subscriber, and its own handle must be attached.
  class EndProbe final : public Subscriber {
   public:
    void Pump() override {}
    void End(const Status& why) override {
      std::lock_guard lock(mu);
      ended = why;
    }
    uint64_t SentRevision() const override { return std::numeric_limits<uint64_t>::max(); }
    bool IsWatchStream() const override { return false; }
    std::mutex mu;
    std::optional<Status> ended;
  } probe;
  registry_->Subscribe(held->entry(), &probe);
  const bool ended = Eventually([&] {
    std::lock_guard lock(probe.mu);
    return probe.ended.has_value();
  });
  if (!ended) registry_->Unsubscribe(held->entry(), &probe);
  ASSERT_TRUE(ended) << "the notifier never retired the entry";
  std::lock_guard lock(probe.mu);
  EXPECT_EQ(probe.ended->code(), StatusCode::kUnavailable) << probe.ended->ToString();
  EXPECT_THAT(probe.ended->message(), HasSubstr("could not open a handle"));
}

// Credentials are live for parked Gets too: a token reload ends those whose token is gone with
// UNAUTHENTICATED instead of answering them at the next commit; a Get needs read access only.
class WaitingGetTokenTest : public WaitingGetTest {
 protected:
  Authorizer::Options AuthorizerOptions() override {
    WriteTokens("revoked rw\nkept ro\ndowngraded rw\n");
    Authorizer::Options options;
    options.token_file = TokenFile();
    return options;
  }
  std::string TokenFile() const { return dir_ + "/tokens"; }
  void WriteTokens(const std::string& lines) {
    std::ofstream file(TokenFile(), std::ios::trunc);
    file << lines;
    ASSERT_TRUE(file.good());
  }
};

TEST_F(WaitingGetTokenTest, AReloadEndsTheParkedGetsOfRevokedTokensOnly) {
  const uint64_t wanted = dict_->revision() + 1;
  Calls calls;
  Start(&calls, 1, wanted, "revoked");
  Start(&calls, 1, wanted, "kept");
  Start(&calls, 1, wanted, "downgraded");
  ASSERT_TRUE(Eventually([&] { return waiting_.in_use() == 3; }));  // all three parked

  WriteTokens("kept ro\ndowngraded ro\n");
  ASSERT_OK(authorizer_->ReloadTokens());
  // The commit that would answer them all comes after the reload: the revoked one must not get it.
  ASSERT_OK(dict_->Set("k", Value::Str("after")));
  ASSERT_TRUE(calls.WaitAllDone());
  EXPECT_EQ(calls.calls[0]->status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << calls.calls[0]->status.error_message();
  EXPECT_FALSE(calls.calls[0]->response.found());
  for (size_t i : {1, 2}) {
    ASSERT_TRUE(calls.calls[i]->status.ok()) << calls.calls[i]->status.error_message();
    EXPECT_EQ(calls.calls[i]->response.value().data(), "after");
  }
  EXPECT_TRUE(Eventually([&] { return waiting_.in_use() == 0; }));
}

}  // namespace
}  // namespace shmdict::bridge
