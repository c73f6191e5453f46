#include "service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "log_text.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {

namespace {

// DictService has an RPC named Status, which hides the type inside its members.
using CoreStatus = shmdict::Status;

constexpr uint32_t kDefaultListEntriesPerMessage = 1024;
// The proto's rule for keys (dict.proto, GetRequest.key).
constexpr size_t kMaxKeyBytes = 65536;
// A status message in a log line: it may quote the dict's name or a key, so it is escaped too, and
// bounded (with the name's own bound) so that one call logs at most about a kilobyte.
constexpr size_t kMaxLoggedMessageBytes = 512;
// Bytes an entry adds to a List message beyond its key and value (tags, lengths).
constexpr size_t kPerEntryOverhead = 32;

std::string LoggedStatus(std::string_view message) {
  return LogText(message, kMaxLoggedMessageBytes);
}

// Every error names the dict: a client juggling several must know which one failed. The name is
// quoted as the core quotes it (bounded: the message travels in a gRPC header).
grpc::Status Fail(const Status& status, const std::string& dict) {
  const std::string quoted = QuoteForMessage(dict);
  if (status.message().find(quoted) != std::string::npos) return wire::ToGrpc(status);
  return wire::ToGrpc(Status(status.code(), "dict " + quoted + ": " + status.message()));
}

// Asks the authorizer, then leases a handle of `name` and runs fn(Dict&) -> Status with it; logs
// failures with the peer.
// Records the call in `metrics` with the size of `response` (null: a stream that counts its own
// messages).
template <typename Fn>
grpc::Status WithDict(DictRegistry* registry, const Authorizer& authorizer, Metrics* metrics,
                      grpc::ServerContextBase* context, const char* method, const std::string& name,
                      Access access, const google::protobuf::MessageLite* response, Fn&& fn) {
  Metrics::Call call(metrics, method);
  grpc::Status allowed = authorizer.Check(*context, name, access);
  if (!allowed.ok()) {
    spdlog::info("{} refused dict={} peer={}: {}", method, LogText(name), LogText(context->peer()),
                 LoggedStatus(allowed.error_message()));
    return call.Finish(allowed, 0);
  }
  Result<DictRegistry::Lease> lease = registry->Acquire(name);
  Status status = lease.ok() ? fn(lease->dict()) : lease.status();
  if (status.ok()) {
    if (access == Access::kWrite) {
      lease->entry()->writes.fetch_add(1, std::memory_order_relaxed);
      // The revision a write returns counts in this incarnation of the dict only: a mirror that
      // still holds the one before must not count as holding the write (wire.h).
      context->AddTrailingMetadata(std::string(wire::kIncarnationMetadata),
                                   std::to_string(lease->entry()->incarnation));
    }
    return call.Finish(grpc::Status::OK, response != nullptr ? response->ByteSizeLong() : 0);
  }
  spdlog::info("{} failed dict={} peer={}: {}", method, LogText(name), LogText(context->peer()),
               LoggedStatus(status.ToString()));
  return call.Finish(Fail(status, name), 0);
}

// OK when `key` is 1 to kMaxKeyBytes bytes (INVALID_ARGUMENT when empty, RESOURCE_EXHAUSTED when
// longer); the message starts with `where`.
Status CheckKey(std::string_view key, const std::string& where = "") {
  if (!key.empty() && key.size() <= kMaxKeyBytes) return Status::Ok();
  // Too long is the engine's RESOURCE_EXHAUSTED (a limit, the code a local Dict answers: one Store
  // contract for both transports); empty is malformed.
  if (!key.empty()) {
    return Status(StatusCode::kResourceExhausted,
                  where + "a key of " + std::to_string(key.size()) +
                      " bytes exceeds the limit: keys are 1 to 65,536 bytes");
  }
  return Status(StatusCode::kInvalidArgument,
                where + "the key is empty: keys are 1 to 65,536 bytes");
}

// RESOURCE_EXHAUSTED naming the flag when `batch` has more mutations than --max-batch-ops or more
// key and value bytes than --max-batch-bytes. Reads sizes only: nothing is decoded.
Status CheckBatchBounds(const v1::BatchRequest& batch, const ServiceLimits& limits) {
  const size_t ops = static_cast<size_t>(batch.mutations_size());
  if (ops > limits.max_batch_ops) {
    return Status(StatusCode::kResourceExhausted,
                  "a Batch of " + std::to_string(ops) + " mutations is more than this bridge " +
                      "applies at once (--max-batch-ops " + std::to_string(limits.max_batch_ops) +
                      "): split it; nothing was written");
  }
  size_t bytes = 0;
  for (const v1::Mutation& mutation : batch.mutations()) {
    bytes += mutation.key().size() + mutation.value().data().size();
  }
  if (bytes > limits.max_batch_bytes) {
    return Status(StatusCode::kResourceExhausted,
                  "a Batch of " + std::to_string(bytes) + " bytes of keys and values is more " +
                      "than this bridge applies at once (--max-batch-bytes " +
                      std::to_string(limits.max_batch_bytes) + "): split it; nothing was written");
  }
  return Status::Ok();
}

// The answer of a Get from a handle of a dict at (or past) its min_revision.
Status AnswerGet(Dict& dict, const v1::GetRequest& request, v1::GetResponse* response) {
  // The revision is read before the value: the answer reflects at least this revision.
  response->set_revision(dict.revision());
  thread_local Value value;
  Result<bool> found = dict.Get(request.key(), &value);
  if (!found.ok()) return found.status();
  response->set_found(*found);
  if (*found) wire::ToProto(value, response->mutable_value());
  return Status::Ok();
}

// A Get whose min_revision the dict has not reached. It waits as a subscriber of the dict's
// fan-out: the registry's notifier thread (one per dict, shared with the Watch streams) pokes it
// when the dict changes and on every tick, which is also when it notices its deadline. It holds a
// WaitingCalls slot and no Dict handle (a pumped check leases one for the moment it reads).
//
// Finished exactly once, by whichever comes first: Pump (the revision reached, or the deadline
// passed), End (the registry shuts down or retires the dict), OnCancel (the client gave up).
// Lifetime: gRPC owns it; OnDone unsubscribes (after which the notifier never calls it again) and
// deletes it. gRPC runs OnDone only after the handler that made it returned.
class WaitingGet final : public grpc::ServerUnaryReactor, public Subscriber {
 public:
  // `token` (empty without a token file) was accepted by `authorizer` under its token set of
  // `token_generation` or a later one: a reload after that makes the next Pump check it again.
  WaitingGet(DictRegistry* registry, const Authorizer* authorizer, std::string token,
             uint64_t token_generation, std::shared_ptr<DictEntry> entry, WaitingCalls::Slot slot,
             std::unique_ptr<Metrics::Call> call, std::string peer, const v1::GetRequest* request,
             v1::GetResponse* response, std::chrono::steady_clock::time_point deadline,
             std::chrono::milliseconds max_wait, bool bounded_by_bridge)
      : registry_(registry),
        authorizer_(authorizer),
        entry_(std::move(entry)),
        call_(std::move(call)),
        peer_(std::move(peer)),
        request_(request),
        response_(response),
        deadline_(deadline),
        max_wait_(max_wait),
        bounded_by_bridge_(bounded_by_bridge),
        slot_(std::move(slot)),
        token_(std::move(token)),
        token_generation_(token_generation) {}

  // Subscribes, then checks once: a commit between the handler's look and the subscription would
  // otherwise wait for the next tick. Call from the handler, before it returns the reactor.
  void Park() {
    registry_->Subscribe(entry_, this);
    Pump();
  }

  void Pump() override {
    std::lock_guard lock(mu_);
    if (finished_) return;
    if (!CredentialsValidLocked()) return;
    // Read before the lease, which may attach (slow): the call is judged by when it was checked.
    const bool expired = std::chrono::steady_clock::now() >= deadline_;
    Result<SharedDict::Lease> lease = entry_->handles.Acquire();
    if (!lease.ok()) {
      // A closed entry: the registry retired it and ends this call with its reason (End).
      if (lease.status().code() == StatusCode::kFailedPrecondition) return;
      // Anything else (an attach that failed: EMFILE, ENOMEM...) is not retried until the
      // deadline: nothing says the next attach does better, and the client can retry.
      FinishLocked(Fail(lease.status(), entry_->name));
      return;
    }
    Dict& dict = lease->dict();
    if (dict.published_revision() >= request_->min_revision()) {
      Status answered = AnswerGet(dict, *request_, response_);
      FinishLocked(answered.ok() ? grpc::Status::OK : Fail(answered, entry_->name));
      return;
    }
    if (!expired) return;
    const std::string why = bounded_by_bridge_ ? "the bridge's longest wait (--max-wait-ms " +
                                                     std::to_string(max_wait_.count()) + ")"
                                               : "the call's deadline";
    FinishLocked(Fail(
        Status(StatusCode::kDeadlineExceeded,
               "revision " + std::to_string(request_->min_revision()) + " was not reached within " +
                   why + " (the dict is at " + std::to_string(dict.published_revision()) + ")"),
        entry_->name));
  }

  void End(const Status& status) override {
    std::lock_guard lock(mu_);
    FinishLocked(Fail(Status(status.code(), "Get waiting for revision " +
                                                std::to_string(request_->min_revision()) +
                                                " ended: " + status.message()),
                      entry_->name));
  }

  // A Get streams nothing: it never holds the slowest subscriber's lag back.
  uint64_t SentRevision() const override { return std::numeric_limits<uint64_t>::max(); }
  bool IsWatchStream() const override { return false; }

 private:
  void OnCancel() override {
    std::lock_guard lock(mu_);
    FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    registry_->Unsubscribe(entry_, this);
    grpc::Status status;
    size_t bytes = 0;
    {
      // gRPC runs OnDone after Finish, through synchronization ThreadSanitizer cannot see in an
      // uninstrumented libgrpc: the lock makes the finishing thread's writes visible to it.
      std::lock_guard lock(mu_);
      status = status_;
      if (status.ok()) bytes = response_->ByteSizeLong();
    }
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::info("Get failed dict={} peer={}: {}", LogText(entry_->name), LogText(peer_),
                   LoggedStatus(status.error_message()));
    }
    call_->Finish(status, bytes);
    delete this;
  }

  // A token reload reaches parked Gets as it reaches Watch streams (the notifier pokes them every
  // tick): a revoked token's Get ends with UNAUTHENTICATED instead of being answered later. A Get
  // needs read access only, so a token that became read-only keeps its call.
  bool CredentialsValidLocked() {
    const uint64_t generation = authorizer_->generation();
    if (generation == token_generation_) return true;
    token_generation_ = generation;
    grpc::Status valid = authorizer_->Revalidate(token_, Access::kRead);
    if (valid.ok()) return true;
    FinishLocked(valid);
    return false;
  }

  void FinishLocked(grpc::Status status) {
    if (finished_) return;
    finished_ = true;
    slot_.Release();  // the call waits no longer; the next one may
    status_ = status;
    Finish(std::move(status));
  }

  DictRegistry* const registry_;
  const Authorizer* const authorizer_;
  const std::shared_ptr<DictEntry> entry_;
  const std::unique_ptr<Metrics::Call> call_;
  const std::string peer_;
  const v1::GetRequest* const request_;
  v1::GetResponse* const response_;
  const std::chrono::steady_clock::time_point deadline_;
  const std::chrono::milliseconds max_wait_;
  const bool bounded_by_bridge_;

  std::mutex mu_;
  WaitingCalls::Slot slot_;  // guarded by mu_
  bool finished_ = false;    // guarded by mu_
  grpc::Status status_;      // guarded by mu_; set once finished_
  // Held in memory only; never logged.
  const std::string token_;
  uint64_t token_generation_;  // guarded by mu_
};

Status DecodeValue(const v1::Value& in, Value* out, std::string_view what) {
  Status status = wire::FromProto(in, out);
  if (status.ok()) return status;
  return Status(status.code(), std::string(what) + ": " + status.message());
}

}  // namespace

CoreStatus DictService::CheckKeyAndValue(std::string_view key, const Value* value,
                                         const std::string& where) const {
  const size_t max_value_bytes = service_limits_.max_value_bytes;
  if (max_value_bytes == 0) return CoreStatus::Ok();
  const char* what = "key";
  size_t size = key.size();
  if (size <= max_value_bytes && value != nullptr) {
    what = "value";
    size = value->data().size();
  }
  if (size <= max_value_bytes) return CoreStatus::Ok();
  return CoreStatus(StatusCode::kResourceExhausted,
                    where + what + " of " + std::to_string(size) +
                        " bytes is larger than this bridge accepts (--max-value-bytes " +
                        std::to_string(max_value_bytes) + "): nothing was written");
}

CoreStatus DictService::CheckValue(const std::string& dict, const Value& value,
                                   const std::string& where) const {
  if (value.type() == ValueType::kPickle && !service_limits_.allow_pickle) {
    return CoreStatus(StatusCode::kPermissionDenied,
                      where +
                          "the bridge refuses pickled values (start it with --allow-pickle: any "
                          "writer can then run code in every Python reader)");
  }
  CoreStatus valid = ValidateEncoding(value.view());
  if (valid.ok() && value.type() == ValueType::kNestedDict) {
    valid = CheckNestedReference(dict, value.data());
  }
  if (valid.ok()) return valid;
  return CoreStatus(valid.code(), where + valid.message());
}

grpc::ServerUnaryReactor* DictService::Get(grpc::CallbackServerContext* context,
                                           const v1::GetRequest* request,
                                           v1::GetResponse* response) {
  auto call = std::make_unique<Metrics::Call>(metrics_, "Get");
  const std::string& name = request->dict();
  // Read before the token is checked: a reload racing the check makes a parked Get check again.
  const uint64_t token_generation = authorizer_->generation();
  // Answers from this handler (everything but a wait): the call is recorded and logged here.
  const auto answer = [&](const CoreStatus& status) {
    if (!status.ok()) {
      spdlog::info("Get failed dict={} peer={}: {}", LogText(name), LogText(context->peer()),
                   LoggedStatus(status.ToString()));
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(call->Finish(status.ok() ? grpc::Status::OK : Fail(status, name),
                                 status.ok() ? response->ByteSizeLong() : 0));
    return reactor;
  };
  grpc::Status allowed = authorizer_->Check(*context, name, Access::kRead);
  if (!allowed.ok()) {
    spdlog::info("Get refused dict={} peer={}: {}", LogText(name), LogText(context->peer()),
                 LoggedStatus(allowed.error_message()));
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(call->Finish(allowed, 0));
    return reactor;
  }
  CoreStatus key = CheckKey(request->key());
  if (!key.ok()) return answer(key);
  const uint64_t wanted = request->min_revision();
  std::shared_ptr<DictEntry> entry;
  uint64_t at = 0;
  {
    // The handle goes back to the pool before a wait: a waiting call holds none.
    Result<DictRegistry::Lease> lease = registry_->Acquire(name);
    if (!lease.ok()) return answer(lease.status());
    at = lease->dict().published_revision();
    if (at >= wanted) return answer(AnswerGet(lease->dict(), *request, response));
    entry = lease->entry();
  }

  // The wait: until the client's deadline or --max-wait-ms, whichever comes first.
  const auto now = std::chrono::steady_clock::now();
  const auto client_left = context->deadline() - std::chrono::system_clock::now();
  if (client_left <= std::chrono::system_clock::duration::zero()) {
    return answer(CoreStatus(StatusCode::kDeadlineExceeded,
                             "revision " + std::to_string(wanted) +
                                 " was not reached within the call's deadline (the dict is at " +
                                 std::to_string(at) + ")"));
  }
  using SteadyDuration = std::chrono::steady_clock::duration;
  const bool bounded_by_bridge = client_left > service_limits_.max_wait;
  const auto deadline =
      now + (bounded_by_bridge
                 ? std::chrono::duration_cast<SteadyDuration>(service_limits_.max_wait)
                 : std::chrono::duration_cast<SteadyDuration>(client_left));
  Result<WaitingCalls::Slot> slot = waiting_->Enter("Get with a min_revision ahead of the dict");
  if (!slot.ok()) return answer(slot.status());
  // The token Check accepted above, kept for rechecks after a reload (as a Watch stream does).
  Access granted = Access::kRead;
  std::string token;
  grpc::Status authenticated = authorizer_->Authenticate(*context, &granted, &token);
  if (!authenticated.ok()) {  // revoked by a reload since the check above
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(call->Finish(authenticated, 0));
    return reactor;
  }
  auto* waiting =
      new WaitingGet(registry_, authorizer_, std::move(token), token_generation, std::move(entry),
                     std::move(*slot), std::move(call), context->peer(), request, response,
                     deadline, service_limits_.max_wait, bounded_by_bridge);
  waiting->Park();
  return waiting;
}

// The routed Store is destroyed before the lease is returned, as the router's contract says.
template <typename Check, typename Write>
grpc::Status DictService::WithWrite(const char* method, grpc::ServerContext* context,
                                    const std::string& dict,
                                    const google::protobuf::MessageLite* response, Check&& check,
                                    Write&& write) {
  return WithDict(registry_, *authorizer_, metrics_, context, method, dict, Access::kWrite,
                  response, [&](Dict& leased) -> CoreStatus {
                    CoreStatus checked = check();
                    if (!checked.ok()) return checked;
                    if (router_ == nullptr) return write(static_cast<Store&>(leased));
                    Result<std::unique_ptr<Store>> routed = router_->Route(leased);
                    if (!routed.ok()) return routed.status();
                    // A router that succeeds with no Store broke its contract (write_router.h).
                    if (*routed == nullptr) std::abort();
                    return write(**routed);
                  });
}

grpc::Status DictService::Set(grpc::ServerContext* context, const v1::SetRequest* request,
                              v1::WriteResponse* response) {
  Value value;
  return WithWrite(
      "Set", context, request->dict(), response,
      [&]() -> CoreStatus {
        CoreStatus key = CheckKey(request->key());
        if (!key.ok()) return key;
        CoreStatus decoded = DecodeValue(request->value(), &value, "value");
        if (!decoded.ok()) return decoded;
        CoreStatus checked = CheckValue(request->dict(), value, "value: ");
        if (!checked.ok()) return checked;
        return CheckKeyAndValue(request->key(), &value);
      },
      [&](Store& store) -> CoreStatus {
        Result<uint64_t> revision = store.Set(request->key(), value);
        if (!revision.ok()) return revision.status();
        response->set_revision(*revision);
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                                 v1::DeleteResponse* response) {
  return WithWrite(
      "Delete", context, request->dict(), response, [&] { return CheckKey(request->key()); },
      [&](Store& store) -> CoreStatus {
        Result<bool> existed = store.Erase(request->key());
        if (!existed.ok()) return existed.status();
        response->set_existed(*existed);
        response->set_revision(*existed ? store.last_commit_revision() : store.revision());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Pop(grpc::ServerContext* context, const v1::PopRequest* request,
                              v1::PopResponse* response) {
  return WithWrite(
      "Pop", context, request->dict(), response, [&] { return CheckKey(request->key()); },
      [&](Store& store) -> CoreStatus {
        Result<std::optional<Value>> popped = store.Pop(request->key());
        if (!popped.ok()) return popped.status();
        response->set_key(request->key());
        response->set_found(popped->has_value());
        if (popped->has_value()) {
          wire::ToProto(**popped, response->mutable_value());
          response->set_revision(store.last_commit_revision());
        } else {
          response->set_revision(store.revision());
        }
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::PopItem(grpc::ServerContext* context, const v1::PopItemRequest* request,
                                  v1::PopResponse* response) {
  return WithWrite(
      "PopItem", context, request->dict(), response, [] { return CoreStatus::Ok(); },
      [&](Store& store) -> CoreStatus {
        auto popped = store.PopItem();
        if (!popped.ok()) return popped.status();
        response->set_found(popped->has_value());
        if (popped->has_value()) {
          response->set_key((*popped)->first);
          wire::ToProto((*popped)->second, response->mutable_value());
          response->set_revision(store.last_commit_revision());
        } else {
          response->set_revision(store.revision());
        }
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::SetDefault(grpc::ServerContext* context,
                                     const v1::SetDefaultRequest* request,
                                     v1::SetDefaultResponse* response) {
  Value fallback;
  return WithWrite(
      "SetDefault", context, request->dict(), response,
      [&]() -> CoreStatus {
        CoreStatus key = CheckKey(request->key());
        if (!key.ok()) return key;
        CoreStatus decoded = DecodeValue(request->default_value(), &fallback, "default_value");
        if (!decoded.ok()) return decoded;
        CoreStatus checked = CheckValue(request->dict(), fallback, "default_value: ");
        if (!checked.ok()) return checked;
        return CheckKeyAndValue(request->key(), &fallback);
      },
      [&](Store& store) -> CoreStatus {
        Result<Value> value = store.SetDefault(request->key(), fallback);
        if (!value.ok()) return value.status();
        wire::ToProto(*value, response->mutable_value());
        response->set_revision(std::max(store.last_commit_revision(), store.revision()));
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Clear(grpc::ServerContext* context, const v1::ClearRequest* request,
                                v1::WriteResponse* response) {
  return WithWrite(
      "Clear", context, request->dict(), response, [] { return CoreStatus::Ok(); },
      [&](Store& store) -> CoreStatus {
        Result<uint64_t> revision = store.Clear();
        if (!revision.ok()) return revision.status();
        response->set_revision(*revision);
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Batch(grpc::ServerContext* context, const v1::BatchRequest* request,
                                v1::WriteResponse* response) {
  std::vector<Change> changes;
  return WithWrite(
      "Batch", context, request->dict(), response,
      [&]() -> CoreStatus {
        // The caps first, from the sizes alone: an oversized batch costs no decoding.
        CoreStatus bounded = CheckBatchBounds(*request, service_limits_);
        if (!bounded.ok()) return bounded;
        // Decode everything before writing anything: a bad mutation changes nothing.
        changes.resize(request->mutations_size());
        for (int i = 0; i < request->mutations_size(); ++i) {
          const v1::Mutation& mutation = request->mutations(i);
          Result<ChangeOp> op = wire::FromProto(mutation.op());
          if (!op.ok()) {
            return CoreStatus(op.status().code(),
                              "mutation " + std::to_string(i) + ": " + op.status().message());
          }
          changes[i].op = *op;
          changes[i].key = mutation.key();
          const std::string where = "mutation " + std::to_string(i) + ": ";
          if (*op != ChangeOp::kClear) {
            CoreStatus key = CheckKey(mutation.key(), where);
            if (!key.ok()) return key;
          }
          if (*op == ChangeOp::kSet) {
            CoreStatus decoded =
                DecodeValue(mutation.value(), &changes[i].value, "mutation " + std::to_string(i));
            if (decoded.ok()) decoded = CheckValue(request->dict(), changes[i].value, where);
            if (!decoded.ok()) return decoded;
          }
          CoreStatus sized = CheckKeyAndValue(
              changes[i].key, *op == ChangeOp::kSet ? &changes[i].value : nullptr, where);
          if (!sized.ok()) return sized;
        }
        return CoreStatus::Ok();
      },
      [&](Store& store) -> CoreStatus {
        Result<uint64_t> revision = store.Apply(changes);
        if (!revision.ok()) return revision.status();
        response->set_revision(*revision);
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::CompareAndSet(grpc::ServerContext* context,
                                        const v1::CompareAndSetRequest* request,
                                        v1::CompareAndSetResponse* response) {
  std::optional<Value> expected;
  std::optional<Value> desired;
  return WithWrite(
      "CompareAndSet", context, request->dict(), response,
      [&]() -> CoreStatus {
        CoreStatus key = CheckKey(request->key());
        if (!key.ok()) return key;
        if (request->has_expected()) {
          CoreStatus decoded = DecodeValue(request->expected(), &expected.emplace(), "expected");
          if (decoded.ok()) decoded = CheckValue(request->dict(), *expected, "expected: ");
          if (!decoded.ok()) return decoded;
        }
        if (request->has_desired()) {
          CoreStatus decoded = DecodeValue(request->desired(), &desired.emplace(), "desired");
          if (decoded.ok()) decoded = CheckValue(request->dict(), *desired, "desired: ");
          if (!decoded.ok()) return decoded;
        }
        return CheckKeyAndValue(request->key(), desired.has_value() ? &*desired : nullptr);
      },
      [&](Store& store) -> CoreStatus {
        Result<bool> swapped = store.CompareAndSet(request->key(), expected, desired);
        if (!swapped.ok()) return swapped.status();
        response->set_swapped(*swapped);
        response->set_revision(*swapped ? store.last_commit_revision() : store.revision());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::Increment(grpc::ServerContext* context,
                                    const v1::IncrementRequest* request,
                                    v1::IncrementResponse* response) {
  return WithWrite(
      "Increment", context, request->dict(), response,
      [&]() -> CoreStatus {
        CoreStatus key = CheckKey(request->key());
        if (!key.ok()) return key;
        return CheckKeyAndValue(request->key(), nullptr);
      },
      [&](Store& store) -> CoreStatus {
        Result<int64_t> value = store.Increment(request->key(), request->delta());
        if (!value.ok()) return value.status();
        response->set_value(*value);
        response->set_revision(store.last_commit_revision());
        return CoreStatus::Ok();
      });
}

grpc::Status DictService::List(grpc::ServerContext* context, const v1::ListRequest* request,
                               grpc::ServerWriter<v1::ListResponse>* writer) {
  return WithDict(
      registry_, *authorizer_, metrics_, context, "List", request->dict(), Access::kRead, nullptr,
      [&](Dict& dict) -> CoreStatus {
        // Clamped, not cast: a client's 2^31 must not turn negative (a message per entry).
        const size_t per_message = request->max_entries_per_message()
                                       ? request->max_entries_per_message()
                                       : kDefaultListEntriesPerMessage;
        v1::ListResponse message;
        size_t bytes = 0;
        size_t items = 0;
        bool client_gone = false;
        const auto flush = [&] {
          if (metrics_ != nullptr) metrics_->AddBytesSent(message.ByteSizeLong());
          client_gone = !writer->Write(message);
          message.Clear();
          bytes = 0;
          items = 0;
        };
        const uint64_t revision = dict.ForEach([&](std::string_view key, ValueView value) {
          if (client_gone) return;
          const bool too_large =
              key.size() + value.data.size() + kPerEntryOverhead > limits_.max_message_bytes;
          const size_t size = key.size() + kPerEntryOverhead + (too_large ? 0 : value.data.size());
          // Sent before it would outgrow a batch: a message stays under the wire's limit.
          if (items > 0 && bytes + size > limits_.batch_bytes) flush();
          if (client_gone) return;
          if (too_large) {
            // A marker, as Watch sends: the listing goes on, the client learns the key and size.
            v1::Change* marker = message.add_too_large();
            marker->set_op(v1::OP_SET);
            marker->set_key(key.data(), key.size());
            marker->set_value_too_large(true);
            marker->set_value_size(value.data.size());
            marker->set_value_type(static_cast<uint32_t>(value.type));
          } else {
            v1::Entry* entry = message.add_entries();
            entry->set_key(key.data(), key.size());
            wire::ToProto(value, entry->mutable_value());
          }
          bytes += size;
          if (++items >= per_message) flush();
        });
        if (client_gone) return CoreStatus(StatusCode::kCancelled, "the client went away");
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
    spdlog::info("Status failed dict={} peer={}: {}", LogText(request->dict()),
                 LogText(context->peer()), LoggedStatus(status.status().ToString()));
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
  // Only what a call could open: on the allow-list, readable and writable by the bridge (a dict of
  // another user, or of another layout version, would answer every call with an error).
  for (const std::string& name : *names) {
    if (authorizer_->DictAllowed(name) && Dict::MayAttach(name) && catalog_.Inspect(name).ok()) {
      response->add_dicts(name);
    }
  }
  return call.Finish(grpc::Status::OK, response->ByteSizeLong());
}

grpc::Status DictService::CheckCreation(grpc::ServerContext* context, const char* method,
                                        const std::string& dict) const {
  grpc::Status allowed = authorizer_->Check(*context, dict, Access::kWrite);
  if (allowed.ok() && !creation_.allowed) {
    allowed = grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                           "dict " + QuoteForMessage(dict) +
                               ": this bridge does not create or unlink dicts " +
                               "(start it with --allow-create)");
  }
  if (!allowed.ok()) {
    spdlog::info("{} refused dict={} peer={}: {}", method, LogText(dict), LogText(context->peer()),
                 LoggedStatus(allowed.error_message()));
  }
  return allowed;
}

grpc::Status DictService::Create(grpc::ServerContext* context, const v1::CreateRequest* request,
                                 v1::CreateResponse* response) {
  Metrics::Call call(metrics_, "Create");
  grpc::Status allowed = CheckCreation(context, "Create", request->dict());
  if (!allowed.ok()) return call.Finish(allowed, 0);
  const auto refuse = [&](StatusCode code, const std::string& message) {
    spdlog::info("Create refused dict={} peer={}: {}", LogText(request->dict()),
                 LogText(context->peer()), LoggedStatus(message));
    return call.Finish(wire::ToGrpc(CoreStatus(code, message)), 0);
  };
  Options options;
  options.name = request->dict();
  if (options.name.empty()) return refuse(StatusCode::kInvalidArgument, "Create needs a dict name");
  // '@' belongs to the names of a dict's own segments and of nested children, which only the
  // engine makes; the core refuses it too, this message says why.
  if (options.name.find('@') != std::string::npos) {
    return refuse(StatusCode::kInvalidArgument,
                  "dict " + QuoteForMessage(options.name) +
                      ": '@' is reserved for a dict's internal segments and nested children; "
                      "Create takes a top-level name");
  }
  if (request->buffer_size() > service_limits_.max_create_bytes) {
    return refuse(StatusCode::kResourceExhausted,
                  "dict " + QuoteForMessage(options.name) + ": a log of " +
                      std::to_string(request->buffer_size()) +
                      " bytes is larger than this bridge creates (--max-create-bytes " +
                      std::to_string(service_limits_.max_create_bytes) + ")");
  }
  options.create_mode =
      request->exclusive() ? CreateMode::kMustCreate : CreateMode::kAttachOrCreate;
  if (request->buffer_size() != 0) options.buffer_size = request->buffer_size();
  options.mode = creation_.mode;
  options.auto_unlink = false;  // the dict outlives this call, as `shmdict create` makes it
  Result<Dict> dict = Dict::Open(options);
  if (!dict.ok()) {
    spdlog::info("Create failed dict={} peer={}: {}", LogText(request->dict()),
                 LogText(context->peer()), LoggedStatus(dict.status().ToString()));
    return call.Finish(Fail(dict.status(), request->dict()), 0);
  }
  response->set_dict(dict->name());
  response->set_created(dict->created());
  response->set_revision(dict->revision());
  spdlog::info("Create dict={} created={} peer={}", LogText(request->dict()), dict->created(),
               LogText(context->peer()));
  return call.Finish(grpc::Status::OK, response->ByteSizeLong());
}

grpc::Status DictService::Unlink(grpc::ServerContext* context, const v1::UnlinkRequest* request,
                                 v1::UnlinkResponse*) {
  Metrics::Call call(metrics_, "Unlink");
  grpc::Status allowed = CheckCreation(context, "Unlink", request->dict());
  if (!allowed.ok()) return call.Finish(allowed, 0);
  // The name was validated by the check above: a dict's internal segment ("NAME@s1", whose unlink
  // would break the dict) never gets here.
  const CoreStatus unlinked = Dict::UnlinkByName(request->dict());
  if (!unlinked.ok()) {
    spdlog::info("Unlink failed dict={} peer={}: {}", LogText(request->dict()),
                 LogText(context->peer()), LoggedStatus(unlinked.ToString()));
    return call.Finish(Fail(unlinked, request->dict()), 0);
  }
  spdlog::info("Unlink dict={} peer={}", LogText(request->dict()), LogText(context->peer()));
  return call.Finish(grpc::Status::OK, 0);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* DictService::Watch(
    grpc::CallbackServerContext* context) {
  return new WatchStream(registry_, limits_, authorizer_, metrics_, *context, waiting_);
}

}  // namespace shmdict::bridge
