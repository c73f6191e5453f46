// Which etcd keys a replica of an etcd prefix holds, and how they map to local keys: the etcd key
// is the prefix followed by the local key's bytes.
//
// Thread-safety: pure functions. Lifetime: a returned string_view points into the etcd key
// passed in.
#ifndef SHMDICT_BRIDGE_REPLICA_KEY_RANGE_H_
#define SHMDICT_BRIDGE_REPLICA_KEY_RANGE_H_

#include <optional>
#include <string>
#include <string_view>

namespace shmdict::replica {

// The range_end that makes [prefix, range_end) every key starting with `prefix` (etcd's "prefix
// end", clientv3.GetPrefixRangeEnd): the prefix cut after its last byte that is not 0xFF, that
// byte plus one. A prefix of only 0xFF bytes, or an empty one, has no such end: "\0", which etcd
// reads as "every key >= key".
std::string PrefixRangeEnd(std::string_view prefix);

// The key that starts the range of every key under `prefix`: the prefix itself, or "\0" when it
// is empty (etcd refuses an empty key in a request; no etcd key is empty, so nothing is missed).
std::string PrefixRangeKey(std::string_view prefix);

// The local key of `etcd_key` under `prefix`; nullopt for a key the replica cannot hold and
// skips: one not under the prefix, the key equal to the prefix (its local key would be empty,
// which the core refuses), and one whose local key is longer than the core's limit
// (kMaxKeyBytes).
std::optional<std::string_view> LocalKeyOf(std::string_view etcd_key, std::string_view prefix);

// The etcd key of `local_key`: prefix + local_key.
std::string EtcdKeyOf(std::string_view local_key, std::string_view prefix);

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_KEY_RANGE_H_
