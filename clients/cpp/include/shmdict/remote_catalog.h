// RemoteCatalog: the dicts on a bridge's host, as a Catalog (catalog.h), through shmdict-bridge.
//
//   shmdict::RemoteCatalog host({.address = "unix:/run/shmdict/bridge.sock"});
//   auto names = host.ListNames();              // rpc ListDicts
//   auto status = host.Inspect("orders");       // rpc Status; status->bridge is the address
//   auto store = host.OpenStore("orders");      // a RemoteDict (options.mirror applies)
//
// The status a bridge reports fills every DictStatus field but lock_holder_in_this_pid_namespace
// (about the caller's namespace); a bridge older than shmdict.v1.2 only the plain ones.
//
// Thread-safety: thread-safe. All calls share one channel, opened by the first call. Lifetime:
// Stores it opens have channels of their own and may outlive it.
//
// Errors: as Catalog's; kUnavailable when no bridge answers within options.call_timeout (never
// "missing"); kPermissionDenied from a bridge without --allow-create (Create, Unlink) or for a
// token without access; kUnimplemented from a bridge older than shmdict.v1.1 (Create, Unlink);
// kInvalidArgument for an empty address, unreadable TLS files, or a CreateOptions::mode.
#ifndef SHMDICT_REMOTE_CATALOG_H_
#define SHMDICT_REMOTE_CATALOG_H_

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "shmdict/catalog.h"
#include "shmdict/remote_dict.h"

namespace grpc {
class Channel;
}  // namespace grpc

namespace shmdict {
namespace client {
struct Connection;
}  // namespace client

class RemoteCatalog final : public Catalog {
 public:
  // options.address, token and TLS settings reach the bridge; options.dict is ignored;
  // options.mirror and the timeouts apply to the RemoteDicts OpenStore returns.
  explicit RemoteCatalog(RemoteOptions options);
  ~RemoteCatalog() override;

  std::string Where() const override;
  Result<std::vector<std::string>> ListNames() override;
  Result<DictStatus> Inspect(std::string_view name) override;
  Result<bool> Create(std::string_view name, const CreateOptions& options) override;
  Status Unlink(std::string_view name) override;
  // grpc.health.v1.Health/Check of "" (the bridge) or "shmdict.v1.Dict/NAME" at options.address
  // (a bridge's --listen or --health-listen): true when SERVING, false for NOT_SERVING or UNKNOWN.
  // kNotFound when the bridge does not know the service.
  Result<bool> CheckHealth(std::string_view name) override;
  Result<std::unique_ptr<Store>> OpenStore(std::string_view name) override;

  // CheckHealth of a raw gRPC health service name (the bridge's health service also answers
  // "shmdict.v1.Dict", for example).
  Result<bool> CheckHealthOfService(std::string_view service);

 private:
  // A connection about `dict` ("": the bridge itself) over the shared channel, opened on first
  // use. kInvalidArgument for an empty address or unreadable TLS files.
  Result<std::shared_ptr<client::Connection>> ConnectionFor(std::string_view dict);

  const RemoteOptions options_;
  std::mutex mu_;
  std::shared_ptr<grpc::Channel> channel_;  // guarded by mu_
};

}  // namespace shmdict

#endif  // SHMDICT_REMOTE_CATALOG_H_
