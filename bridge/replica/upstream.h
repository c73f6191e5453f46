// Upstream: where a replica dict's contents come from and where its writes go -- an etcd key
// prefix (etcd_upstream.h) or another host's dict through its bridge (bridge_upstream.h). The
// Applier (applier.h) follows one; ReplicaStore (replica_store.h) writes through one.
//
// Thread-safety: an Upstream is thread-safe (the feed thread follows it while the bridge's pool
// threads write through it). An UpstreamStream is used by one thread, except Cancel().
#ifndef SHMDICT_BRIDGE_REPLICA_UPSTREAM_H_
#define SHMDICT_BRIDGE_REPLICA_UPSTREAM_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shmdict/status.h"
#include "shmdict/store.h"
#include "shmdict/value.h"

namespace shmdict::replica {

// One step of an upstream's history, applied as one local revision.
struct UpstreamStep {
  enum class Kind {
    // The whole upstream at `revision` (after a first start, a compaction, a log that wrapped):
    // the local contents become `items`.
    kReplace,
    // The changes of upstream revision `revision`, one atomic batch.
    kChanges,
    // Nothing changed in the dict's part of the upstream up to `revision`.
    kProgress,
  };
  Kind kind = Kind::kProgress;
  uint64_t revision = 0;
  std::vector<std::pair<std::string, Value>> items;  // kReplace
  std::vector<Change> changes;                       // kChanges
  // kReplace: the upstream's identity at the listing (an etcd cluster id); 0: not known.
  uint64_t identity = 0;
};

class UpstreamStream {
 public:
  virtual ~UpstreamStream() = default;
  // The next steps, in upstream revision order, each revision once (an empty vector when
  // `timeout` passed without any; a stream that reads its upstream on the caller's thread, as
  // etcd's does, may wait past `timeout` until a message arrives or Cancel is called). Errors end
  // the stream: kUnavailable or kDeadlineExceeded (the upstream went away: follow again, from
  // another endpoint), kCancelled (Cancel was called), others as the upstream gave them.
  virtual Result<std::vector<UpstreamStep>> Next(std::chrono::milliseconds timeout) = 0;
  // Makes a blocked or later Next return kCancelled. Any thread.
  virtual void Cancel() = 0;
};

class Upstream {
 public:
  virtual ~Upstream() = default;
  // Shown to users and recorded in the dict ("etcd:http://h:2379 prefix=/app/"): the replica's
  // identity of its source; a dict adopted with another description is listed again.
  virtual const std::string& description() const = 0;
  // Who the upstream is now (an etcd cluster's id: a cluster created again has another, and its
  // revisions start over); 0 when the upstream has no such identity. kUnavailable and the like
  // when it cannot be reached.
  virtual Result<uint64_t> Identity() = 0;
  // Follows the upstream after `after_revision`; 0, or a revision the upstream can no longer
  // resume from, starts with a kReplace step. `connected` is called with true once the stream
  // hears from the upstream and on every later message, false when it loses it.
  virtual Result<std::unique_ptr<UpstreamStream>> Follow(uint64_t after_revision,
                                                         std::function<void(bool)> connected) = 0;
  // A Store whose writes go to the upstream; its last_commit_revision() after a write is the
  // upstream revision that write made (0: the write changed nothing upstream). Its reads are not
  // used. One per call (not shared between threads).
  virtual Result<std::unique_ptr<Store>> Writer() = 0;
};

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_UPSTREAM_H_
