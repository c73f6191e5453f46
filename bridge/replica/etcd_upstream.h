// EtcdUpstream: a replica's upstream that is a key prefix of an etcd v3 cluster (Debian's
// etcd-server 3.4), reached through etcd's gRPC API (proto/etcd). The cluster is the source of
// truth; every host's replica caches one prefix. docs/REPLICA.md gives the value encoding, the key
// mapping and the consistency model; the etcd behaviour relied on is cited where it is used.
//
// Failover: one channel per endpoint, tried in the given order starting with the last one that
// worked; a call or stream that fails with UNAVAILABLE, DEADLINE_EXCEEDED or "no leader" moves on
// to the next endpoint.
//
// Thread-safety: thread-safe (the feed thread follows while pool threads write).
#ifndef SHMDICT_BRIDGE_REPLICA_ETCD_UPSTREAM_H_
#define SHMDICT_BRIDGE_REPLICA_ETCD_UPSTREAM_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "upstream.h"

namespace shmdict::replica {

struct EtcdOptions {
  // HOST:PORT of each member's client URL (plaintext unless tls_ca is set).
  std::vector<std::string> endpoints;
  // The key prefix this replica copies; a local key K is the etcd key prefix + K.
  std::string prefix;
  // TLS to etcd (PEM files): any set makes the channels TLS.
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // etcd's authentication (--etcd-user, --etcd-password-file); empty user: none.
  std::string user;
  std::string password;
  // The cluster's --max-txn-ops: a Batch with more operations is RESOURCE_EXHAUSTED.
  size_t max_txn_ops = 128;
  // Keys per Range page while listing (halved while a page is too large for a message). Large:
  // etcd 3.4 walks the rest of the range for every page to count it, so 10,000-key pages made a
  // 1M-key listing 2.3x slower than one etcdctl get (docs/bench/replica.md).
  int64_t list_page_size = 200000;
  // Deadline of each unary call.
  std::chrono::milliseconds call_timeout{10000};
  // Accept values tagged pickle (8) in writes and decode them as such (see the bridge's flag).
  bool allow_pickle = false;
};

// Errors: kInvalidArgument (no endpoint, an empty prefix is allowed; a TLS file unreadable).
Result<std::unique_ptr<Upstream>> MakeEtcdUpstream(const EtcdOptions& options);

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_ETCD_UPSTREAM_H_
