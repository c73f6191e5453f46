// BridgeUpstream: a replica's upstream that is another host's dict, reached through that host's
// shmdict-bridge (RemoteDict, clients/cpp). The primary stays the source of truth; the replica
// host's processes read its copy through shared memory instead of one stream each.
//
// Thread-safety: thread-safe.
#ifndef SHMDICT_BRIDGE_REPLICA_BRIDGE_UPSTREAM_H_
#define SHMDICT_BRIDGE_REPLICA_BRIDGE_UPSTREAM_H_

#include <memory>

#include "shmdict/remote_dict.h"
#include "upstream.h"

namespace shmdict::replica {

// `options.address` and `options.dict` name the primary; `mirror` is ignored (the replica is the
// mirror). Errors: kInvalidArgument (empty address or dict, an upstream description too long).
// The primary's nested-dict references, and its pickles unless `allow_pickle`, arrive as bytes.
Result<std::unique_ptr<Upstream>> MakeBridgeUpstream(const RemoteOptions& options,
                                                     bool allow_pickle);

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_BRIDGE_UPSTREAM_H_
