// DictService: shmdict.v1.Dict over the registry's dicts. Unary calls and List run on gRPC's
// synchronous thread pool (they may wait for the writer lock or a min_revision, which a callback
// reaction must never do); Watch runs as a callback reactor (watch_stream.h).
//
// Every error is a canonical code with a message naming the dict (proto/shmdict/v1/dict.proto).
// Thread-safety: called concurrently by gRPC; each call leases its own handle.
#ifndef SHMDICT_BRIDGE_SERVICE_H_
#define SHMDICT_BRIDGE_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include "authorizer.h"
#include "dict_registry.h"
#include "metrics.h"
#include "shmdict/local_catalog.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "watch_stream.h"

namespace shmdict::bridge {

// Whether clients may Create and Unlink dicts (--allow-create), and with what file mode.
struct CreationPolicy {
  bool allowed = false;
  mode_t mode = 0600;  // --create-mode: the segments' file mode
};

class DictService final : public v1::Dict::WithCallbackMethod_Watch<v1::Dict::Service> {
 public:
  // `authorizer` is asked before every call touches a dict (it outlives the service).
  // `max_value_bytes`: a key or value larger than this is refused with RESOURCE_EXHAUSTED before
  // anything is written (0: no limit beyond the message size).
  // `metrics` (may be null) records every call.
  // Create and Unlink are refused unless `creation` allows them (--allow-create).
  DictService(DictRegistry* registry, StreamLimits limits, const Authorizer* authorizer,
              size_t max_value_bytes = 0, Metrics* metrics = nullptr, CreationPolicy creation = {})
      : registry_(registry),
        limits_(limits),
        authorizer_(authorizer),
        max_value_bytes_(max_value_bytes),
        metrics_(metrics),
        creation_(creation) {}

  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
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

  grpc::ServerBidiReactor<v1::WatchRequest, v1::WatchResponse>* Watch(
      grpc::CallbackServerContext* context) override;

 private:
  // Create and Unlink: a write to `dict` (token, --read-only, allow-list) on a bridge with
  // --allow-create; logs a refusal.
  grpc::Status CheckCreation(grpc::ServerContext* context, const char* method,
                             const std::string& dict) const;
  // RESOURCE_EXHAUSTED when the key or the value (null: none) exceeds --max-value-bytes; the
  // message starts with `where`.
  shmdict::Status CheckKeyAndValue(std::string_view key, const Value* value,
                                   const std::string& where = "") const;

  DictRegistry* const registry_;
  const StreamLimits limits_;
  const Authorizer* const authorizer_;
  const size_t max_value_bytes_;
  Metrics* const metrics_;
  const CreationPolicy creation_;
  // Status and ListDicts: what `shmdict status` and `ls` show on this host. Stateless.
  LocalCatalog catalog_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_SERVICE_H_
