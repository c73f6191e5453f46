// Catalog: the dicts of one host, whatever the transport -- list, inspect, create, unlink, check
// health, and open one as a Store. LocalCatalog (local_catalog.h) is this host's shared memory;
// RemoteCatalog (clients/cpp, remote_catalog.h) is another host's, through its shmdict-bridge.
// Code written against Catalog and Store (the CLI is) runs the same in a process that maps
// /dev/shm and in a container that only reaches a bridge.
//
// Names across the layers (the frozen shmdict.v1 wire keeps its own; docs/API.md has the table):
//   Catalog::ListNames = rpc ListDicts = shmdict.list_names() = `shmdict ls`
//   Catalog::Inspect   = rpc Status    = shmdict.inspect(name) = `shmdict status`
//   Catalog::Create    = rpc Create    = `shmdict create`;   Catalog::Unlink = rpc Unlink
//
// Thread-safety: implementations are thread-safe (a LocalCatalog holds no state of its own; a
// RemoteCatalog shares one channel). Lifetime: a Store from OpenStore may outlive its catalog.
//
// Errors common to every call: kInvalidArgument (a bad name), kUnavailable and kDeadlineExceeded
// (a remote catalog could not reach its bridge), kPermissionDenied (a bridge refused the caller);
// each message names the dict and the fix.
#ifndef SHMDICT_CATALOG_H_
#define SHMDICT_CATALOG_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmdict/dict_status.h"
#include "shmdict/status.h"
#include "shmdict/store.h"

namespace shmdict {

struct CreateOptions {
  // kAlreadyExists if the dict exists (otherwise an existing dict is found, not changed).
  bool exclusive = false;
  // Bytes of the change log; 0: the core's default.
  uint64_t buffer_size = 0;
  // The segments' file mode; nullopt: 0600 locally, the bridge's --create-mode remotely. A remote
  // catalog refuses a mode (kInvalidArgument): a client must not widen who maps the host's memory.
  std::optional<mode_t> mode;
};

class Catalog {
 public:
  virtual ~Catalog() = default;

  // Where the dicts live, for messages: "this host", "the bridge at unix:/run/shmdict.sock".
  virtual std::string Where() const = 0;

  // The names of the dicts, sorted. Nested children are not listed.
  virtual Result<std::vector<std::string>> ListNames() = 0;
  // A dict's status without opening a Store on it. kNotFound if it does not exist; kDataLoss or
  // kFailedPrecondition for a segment that is damaged or of another layout version.
  virtual Result<DictStatus> Inspect(std::string_view name) = 0;
  // Creates the dict, or finds it: true if this call created it. A remote catalog needs a bridge
  // started with --allow-create (kPermissionDenied otherwise).
  virtual Result<bool> Create(std::string_view name, const CreateOptions& options) = 0;
  // Removes the dict's names (processes that have it open keep using it). kNotFound if missing.
  virtual Status Unlink(std::string_view name) = 0;
  // Whether `name` can be served ("": the catalog itself): true when SERVING. kNotFound when the
  // catalog does not know the dict.
  virtual Result<bool> CheckHealth(std::string_view name) = 0;
  // Opens an existing dict (never creates one): kNotFound, with a message that says how to
  // create it in this catalog.
  virtual Result<std::unique_ptr<Store>> OpenStore(std::string_view name) = 0;
};

}  // namespace shmdict

#endif  // SHMDICT_CATALOG_H_
