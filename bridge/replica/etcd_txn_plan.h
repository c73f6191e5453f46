// The etcd transaction that applies a shmdict batch (Store::Apply's changes, in order, possibly
// with kClear) to the keys under a replica's prefix, as one etcd revision.
//
// etcd (3.4, checkIntervals) refuses a txn that puts one key twice or puts a key one of its
// DeleteRanges covers, so the batch is first folded to the last operation per key, and a clear
// becomes deletes of the keys that exist and are not set after it, never a DeleteRange over the
// prefix. Those keys must be listed first (Range(prefix, keys_only) at revision Rr); the txn then
// succeeds only if no key under the prefix was modified since (compare MOD < Rr + 1 over the
// prefix's range), and the caller lists again and replans when it fails.
//
// Thread-safety: pure function. Lifetime: the request owns its bytes.
#ifndef SHMDICT_BRIDGE_REPLICA_ETCD_TXN_PLAN_H_
#define SHMDICT_BRIDGE_REPLICA_ETCD_TXN_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "etcd/etcdserverpb/rpc.pb.h"
#include "shmdict/status.h"
#include "shmdict/store.h"

namespace shmdict::replica {

// etcd's default --max-txn-ops.
inline constexpr size_t kDefaultEtcdMaxTxnOps = 128;

struct TxnPlanOptions {
  std::string prefix;                          // the replica's etcd key prefix
  size_t max_txn_ops = kDefaultEtcdMaxTxnOps;  // --etcd-max-txn-ops
  bool allow_pickle = false;                   // --allow-pickle (value_codec.h)
};

// What a batch with a clear needs: the etcd keys under the prefix (as Range(prefix, keys_only)
// returned them, skipped ones included: a clear removes them too) and that Range's
// header.revision.
struct ClearListing {
  std::vector<std::string> etcd_keys;
  int64_t revision = 0;
};

// Whether `changes` holds a kClear (then PlanBatchTxn needs a ClearListing).
bool HasClear(const std::vector<Change>& changes);

// The TxnRequest for `changes`: in `success`, one op per key (a Put of its last value, or a
// DeleteRange of the key), keys in the order they were first written after the last clear, the
// deletes a clear implies first; no compare, unless there is a clear (see above). `listing` must
// be non-null when HasClear(changes) (aborts otherwise: the caller's bug) and is ignored when not.
// Errors (no request): RESOURCE_EXHAUSTED when the txn would hold more than max_txn_ops ops,
// naming --etcd-max-txn-ops; INVALID_ARGUMENT for an empty key (its etcd key would be the prefix
// itself, which replicas skip); EncodeValue's errors for a value, prefixed with its key.
Result<etcdserverpb::TxnRequest> PlanBatchTxn(const std::vector<Change>& changes,
                                              const ClearListing* listing,
                                              const TxnPlanOptions& options);

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_ETCD_TXN_PLAN_H_
