// DictService: shmdict.v1.Dict over the registry's dicts. Writes and List run on gRPC's
// synchronous thread pool (they may wait for the writer lock, which a callback reaction must never
// do). Get and Watch run as callback reactors: a Get whose min_revision the dict has not reached
// is parked as a subscriber of the dict's fan-out (dict_registry.h) and holds no thread while it
// waits, so that a client cannot buy one thread per call; Watch is watch_stream.h.
//
// Every value a request carries is checked before anything is written: its encoding
// (ValidateEncoding), pickles only with --allow-pickle, nested references only to the dict's own
// children. Every key a keyed call carries is 1 to 65,536 bytes (the proto's rule).
//
// Writes run against a Store: the leased dict, or the one BridgeConfig's WriteRouter gives for the
// call (write_router.h: shmdict-replica sends writes upstream); reads always read the local dict.
//
// Every error is a canonical code with a message naming the dict (proto/shmdict/v1/dict.proto).
// Untrusted text (names, keys) is logged only through LogText (log_text.h).
// Thread-safety: called concurrently by gRPC; each call leases its own handle.
#ifndef SHMDICT_BRIDGE_SERVICE_H_
#define SHMDICT_BRIDGE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>

#include "authorizer.h"
#include "call_limits.h"
#include "dict_registry.h"
#include "metrics.h"
#include "shmdict/local_catalog.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "watch_stream.h"
#include "write_router.h"

namespace shmdict::bridge {

// Whether clients may Create and Unlink dicts (--allow-create), and with what file mode.
struct CreationPolicy {
  bool allowed = false;
  mode_t mode = 0600;  // --create-mode: the segments' file mode
};

// The work one unary call may cause (BridgeConfig's fields of the same names). Over a limit a call
// is refused before anything is written.
struct ServiceLimits {
  // --max-value-bytes: a larger key or value is refused with RESOURCE_EXHAUSTED (0: no limit
  // beyond the message size).
  size_t max_value_bytes = 0;
  // --max-batch-ops, --max-batch-bytes: mutations in one Batch, and their keys' and values' bytes
  // summed; RESOURCE_EXHAUSTED naming the flag.
  size_t max_batch_ops = 10000;
  size_t max_batch_bytes = size_t{32} << 20;
  // --max-wait-ms: the longest a Get waits for its min_revision (DEADLINE_EXCEEDED after it) when
  // the client set no deadline or a later one.
  std::chrono::milliseconds max_wait{60000};
  // --max-create-bytes: the largest buffer_size Create accepts (RESOURCE_EXHAUSTED naming it).
  uint64_t max_create_bytes = uint64_t{64} << 20;
  // --allow-pickle: accept values tagged pickle (8); refused with PERMISSION_DENIED otherwise.
  bool allow_pickle = false;
};

// Watch is registered raw: its streams send the pump's encoded frames (watch_stream.h).
class DictService final : public v1::Dict::WithCallbackMethod_Get<
                              v1::Dict::WithRawCallbackMethod_Watch<v1::Dict::Service>> {
 public:
  // `authorizer` is asked before every call touches a dict (it outlives the service).
  // `waiting` (not null; outlives the service and every call) admits the calls that wait for the
  // dict: Gets with a min_revision ahead of it here, Watch streams (--max-waiting-calls).
  // `metrics` (may be null) records every call.
  // Create and Unlink are refused unless `creation` allows them (--allow-create).
  // `router` (may be null; outlives the service) carries every write call once its checks passed
  // (write_router.h); null: writes go into the leased local dict.
  DictService(DictRegistry* registry, StreamLimits stream_limits, const Authorizer* authorizer,
              WaitingCalls* waiting, ServiceLimits limits = {}, Metrics* metrics = nullptr,
              CreationPolicy creation = {}, WriteRouter* router = nullptr)
      : registry_(registry),
        limits_(stream_limits),
        authorizer_(authorizer),
        waiting_(waiting),
        service_limits_(limits),
        metrics_(metrics),
        creation_(creation),
        router_(router) {}

  // The gate shared by waiting Gets and Watch streams.
  WaitingCalls* waiting_calls() const { return waiting_; }

  // Answers at once when the dict is at min_revision; otherwise waits without a thread (see the
  // file comment): RESOURCE_EXHAUSTED when --max-waiting-calls calls already wait,
  // DEADLINE_EXCEEDED after the client's deadline or --max-wait-ms, UNAVAILABLE when the bridge
  // shuts down meanwhile, ABORTED when the dict is unlinked or replaced meanwhile,
  // UNAUTHENTICATED when a token reload revoked its token meanwhile; a handle that cannot be
  // attached while it waits ends it with that error.
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* context, const v1::GetRequest* request,
                                v1::GetResponse* response) override;
  grpc::Status Set(grpc::ServerContext* context, const v1::SetRequest* request,
                   v1::WriteResponse* response) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override;
  grpc::Status Pop(grpc::ServerContext* context, const v1::PopRequest* request,
                   v1::PopResponse* response) override;
  grpc::Status PopItem(grpc::ServerContext* context, const v1::PopItemRequest* request,
                       v1::PopResponse* response) override;
  grpc::Status SetDefault(grpc::ServerContext* context, const v1::SetDefaultRequest* request,
                          v1::SetDefaultResponse* response) override;
  grpc::Status Clear(grpc::ServerContext* context, const v1::ClearRequest* request,
                     v1::WriteResponse* response) override;
  grpc::Status Batch(grpc::ServerContext* context, const v1::BatchRequest* request,
                     v1::WriteResponse* response) override;
  grpc::Status CompareAndSet(grpc::ServerContext* context, const v1::CompareAndSetRequest* request,
                             v1::CompareAndSetResponse* response) override;
  grpc::Status Increment(grpc::ServerContext* context, const v1::IncrementRequest* request,
                         v1::IncrementResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListRequest* request,
                    grpc::ServerWriter<v1::ListResponse>* writer) override;
  grpc::Status Status(grpc::ServerContext* context, const v1::StatusRequest* request,
                      v1::StatusResponse* response) override;
  grpc::Status ListDicts(grpc::ServerContext* context, const v1::ListDictsRequest* request,
                         v1::ListDictsResponse* response) override;
  grpc::Status Create(grpc::ServerContext* context, const v1::CreateRequest* request,
                      v1::CreateResponse* response) override;
  grpc::Status Unlink(grpc::ServerContext* context, const v1::UnlinkRequest* request,
                      v1::UnlinkResponse* response) override;

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Watch(
      grpc::CallbackServerContext* context) override;

 private:
  // A write call to `dict`: authorized and leased (WithDict in service.cc), then check() -> Status
  // (every check of the request: a refused request never reaches the router), then
  // write(Store&) -> Status on the leased dict, or on the Store router_ gives for this call.
  template <typename Check, typename Write>
  grpc::Status WithWrite(const char* method, grpc::ServerContext* context, const std::string& dict,
                         const google::protobuf::MessageLite* response, Check&& check,
                         Write&& write);
  // Create and Unlink: a write to `dict` (token, --read-only, allow-list) on a bridge with
  // --allow-create; logs a refusal.
  grpc::Status CheckCreation(grpc::ServerContext* context, const char* method,
                             const std::string& dict) const;
  // RESOURCE_EXHAUSTED when the key or the value (null: none) exceeds --max-value-bytes; the
  // message starts with `where`.
  shmdict::Status CheckKeyAndValue(std::string_view key, const Value* value,
                                   const std::string& where = "") const;
  // A value from a request, about to be stored in (or compared with a value of) `dict`:
  // INVALID_ARGUMENT for a malformed encoding or a nested reference that is not a child of `dict`,
  // PERMISSION_DENIED for a pickle without --allow-pickle. The message starts with `where`.
  shmdict::Status CheckValue(const std::string& dict, const Value& value,
                             const std::string& where) const;

  DictRegistry* const registry_;
  const StreamLimits limits_;
  const Authorizer* const authorizer_;
  WaitingCalls* const waiting_;
  const ServiceLimits service_limits_;
  Metrics* const metrics_;
  const CreationPolicy creation_;
  WriteRouter* const router_;
  // Status and ListDicts: what `shmdict status` and `ls` show on this host. Stateless.
  LocalCatalog catalog_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_SERVICE_H_
