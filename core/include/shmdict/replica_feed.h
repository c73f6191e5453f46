// ReplicaFeed: the one writer of a replica dict -- a local dict that is a copy of a dict kept
// elsewhere (an etcd key prefix, or another host's dict through its bridge). shmdict-replica
// (bridge/replica) owns one per replica dict; nothing else should use it.
//
// What it adds to a Dict, all in the main segment's header (docs/LAYOUT.md, "Replica block"):
//   - a marker: once adopted, the dict is a replica and every write through the core (Dict::Set
//     and friends, in any process, including a plain shmdict-bridge) is refused with
//     FAILED_PRECONDITION naming the upstream and the replica's --listen address. Reads, Watch,
//     WaitForChange and attaching are unchanged.
//   - the upstream revision applied, committed atomically with the data it produced: a feed
//     SIGKILLed at any instant resumes from exactly the upstream revision of the last local
//     commit (no gap, no duplicate).
//   - its upstream's description, listen address, connection state and last contact, which
//     Dict::GetStatus / `shmdict status` report (DictStatus::replica_of and the fields after it).
//
// Thread-safety: one ReplicaFeed is used by one thread at a time (the replica's feed thread);
// SetContact may be called from any thread. Lifetime: holds its own reference to the dict's
// shared state; the Dict passed to Adopt may be closed afterwards. Destroying the feed leaves
// the dict a replica (writes stay refused) whose feed is gone: status reports
// upstream_connected = false, and the next Adopt takes it over.
#ifndef SHMDICT_REPLICA_FEED_H_
#define SHMDICT_REPLICA_FEED_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shmdict/dict.h"
#include "shmdict/status.h"
#include "shmdict/store.h"

namespace shmdict {

// Who the replica copies. `description` is shown to users and compared on adoption; at most
// kMaxUpstreamBytes bytes, printable ASCII.
struct ReplicaMarker {
  static constexpr size_t kMaxUpstreamBytes = 639;
  // "etcd:http://h1:2379,http://h2:2379 prefix=/app/" or "bridge:unix:/run/shmdict.sock
  // dict=orders"
  std::string description;
};

// Where a feed resumes.
struct ReplicaResumePoint {
  // The upstream revision whose data the dict holds; 0 when nothing was applied from this
  // upstream yet (a fresh dict, a dict that was not a replica, or one of another upstream): the
  // feed must list the upstream and replace the contents first.
  uint64_t upstream_revision = 0;
  // Recorded by SetUpstreamIdentity (an etcd cluster id, a primary's incarnation); 0: none.
  uint64_t upstream_identity = 0;
  uint64_t local_revision = 0;  // the dict's revision at adoption
};

class ReplicaFeed {
 public:
  // Marks `dict` as a replica of `marker` and makes this feed its only writer.
  // Errors: INVALID_ARGUMENT (description too long or not printable); ALREADY_EXISTS (another
  // live feed, in any process, owns the dict: its pid in the message); the dict's own errors.
  // A feed whose process died is taken over. A different description than the one recorded
  // resets upstream_revision to 0 (the caller must list and replace).
  static Result<ReplicaFeed> Adopt(Dict& dict, const ReplicaMarker& marker,
                                   ReplicaResumePoint* resume_point);

  ReplicaFeed(ReplicaFeed&&) noexcept;
  ReplicaFeed& operator=(ReplicaFeed&&) noexcept;
  ~ReplicaFeed();

  // Commits `changes` (any of kSet, kErase, kClear; may be empty) as one local revision together
  // with `upstream_revision`, and returns that local revision (or the current one when `changes`
  // is empty: then only the upstream revision is recorded). `upstream_revision` must be >= the
  // one recorded: FAILED_PRECONDITION otherwise, nothing changed. Values are validated as for
  // Dict::Apply (INVALID_ARGUMENT, nothing changed). Waits for the writer lock without a limit
  // other than the dict's lock timeout (DEADLINE_EXCEEDED).
  Result<uint64_t> Apply(const std::vector<Change>& changes, uint64_t upstream_revision);

  // The upstream revision applied (as Apply records it).
  uint64_t upstream_revision() const;

  Status SetUpstreamIdentity(uint64_t identity);
  // The first --listen address as bound ("127.0.0.1:7400", "unix:/run/r.sock"); empty: none.
  // At most 255 bytes, printable ASCII (INVALID_ARGUMENT).
  Status SetListen(std::string_view address);
  // Whether the upstream is connected now; also stamps the last contact time (now) when true.
  void SetContact(bool connected);

  class Impl;  // internal

 private:
  explicit ReplicaFeed(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmdict

#endif  // SHMDICT_REPLICA_FEED_H_
