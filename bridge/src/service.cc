#include "service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "shmdict/v1/wire.h"

namespace shmdict::bridge {

namespace {

// DictService has an RPC named Status, which hides the type inside its members.
using CoreStatus = shmdict::Status;

constexpr uint32_t kDefaultListEntriesPerMessage = 1024;

// Every error names the dict: a client juggling several must know which one failed.
grpc::Status Fail(const Status& status, const std::string& dict) {
  if (status.message().find("'" + dict + "'") != std::string::npos) return wire::ToGrpc(status);
  return wire::ToGrpc(Status(status.code(), "dict '" + dict + "': " + status.message()));
}

// Asks the authorizer, then leases a handle of `name` and runs fn(Dict&) -> Status with it; logs
// failures with the peer.
// Records the call in `metrics` with the size of `response` (null: a stream that counts its own
// messages).
template <typename Fn>
grpc::Status WithDict(DictRegistry* registry, const Authorizer& authorizer, Metrics* metrics,
                      grpc::ServerContext* context, const char* method, const std::string& name,
                      Access access, const google::protobuf::MessageLite* response, Fn&& fn) {
  Metrics::Call call(metrics, method);
  grpc::Status allowed = authorizer.Check(*context, name, access);
  if (!allowed.ok()) {
    spdlog::info("{} refused dict={} peer={}: {}", method, name, context->peer(),
                 allowed.error_message());
    return call.Finish(allowed, 0);
  }
  Result<DictRegistry::Lease> lease = registry->Acquire(name);
  Status status = lease.ok() ? fn(lease->dict()) : lease.status();
  if (status.ok()) {
    if (access == Access::kWrite) lease->entry()->writes.fetch_add(1, std::memory_order_relaxed);
    return call.Finish(grpc::Status::OK, response != nullptr ? response->ByteSizeLong() : 0);
  }
  spdlog::info("{} failed dict={} peer={}: {}", method, name, context->peer(), status.ToString());
  return call.Finish(Fail(status, name), 0);
}

Status DecodeValue(const v1::Value& in, Value* out, std::string_view what) {
  Status status = wire::FromProto(in, out);
  if (status.ok()) return status;
  return Status(status.code(), std::string(what) + ": " + status.message());
}

}  // namespace

CoreStatus DictService::CheckKeyAndValue(std::string_view key, const Value* value,
                                         const std::string& where) const {
  if (max_value_bytes_ == 0) return CoreStatus::Ok();
  const char* what = "key";
  size_t size = key.size();
  if (size <= max_value_bytes_ && value != nullptr) {
    what = "value";
    size = value->data().size();
  }
  if (size <= max_value_bytes_) return CoreStatus::Ok();
  return CoreStatus(StatusCode::kResourceExhausted,
                    where + what + " of " + std::to_string(size) +
                        " bytes is larger than this bridge accepts (--max-value-bytes " +
                        std::to_string(max_value_bytes_) + "): nothing was written");
}

grpc::Status DictService::Get(grpc::ServerContext* context, const v1::GetRequest* request,
                              v1::GetResponse* response) {
  return WithDict(
      registry_, *authorizer_, metrics_, context, "Get", request->dict(), Access::kRead, response,
      [&](Dict& dict) -> CoreStatus {
        const uint64_t wanted = request->min_revision();
        while (dict.published_revision() < wanted) {
          const auto left = context->deadline() - std::chrono::system_clock::now();
          if (left <= std::chrono::nanoseconds::zero() || context->IsCancelled()) {
            return CoreStatus(StatusCode::kDeadlineExceeded,
                              "revision " + std::to_string(wanted) +
                                  " was not reached within the call's deadline (the dict is at " +
                                  std::to_string(dict.published_revision()) + ")");
          }
          // Slices of at most 100 ms so that a cancelled call stops waiting.
          const auto slice = std::min<std::chrono::nanoseconds>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(left),
              std::chrono::milliseconds(100));
          Result<uint64_t> changed = dict.WaitForChange(dict.published_revision(), slice);
          if (!changed.ok() && changed.status().code() != StatusCode::kDeadlineExceeded) {
            return changed.status();
          }
        }
        // The revision is read before the value: the answer reflects at least this revision.
        response->set_revision(dict.revision());
        thread_local Value value;
        Result<bool> found = dict.Get(request->key(), &value);
        if (!found.ok()) return found.status();
        response->set_found(*found);
        if (*found) wire::ToProto(value, response->mutable_value());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Set(grpc::ServerContext* context, const v1::SetRequest* request,
                              v1::WriteResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "Set", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    Value value;
                    CoreStatus decoded = DecodeValue(request->value(), &value, "value");
                    if (!decoded.ok()) return decoded;
                    CoreStatus sized = CheckKeyAndValue(request->key(), &value);
                    if (!sized.ok()) return sized;
                    Result<uint64_t> revision = dict.Set(request->key(), value);
                    if (!revision.ok()) return revision.status();
                    response->set_revision(*revision);
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                                 v1::DeleteResponse* response) {
  return WithDict(
      registry_, *authorizer_, metrics_, context, "Delete", request->dict(), Access::kWrite,
      response, [&](Dict& dict) -> CoreStatus {
        Result<bool> existed = dict.Erase(request->key());
        if (!existed.ok()) return existed.status();
        response->set_existed(*existed);
        response->set_revision(*existed ? dict.last_commit_revision() : dict.revision());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Pop(grpc::ServerContext* context, const v1::PopRequest* request,
                              v1::PopResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "Pop", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    Result<std::optional<Value>> popped = dict.Pop(request->key());
                    if (!popped.ok()) return popped.status();
                    response->set_key(request->key());
                    response->set_found(popped->has_value());
                    if (popped->has_value()) {
                      wire::ToProto(**popped, response->mutable_value());
                      response->set_revision(dict.last_commit_revision());
                    } else {
                      response->set_revision(dict.revision());
                    }
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::PopItem(grpc::ServerContext* context, const v1::PopItemRequest* request,
                                  v1::PopResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "PopItem", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    auto popped = dict.PopItem();
                    if (!popped.ok()) return popped.status();
                    response->set_found(popped->has_value());
                    if (popped->has_value()) {
                      response->set_key((*popped)->first);
                      wire::ToProto((*popped)->second, response->mutable_value());
                      response->set_revision(dict.last_commit_revision());
                    } else {
                      response->set_revision(dict.revision());
                    }
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::SetDefault(grpc::ServerContext* context,
                                     const v1::SetDefaultRequest* request,
                                     v1::SetDefaultResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "SetDefault", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    Value fallback;
                    CoreStatus decoded =
                        DecodeValue(request->default_value(), &fallback, "default_value");
                    if (!decoded.ok()) return decoded;
                    CoreStatus sized = CheckKeyAndValue(request->key(), &fallback);
                    if (!sized.ok()) return sized;
                    Result<Value> value = dict.SetDefault(request->key(), fallback);
                    if (!value.ok()) return value.status();
                    wire::ToProto(*value, response->mutable_value());
                    response->set_revision(std::max(dict.last_commit_revision(), dict.revision()));
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::Clear(grpc::ServerContext* context, const v1::ClearRequest* request,
                                v1::WriteResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "Clear", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    Result<uint64_t> revision = dict.Clear();
                    if (!revision.ok()) return revision.status();
                    response->set_revision(*revision);
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::Batch(grpc::ServerContext* context, const v1::BatchRequest* request,
                                v1::WriteResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "Batch", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    // Decode everything before writing anything: a bad mutation changes nothing.
                    std::vector<Change> changes(request->mutations_size());
                    for (int i = 0; i < request->mutations_size(); ++i) {
                      const v1::Mutation& mutation = request->mutations(i);
                      Result<ChangeOp> op = wire::FromProto(mutation.op());
                      if (!op.ok()) {
                        return CoreStatus(op.status().code(), "mutation " + std::to_string(i) +
                                                                  ": " + op.status().message());
                      }
                      changes[i].op = *op;
                      changes[i].key = mutation.key();
                      if (*op == ChangeOp::kSet) {
                        CoreStatus decoded = DecodeValue(mutation.value(), &changes[i].value,
                                                         "mutation " + std::to_string(i));
                        if (!decoded.ok()) return decoded;
                      }
                      CoreStatus sized = CheckKeyAndValue(
                          changes[i].key, *op == ChangeOp::kSet ? &changes[i].value : nullptr,
                          "mutation " + std::to_string(i) + ": ");
                      if (!sized.ok()) return sized;
                    }
                    Result<uint64_t> revision = dict.Apply(changes);
                    if (!revision.ok()) return revision.status();
                    response->set_revision(*revision);
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::CompareAndSet(grpc::ServerContext* context,
                                        const v1::CompareAndSetRequest* request,
                                        v1::CompareAndSetResponse* response) {
  return WithDict(
      registry_, *authorizer_, metrics_, context, "CompareAndSet", request->dict(), Access::kWrite,
      response, [&](Dict& dict) -> CoreStatus {
        std::optional<Value> expected;
        std::optional<Value> desired;
        if (request->has_expected()) {
          CoreStatus decoded = DecodeValue(request->expected(), &expected.emplace(), "expected");
          if (!decoded.ok()) return decoded;
        }
        if (request->has_desired()) {
          CoreStatus decoded = DecodeValue(request->desired(), &desired.emplace(), "desired");
          if (!decoded.ok()) return decoded;
        }
        CoreStatus sized =
            CheckKeyAndValue(request->key(), desired.has_value() ? &*desired : nullptr);
        if (!sized.ok()) return sized;
        Result<bool> swapped = dict.CompareAndSet(request->key(), expected, desired);
        if (!swapped.ok()) return swapped.status();
        response->set_swapped(*swapped);
        response->set_revision(*swapped ? dict.last_commit_revision() : dict.revision());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Increment(grpc::ServerContext* context,
                                    const v1::IncrementRequest* request,
                                    v1::IncrementResponse* response) {
  return WithDict(registry_, *authorizer_, metrics_, context, "Increment", request->dict(),
                  Access::kWrite, response, [&](Dict& dict) -> CoreStatus {
                    CoreStatus sized = CheckKeyAndValue(request->key(), nullptr);
                    if (!sized.ok()) return sized;
                    Result<int64_t> value = dict.Increment(request->key(), request->delta());
                    if (!value.ok()) return value.status();
                    response->set_value(*value);
                    response->set_revision(dict.last_commit_revision());
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::List(grpc::ServerContext* context, const v1::ListRequest* request,
                               grpc::ServerWriter<v1::ListResponse>* writer) {
  return WithDict(registry_, *authorizer_, metrics_, context, "List", request->dict(),
                  Access::kRead, nullptr, [&](Dict& dict) -> CoreStatus {
                    const uint32_t per_message = request->max_entries_per_message()
                                                     ? request->max_entries_per_message()
                                                     : kDefaultListEntriesPerMessage;
                    v1::ListResponse message;
                    size_t bytes = 0;
                    bool client_gone = false;
                    const uint64_t revision =
                        dict.ForEach([&](std::string_view key, ValueView value) {
                          if (client_gone) return;
                          v1::Entry* entry = message.add_entries();
                          entry->set_key(key.data(), key.size());
                          wire::ToProto(value, entry->mutable_value());
                          bytes += key.size() + value.data.size();
                          if (message.entries_size() >= static_cast<int>(per_message) ||
                              bytes >= limits_.batch_bytes) {
                            if (metrics_ != nullptr) metrics_->AddBytesSent(message.ByteSizeLong());
                            client_gone = !writer->Write(message);
                            message.Clear();
                            bytes = 0;
                          }
                        });
                    if (client_gone)
                      return CoreStatus(StatusCode::kCancelled, "the client went away");
                    message.set_revision(revision);
                    message.set_last(true);
                    if (metrics_ != nullptr) metrics_->AddBytesSent(message.ByteSizeLong());
                    writer->Write(message);
                    return CoreStatus::Ok();
                  });
}

grpc::Status DictService::Status(grpc::ServerContext* context, const v1::StatusRequest* request,
                                 v1::StatusResponse* response) {
  Metrics::Call call(metrics_, "Status");
  grpc::Status allowed = authorizer_->Check(*context, request->dict(), Access::kRead);
  if (!allowed.ok()) return call.Finish(allowed, 0);
  Result<DictStatus> status = catalog_.Inspect(request->dict());
  if (!status.ok()) {
    spdlog::info("Status failed dict={} peer={}: {}", request->dict(), context->peer(),
                 status.status().ToString());
    return call.Finish(Fail(status.status(), request->dict()), 0);
  }
  wire::ToProto(*status, response);
  return call.Finish(grpc::Status::OK, response->ByteSizeLong());
}

grpc::Status DictService::ListDicts(grpc::ServerContext* context, const v1::ListDictsRequest*,
                                    v1::ListDictsResponse* response) {
  Metrics::Call call(metrics_, "ListDicts");
  grpc::Status allowed = authorizer_->Check(*context, "", Access::kRead);
  if (!allowed.ok()) return call.Finish(allowed, 0);
  Result<std::vector<std::string>> names = catalog_.ListNames();
  if (!names.ok()) return call.Finish(wire::ToGrpc(names.status()), 0);
  for (const std::string& name : *names) {
    if (authorizer_->DictAllowed(name)) response->add_dicts(name);
  }
  return call.Finish(grpc::Status::OK, response->ByteSizeLong());
}

grpc::Status DictService::CheckCreation(grpc::ServerContext* context, const char* method,
                                        const std::string& dict) const {
  grpc::Status allowed = authorizer_->Check(*context, dict, Access::kWrite);
  if (allowed.ok() && !creation_.allowed) {
    allowed = grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                           "dict '" + dict + "': this bridge does not create or unlink dicts " +
                               "(start it with --allow-create)");
  }
  if (!allowed.ok()) {
    spdlog::info("{} refused dict={} peer={}: {}", method, dict, context->peer(),
                 allowed.error_message());
  }
  return allowed;
}

grpc::Status DictService::Create(grpc::ServerContext* context, const v1::CreateRequest* request,
                                 v1::CreateResponse* response) {
  Metrics::Call call(metrics_, "Create");
  grpc::Status allowed = CheckCreation(context, "Create", request->dict());
  if (!allowed.ok()) return call.Finish(allowed, 0);
  Options options;
  options.name = request->dict();
  if (options.name.empty()) {
    return call.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "Create needs a dict name"),
                       0);
  }
  options.create_mode =
      request->exclusive() ? CreateMode::kMustCreate : CreateMode::kAttachOrCreate;
  if (request->buffer_size() != 0) options.buffer_size = request->buffer_size();
  options.mode = creation_.mode;
  options.auto_unlink = false;  // the dict outlives this call, as `shmdict create` makes it
  Result<Dict> dict = Dict::Open(options);
  if (!dict.ok()) {
    spdlog::info("Create failed dict={} peer={}: {}", request->dict(), context->peer(),
                 dict.status().ToString());
    return call.Finish(Fail(dict.status(), request->dict()), 0);
  }
  response->set_dict(dict->name());
  response->set_created(dict->created());
  response->set_revision(dict->revision());
  spdlog::info("Create dict={} created={} peer={}", request->dict(), dict->created(),
               context->peer());
  return call.Finish(grpc::Status::OK, response->ByteSizeLong());
}

grpc::Status DictService::Unlink(grpc::ServerContext* context, const v1::UnlinkRequest* request,
                                 v1::UnlinkResponse*) {
  Metrics::Call call(metrics_, "Unlink");
  grpc::Status allowed = CheckCreation(context, "Unlink", request->dict());
  if (!allowed.ok()) return call.Finish(allowed, 0);
  CoreStatus unlinked = Dict::UnlinkByName(request->dict());
  if (!unlinked.ok()) {
    spdlog::info("Unlink failed dict={} peer={}: {}", request->dict(), context->peer(),
                 unlinked.ToString());
    return call.Finish(Fail(unlinked, request->dict()), 0);
  }
  spdlog::info("Unlink dict={} peer={}", request->dict(), context->peer());
  return call.Finish(grpc::Status::OK, 0);
}

grpc::ServerBidiReactor<v1::WatchRequest, v1::WatchResponse>* DictService::Watch(
    grpc::CallbackServerContext* context) {
  return new WatchStream(registry_, limits_, authorizer_, metrics_, *context);
}

}  // namespace shmdict::bridge
