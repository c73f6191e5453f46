// request_fuzzer: libFuzzer over the request messages of shmdict.v1.Dict, answered by a
// BridgeServer in this process (the bridge as a library, bridge_server.h) on a Unix socket.
//
// Why a served BridgeServer and not DictService's methods called with a fake ServerContext: gRPC
// 1.51 lets a program construct a ServerContext, but not the ServerWriter that List writes to nor
// the CallbackServerContext a Watch reactor lives on, and a context without a call has no peer and
// no auth context. Through a real server every RPC is reachable, with gRPC's own parsing of the
// bytes, the authorizer and every limit bridge_server.cc wires from BridgeConfig -- what a hostile
// client reaches -- and the harness depends only on BridgeServer::Start(BridgeConfig), not on the
// service's constructor. The cost is one RPC per input over a Unix socket (well under a
// millisecond), affordable for CI's fixed -runs.
//
// Input: byte 0 picks the RPC, byte 1 holds flags, the rest is the request message. Flag bit 0
// aims a request that parses at the fuzzed dict (else the name in the bytes is used: names are
// fuzzed too); bit 1 sends a Watch's message twice (a second start, or progress after progress).
// Bytes that do not parse are sent as they are to the unary RPCs (gRPC answers INTERNAL for an
// unparseable request: its rule, not the bridge's). A request that parses must be answered with a
// canonical status other than UNKNOWN, INTERNAL and DATA_LOSS (a request that damaged the dict);
// anything else aborts, and libFuzzer keeps the input.
//
// The bridge serves only the fuzzed dict (--dict), never creates or unlinks (no --allow-create),
// so no input reaches another dict of the host; the dict is unlinked at exit.
//
// Build: clang, -DSHMDICT_BUILD_FUZZ=ON (bridge/fuzz/CMakeLists.txt). Run (as CI does), with
// bridge/fuzz/seeds (one well-formed request per RPC, in the input format above) as read-only
// seeds and a scratch directory first, where libFuzzer adds what it finds:
//   request_fuzzer -runs=20000 -seed=1 -detect_leaks=0 CORPUS_DIR bridge/fuzz/seeds
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include "bridge_config.h"
#include "bridge_server.h"
#include "shmdict/dict.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "shmdict/value.h"

namespace shmdict::bridge {
namespace {

using namespace std::chrono_literals;

// Long enough for any call that does not wait on purpose; a Get waiting for a revision the dict
// has not reached and a Watch (which never ends by itself) get short deadlines instead.
constexpr auto kCallDeadline = 10s;
constexpr auto kWaitDeadline = 20ms;

struct Harness {
  std::string dir;
  std::string dict_name;
  std::optional<Dict> dict;  // keeps the dict alive; unlinks it when closed
  std::unique_ptr<BridgeServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Dict::Stub> stub;
  std::unique_ptr<grpc::GenericStub> generic;
};

Harness* g_harness = nullptr;

// Reports a finding and aborts (libFuzzer then saves the input). The dict is unlinked first: an
// abort runs no atexit handler, and nothing may stay behind in /dev/shm.
[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "request_fuzzer: %s\n", message.c_str());
  if (g_harness != nullptr) {
    (void)Dict::UnlinkByName(g_harness->dict_name);
    std::error_code ignored;
    std::filesystem::remove_all(g_harness->dir, ignored);
  }
  std::abort();
}

// Opens (or re-creates, when an input removed it) the fuzzed dict. A small log, so that inputs
// also run into snapshot builds and large-value segments.
void EnsureDict(Harness& h) {
  if (h.dict.has_value()) {
    auto incarnation = Dict::IncarnationOf(h.dict_name);
    if (incarnation.ok() && *incarnation == h.dict->incarnation()) return;
    h.dict.reset();
  }
  Options options;
  options.name = h.dict_name;
  options.buffer_size = 64 << 10;
  auto opened = Dict::Open(options);
  if (!opened.ok()) Die("cannot open the fuzzed dict: " + opened.status().ToString());
  h.dict.emplace(std::move(*opened));
}

void Cleanup() {
  if (g_harness == nullptr) return;
  g_harness->stub.reset();
  g_harness->generic.reset();
  g_harness->channel.reset();
  if (g_harness->server != nullptr) {
    g_harness->server->Shutdown(std::chrono::system_clock::now() + 1s);
  }
  g_harness->server.reset();
  if (g_harness->dict.has_value()) (void)g_harness->dict->Unlink();
  g_harness->dict.reset();
  std::error_code ignored;
  std::filesystem::remove_all(g_harness->dir, ignored);
  delete g_harness;
  g_harness = nullptr;
}

void Start() {
  auto* h = new Harness;
  g_harness = h;
  char pattern[] = "/tmp/shmdict-fuzz-XXXXXX";
  if (mkdtemp(pattern) == nullptr) Die("mkdtemp failed");
  h->dir = pattern;
  h->dict_name = "shmdict-fuzz-" + std::to_string(getpid());
  EnsureDict(*h);
  BridgeConfig config;
  config.listen = {"unix:" + h->dir + "/bridge.sock"};
  config.presence_dir = h->dir + "/presence";
  config.dicts = {h->dict_name};
  // The bridge logs through spdlog's default logger: every refused input would be a line.
  spdlog::set_level(spdlog::level::off);
  auto server = BridgeServer::Start(config);
  if (!server.ok()) Die("the bridge did not start: " + server.status().ToString());
  h->server = std::move(*server);
  h->channel =
      grpc::CreateChannel(h->server->addresses().front(), grpc::InsecureChannelCredentials());
  h->stub = v1::Dict::NewStub(h->channel);
  h->generic = std::make_unique<grpc::GenericStub>(h->channel);
  std::atexit(Cleanup);
}

std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds deadline) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + deadline);
  return context;
}

void Check(const char* method, bool parsed, const grpc::Status& status) {
  const grpc::StatusCode code = status.error_code();
  const int number = static_cast<int>(code);
  if (number < 0 || number > 16) {
    Die(std::string(method) + " answered a non-canonical code " + std::to_string(number));
  }
  if (!parsed) return;
  if (code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::INTERNAL ||
      code == grpc::StatusCode::DATA_LOSS) {
    Die(std::string(method) + " answered a well-formed request with code " +
        std::to_string(number) + ": " + status.error_message());
  }
}

// After a write the bridge accepted: everything the dict holds obeys the rules of what may enter
// from the network (docs/BRIDGE.md, "Threat model"), which local readers rely on: a key of 1 to
// 65,536 bytes, a value encoded as its tag says, no pickle (this bridge has no --allow-pickle), a
// nested reference only to a child of this dict. The dict is cleared locally once it grows, so
// the check stays cheap.
void CheckStoredValues(Harness& h, const char* method) {
  size_t entries = 0;
  h.dict->ForEach([&](std::string_view key, ValueView value) {
    ++entries;
    const std::string where = std::string("after an accepted ") + method + ", the dict holds ";
    if (key.empty() || key.size() > 65536)
      Die(where + "a key of " + std::to_string(key.size()) + " bytes");
    if (value.type == ValueType::kPickle) Die(where + "a pickle");
    Status valid = ValidateEncoding(value);
    if (valid.ok() && value.type == ValueType::kNestedDict) {
      valid = CheckNestedReference(h.dict_name, value.data);
    }
    if (!valid.ok()) Die(where + "a value refused by the entry rules: " + valid.ToString());
  });
  if (entries > 256) (void)h.dict->Clear();
}

// A unary RPC: the bytes (re-encoded with the fuzzed dict when asked) through the generic stub.
// Returns whether the bridge answered OK.
template <typename Request>
bool Unary(Harness& h, const char* method, bool aim, const uint8_t* data, size_t size,
           const std::function<std::chrono::milliseconds(const Request&)>& deadline = nullptr) {
  Request request;
  const bool parsed = request.ParseFromArray(data, static_cast<int>(size));
  std::string bytes(reinterpret_cast<const char*>(data), size);
  std::chrono::milliseconds patience = kCallDeadline;
  if (parsed) {
    if (aim) request.set_dict(h.dict_name);
    if (deadline) patience = deadline(request);
    bytes = request.SerializeAsString();
  }
  grpc::Slice slice(bytes);
  grpc::ByteBuffer send(&slice, 1);
  grpc::ByteBuffer receive;
  auto context = Context(patience);
  std::promise<grpc::Status> done;
  h.generic->UnaryCall(context.get(), std::string("/shmdict.v1.Dict/") + method,
                       grpc::StubOptions(), &send, &receive,
                       [&done](grpc::Status status) { done.set_value(std::move(status)); });
  const grpc::Status status = done.get_future().get();
  Check(method, parsed, status);
  return status.ok();
}

void List(Harness& h, bool aim, const uint8_t* data, size_t size) {
  v1::ListRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  if (aim) request.set_dict(h.dict_name);
  auto context = Context(kCallDeadline);
  auto reader = h.stub->List(context.get(), request);
  v1::ListResponse response;
  while (reader->Read(&response)) {
  }
  Check("List", true, reader->Finish());
}

// A Watch never ends by itself: it is read until its first message or a short deadline, then
// cancelled. Only its own end (a refusal) is checked.
void Watch(Harness& h, bool aim, bool twice, const uint8_t* data, size_t size) {
  v1::WatchRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return;
  if (aim && request.has_start()) request.mutable_start()->set_dict(h.dict_name);
  auto context = Context(kWaitDeadline);
  auto stream = h.stub->Watch(context.get());
  stream->Write(request);
  if (twice) stream->Write(request);
  stream->WritesDone();
  v1::WatchResponse response;
  if (stream->Read(&response)) context->TryCancel();
  while (stream->Read(&response)) {
  }
  const grpc::Status status = stream->Finish();
  // Our own cancel or deadline is not the bridge's answer.
  if (status.error_code() == grpc::StatusCode::CANCELLED ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return;
  }
  Check("Watch", true, status);
}

}  // namespace
}  // namespace shmdict::bridge

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  shmdict::bridge::Start();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace shmdict::bridge;
  namespace v1 = shmdict::v1;
  if (size < 2) return 0;
  Harness& h = *g_harness;
  EnsureDict(h);
  const uint8_t method = data[0];
  const bool aim = (data[1] & 1) != 0;
  const bool twice = (data[1] & 2) != 0;
  data += 2;
  size -= 2;
  switch (method % 16) {
    case 0:
      Unary<v1::GetRequest>(
          h, "Get", aim, data, size,
          [&h](const v1::GetRequest& request) -> std::chrono::milliseconds {
            // A revision ahead of the dict waits until the deadline.
            if (request.min_revision() > h.dict->published_revision()) {
              return std::chrono::duration_cast<std::chrono::milliseconds>(kWaitDeadline);
            }
            return kCallDeadline;
          });
      break;
    case 1:
      if (Unary<v1::SetRequest>(h, "Set", aim, data, size)) CheckStoredValues(h, "Set");
      break;
    case 2:
      Unary<v1::DeleteRequest>(h, "Delete", aim, data, size);
      break;
    case 3:
      Unary<v1::PopRequest>(h, "Pop", aim, data, size);
      break;
    case 4:
      Unary<v1::PopItemRequest>(h, "PopItem", aim, data, size);
      break;
    case 5:
      if (Unary<v1::SetDefaultRequest>(h, "SetDefault", aim, data, size))
        CheckStoredValues(h, "SetDefault");
      break;
    case 6:
      Unary<v1::ClearRequest>(h, "Clear", aim, data, size);
      break;
    case 7:
      if (Unary<v1::BatchRequest>(h, "Batch", aim, data, size)) CheckStoredValues(h, "Batch");
      break;
    case 8:
      if (Unary<v1::CompareAndSetRequest>(h, "CompareAndSet", aim, data, size))
        CheckStoredValues(h, "CompareAndSet");
      break;
    case 9:
      Unary<v1::IncrementRequest>(h, "Increment", aim, data, size);
      break;
    case 10:
      Unary<v1::StatusRequest>(h, "Status", aim, data, size);
      break;
    case 11:
      Unary<v1::CreateRequest>(h, "Create", aim, data, size);
      break;
    case 12:
      Unary<v1::UnlinkRequest>(h, "Unlink", aim, data, size);
      break;
    case 13:
      List(h, aim, data, size);
      break;
    case 14:
      Watch(h, aim, twice, data, size);
      break;
    default: {
      // ListDicts has no dict to aim at.
      v1::ListDictsRequest request;
      const bool parsed = request.ParseFromArray(data, static_cast<int>(size));
      v1::ListDictsResponse response;
      auto context = Context(kCallDeadline);
      const grpc::Status status = h.stub->ListDicts(context.get(), request, &response);
      Check("ListDicts", parsed, status);
      break;
    }
  }
  return 0;
}
