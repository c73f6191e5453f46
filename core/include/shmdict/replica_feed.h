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
// Liveness: the feed writes through a Dict handle of its own, and the dict records that handle's
// writer-lock token as its owner. The token's liveness lock (the one the writer lock uses to find
// a dead holder: an open-file-description lock the kernel drops with the process, in any pid
// namespace) tells whether the feed lives, so a SIGKILLed feed is never reported connected and
// its dict is taken over by the next Adopt.
//
// Thread-safety: one ReplicaFeed is used by one thread at a time (the replica's feed thread);
// SetContact may be called from any thread meanwhile. Lifetime: holds its own handle of the dict;
// the Dict passed to Adopt may be closed afterwards (if it created the dict with auto_unlink, the
// dict is unlinked then, as always). Destroying the feed leaves the dict a replica (writes stay
// refused) whose feed is gone: status reports upstream_connected = false, and the next Adopt
// takes it over. A feed used in a child made by fork() is not the owner (its writes fail).
#ifndef SHMDICT_REPLICA_FEED_H_
#define SHMDICT_REPLICA_FEED_H_

#include <cstdint>
#include <functional>
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
  // "etcd:10.0.0.5:2379,10.0.0.6:2379 prefix=/app/" or "bridge:unix:/run/shmdict.sock
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
  // Marks `dict` (an open handle) as a replica of `marker` and makes this feed its only writer;
  // fills *resume_point (may be null). Takes the writer lock once.
  // Errors: INVALID_ARGUMENT (description too long or not printable); ALREADY_EXISTS (another
  // live feed, in any process, owns the dict: its pid in the message); ABORTED (the dict was
  // unlinked and created again meanwhile: retry); the dict's own errors (DEADLINE_EXCEEDED for
  // the writer lock, ...). Nothing changes on an error.
  // A feed whose process died (or that was destroyed) is taken over. A different description
  // than the one recorded resets upstream_revision and upstream_identity to 0 (the caller must
  // list and replace). The listen address is cleared and upstream_connected set to false.
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
  // other than the dict's lock timeout (DEADLINE_EXCEEDED). FAILED_PRECONDITION too when another
  // Adopt took the dict over (this feed was judged dead): nothing changed. A feed killed at any
  // instant of Apply leaves the dict at a local revision whose upstream revision the next Adopt
  // returns exactly (docs/LAYOUT.md, "The resume rule").
  Result<uint64_t> Apply(const std::vector<Change>& changes, uint64_t upstream_revision);
  // As Apply, for the replacement that follows a restarted upstream history (an etcd cluster
  // created again, a primary dict unlinked and created again: its revisions start over), so
  // `upstream_revision` may be below the one recorded. Only after listing the whole upstream.
  Result<uint64_t> ApplyRestartedHistory(const std::vector<Change>& changes,
                                         uint64_t upstream_revision);

  // The upstream revision applied (as Apply records it).
  uint64_t upstream_revision() const;

  // Records the upstream's identity (an etcd cluster id, a primary's incarnation), which the
  // next Adopt returns. Errors: FAILED_PRECONDITION (taken over); the writer lock's.
  Status SetUpstreamIdentity(uint64_t identity);
  // The first --listen address as bound ("127.0.0.1:7400", "unix:/run/r.sock"); empty: none.
  // Refused writes name it. At most 255 bytes, printable ASCII (INVALID_ARGUMENT);
  // FAILED_PRECONDITION (taken over); the writer lock's errors.
  Status SetListen(std::string_view address);
  // Whether the upstream is connected now; also stamps the last contact time (now) when true.
  // Two relaxed stores, no lock: call it on every message from the upstream.
  void SetContact(bool connected);

  class Impl;  // internal

 private:
  explicit ReplicaFeed(std::unique_ptr<Impl> impl);
  // Runs `store` under the writer lock if this feed still owns the dict (FAILED_PRECONDITION
  // otherwise, and the lock's errors).
  Status UnderLockAsOwner(const std::function<void()>& store);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmdict

#endif  // SHMDICT_REPLICA_FEED_H_
