// WriteRouter: where the bridge's write calls go. A plain bridge writes into the dict it serves
// (its leased local Dict); a process that serves a dict kept elsewhere (shmdict-replica, whose
// local dict is a replica that refuses local writes) hands BridgeConfig a router, and every write
// call of DictService then runs against the Store the router returns for that call (one that
// writes upstream and returns once the write is applied locally). Reads, Watch, List and Status
// always read the local dict: only writes are routed.
//
// What the service does before it asks the router: the token and allow-list check, the lease of
// the local dict (so a dict that does not exist here is NOT_FOUND as on any bridge), and every
// check of the request (key sizes, value encodings, pickles, nested references, --max-value-bytes,
// Batch caps). A request refused by those never reaches the router.
//
// Thread-safety: Route is called concurrently, from gRPC's synchronous thread pool (one thread
// per write call), and may block there (a round trip upstream, a wait for the local apply);
// implementations must be thread-safe. The Store it returns is used by that one call's thread only.
//
// Lifetime: the router is not owned by the bridge; it must outlive the BridgeServer (and its
// DictService) it was given to. The returned Store is destroyed when the call ends, before the
// lease of `dict` is returned: it may refer to `dict` but must not keep it.
#ifndef SHMDICT_BRIDGE_WRITE_ROUTER_H_
#define SHMDICT_BRIDGE_WRITE_ROUTER_H_

#include <memory>

#include "shmdict/dict.h"
#include "shmdict/status.h"
#include "shmdict/store.h"

namespace shmdict::bridge {

class WriteRouter {
 public:
  virtual ~WriteRouter() = default;

  // The Store that carries one write call for `dict` (the bridge's leased local handle of the
  // dict the call names). The service runs the call's Store methods on it (one per call, except
  // that a write reads revision() or last_commit_revision() for its answer), so the revision a
  // client is told is that Store's: its last_commit_revision() after a write that committed, its
  // revision() after one that changed nothing.
  //
  // An error ends the call with that status: its code reaches the client unchanged and its
  // message too (prefixed with "dict 'NAME': " unless it already names the dict, as every bridge
  // error). Nothing has been written when Route fails. Errors of the returned Store's methods reach
  // the client the same way.
  virtual Result<std::unique_ptr<Store>> Route(Dict& dict) = 0;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_WRITE_ROUTER_H_
