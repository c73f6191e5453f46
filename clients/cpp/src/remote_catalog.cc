#include "shmdict/remote_catalog.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <future>
#include <utility>

#include "remote_watcher.h"
#include "shmdict/v1/wire.h"

namespace shmdict {

using client::Connection;

RemoteCatalog::RemoteCatalog(RemoteOptions options) : options_(std::move(options)) {}

RemoteCatalog::~RemoteCatalog() = default;

std::string RemoteCatalog::Where() const { return "the bridge at " + options_.address; }

Result<std::shared_ptr<Connection>> RemoteCatalog::ConnectionFor(std::string_view dict) {
  if (options_.address.empty()) {
    return Status(StatusCode::kInvalidArgument, "a remote catalog needs a bridge address");
  }
  std::shared_ptr<grpc::Channel> channel;
  {
    std::lock_guard lock(mu_);
    if (!channel_) {
      Result<std::shared_ptr<grpc::Channel>> opened = client::OpenChannel(options_);
      if (!opened.ok()) return opened.status();
      channel_ = std::move(*opened);
    }
    channel = channel_;
  }
  RemoteOptions about = options_;
  about.dict = dict.empty() ? "*" : std::string(dict);
  std::shared_ptr<Connection> connection = client::ConnectionOver(std::move(channel), about);
  if (dict.empty()) connection->description = "bridge " + options_.address;
  return connection;
}

namespace {

// One unary call on `connection`; `call(stub, context, response)` issues it.
template <typename Response, typename Call>
Result<Response> Unary(const Connection& connection, Call&& call) {
  Response response;
  grpc::ClientContext context;
  connection.Prepare(&context, connection.options.call_timeout);
  grpc::Status status = call(*connection.stub, &context, &response);
  if (!status.ok()) return connection.Describe(status);
  return response;
}

// The bridge answers NOT_FOUND in its own host's words ("shmdict create NAME" there); say where
// the dict is missing, and how a client creates one, in the words of the caller's side.
Status NotFoundOnBridgeHost(std::string_view name, const std::string& address, Status status,
                            bool say_how_to_create) {
  if (status.code() != StatusCode::kNotFound) return status;
  std::string message =
      "dict '" + std::string(name) + "' does not exist on the host of the bridge at " + address;
  if (say_how_to_create) {
    message +=
        " (create it there, or with `shmdict --remote ADDR create` on a bridge with "
        "--allow-create)";
  }
  return Status(StatusCode::kNotFound, std::move(message));
}

}  // namespace

Result<std::vector<std::string>> RemoteCatalog::ListNames() {
  auto connection = ConnectionFor("");
  if (!connection.ok()) return connection.status();
  auto response = Unary<v1::ListDictsResponse>(
      **connection, [](v1::Dict::Stub& stub, grpc::ClientContext* context, auto* out) {
        return stub.ListDicts(context, v1::ListDictsRequest(), out);
      });
  if (!response.ok()) return response.status();
  return std::vector<std::string>(response->dicts().begin(), response->dicts().end());
}

Result<DictStatus> RemoteCatalog::Inspect(std::string_view name) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "Inspect needs a dict name");
  auto connection = ConnectionFor(name);
  if (!connection.ok()) return connection.status();
  v1::StatusRequest request;
  request.set_dict(std::string(name));
  auto response = Unary<v1::StatusResponse>(
      **connection, [&](v1::Dict::Stub& stub, grpc::ClientContext* context, auto* out) {
        return stub.Status(context, request, out);
      });
  if (!response.ok()) {
    return NotFoundOnBridgeHost(name, options_.address, response.status(), true);
  }
  DictStatus status = wire::FromProto(*response);
  status.bridge = options_.address;
  return status;
}

Result<bool> RemoteCatalog::Create(std::string_view name, const CreateOptions& options) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "Create needs a dict name");
  if (options.mode) {
    return Status(StatusCode::kInvalidArgument,
                  "dict '" + std::string(name) +
                      "': a file mode applies to local dicts only: a bridge creates dicts with "
                      "its own --create-mode");
  }
  auto connection = ConnectionFor(name);
  if (!connection.ok()) return connection.status();
  v1::CreateRequest request;
  request.set_dict(std::string(name));
  request.set_exclusive(options.exclusive);
  request.set_buffer_size(options.buffer_size);
  auto response = Unary<v1::CreateResponse>(
      **connection, [&](v1::Dict::Stub& stub, grpc::ClientContext* context, auto* out) {
        return stub.Create(context, request, out);
      });
  if (!response.ok()) return response.status();
  return response->created();
}

Status RemoteCatalog::Unlink(std::string_view name) {
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "Unlink needs a dict name");
  auto connection = ConnectionFor(name);
  if (!connection.ok()) return connection.status();
  v1::UnlinkRequest request;
  request.set_dict(std::string(name));
  return Unary<v1::UnlinkResponse>(**connection,
                                   [&](v1::Dict::Stub& stub, grpc::ClientContext* context,
                                       auto* out) { return stub.Unlink(context, request, out); })
      .status();
}

Result<bool> RemoteCatalog::CheckHealth(std::string_view name) {
  if (name.empty()) return CheckHealthOfService("");
  return CheckHealthOfService("shmdict.v1.Dict/" + std::string(name));
}

Result<bool> RemoteCatalog::CheckHealthOfService(std::string_view service) {
  auto connected = ConnectionFor("");
  if (!connected.ok()) return connected.status();
  const Connection& connection = **connected;
  // HealthCheckRequest{string service = 1}, encoded by hand: no generated health stubs needed.
  std::string request = "\x0a";
  for (size_t n = service.size();; n >>= 7) {  // the length as a varint
    request.push_back(static_cast<char>((n & 0x7F) | (n > 0x7F ? 0x80 : 0)));
    if (n <= 0x7F) break;
  }
  request += service;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext context;
  connection.Prepare(&context, options_.call_timeout);
  grpc::GenericStub stub(connection.channel);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&done](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return Status(StatusCode::kUnavailable, connection.description + ": no answer within " +
                                                std::to_string(options_.call_timeout.count()) +
                                                " ms");
  }
  if (!status.ok()) return connection.Describe(status);
  // HealthCheckResponse{ServingStatus status = 1}: SERVING is 1; absent means UNKNOWN (0).
  std::vector<grpc::Slice> slices;
  if (!response_buffer.Dump(&slices).ok()) {
    return Status(StatusCode::kInternal, connection.description + ": unreadable health answer");
  }
  std::string response;
  for (const grpc::Slice& s : slices) {
    response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return response.size() == 2 && response[0] == 0x08 && response[1] == 1;
}

Result<std::unique_ptr<Store>> RemoteCatalog::OpenStore(std::string_view name) {
  RemoteOptions options = options_;
  options.dict = std::string(name);
  Result<std::unique_ptr<RemoteDict>> remote = RemoteDict::Open(options);
  if (!remote.ok()) {
    if (remote.status().code() == StatusCode::kNotFound) {
      return Status(StatusCode::kNotFound,
                    "dict '" + std::string(name) +
                        "' does not exist on the host of the bridge at " + options_.address +
                        " (create it there, or with `shmdict --remote ADDR create` on a bridge "
                        "with --allow-create)");
    }
    return remote.status();
  }
  return std::unique_ptr<Store>(std::move(*remote));
}

}  // namespace shmdict
