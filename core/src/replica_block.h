// The replica block of the main segment (layout.h's ReplicaBlock, docs/LAYOUT.md): the marker
// that makes a dict a replica, and the upstream revision of the data committed, recorded so that
// a feed SIGKILLed between any two stores resumes from exactly the upstream revision of the last
// committed local revision.
//
// The resume rule. Only the owning feed commits. Under the writer lock, on a caught-up view at
// committed revision c, a feed commit of upstream revision U:
//   (0) NormalizePairs: applied := (U0, c), U0 the upstream revision c holds (below);
//   (1) StorePending(U, c + 1): pending_local first (so that pending never matches c half
//       written), then pending_upstream;
//   (2) the record and the commit store commit_revision = c + 1;
//   (3) StoreApplied(U, c + 1).
// Whoever reads the block next (under the lock, or at adoption) takes c = commit_revision: when
// pending_local == c the commit happened and U = pending_upstream; otherwise the writer died
// before its commit store and applied_local == c, U = applied_upstream. (0) keeps that second
// case true after a death inside (3).
//
// Thread-safety: the Store* functions run under the dict's writer lock, by the feed; ReadTexts may
// run anywhere (a seqlock against the writer). Lifetime: plain functions over a mapped header.
#ifndef SHMDICT_CORE_REPLICA_BLOCK_H_
#define SHMDICT_CORE_REPLICA_BLOCK_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "layout.h"
#include "shmdict/status.h"

namespace shmdict::internal {

// The upstream revision whose data the dict holds at `committed` (the resume rule above). 0 when
// neither pair names `committed`: a broken block is resumed from nothing (a relist), never from
// a revision that might skip changes.
uint64_t UpstreamOfCommitted(const ReplicaBlock& r, uint64_t committed);

// Under the lock at `committed`: applied := (UpstreamOfCommitted, committed). Step (0).
void NormalizePairs(ReplicaBlock* r, uint64_t committed);
// Under the lock at `committed`, after NormalizePairs: records `upstream` as held at `committed`
// without a commit (progress without data; a reset to 0 at adoption). Any prefix of its stores
// leaves either the old or the new upstream revision derivable, both true of `committed`.
void RecordWithoutCommit(ReplicaBlock* r, uint64_t upstream, uint64_t committed);
// Step (1), then the crash point replica.after_pending.
void StorePending(ReplicaBlock* r, uint64_t upstream, uint64_t local);
// The crash point replica.after_commit, then step (3).
void StoreApplied(ReplicaBlock* r, uint64_t upstream, uint64_t local);

// The texts, as one consistent pair.
struct ReplicaTexts {
  std::string upstream;
  std::string listen;
};
ReplicaTexts ReadTexts(const ReplicaBlock& r);
// Under the lock. Both fit: upstream <= 640 bytes, listen <= 256 (checked by the caller).
void WriteTexts(ReplicaBlock* r, std::string_view upstream, std::string_view listen);

// FAILED_PRECONDITION: the refusal of a write to replica dict `dict` by anyone but its feed.
Status ReplicaRefusal(std::string_view dict, const ReplicaBlock& r);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_REPLICA_BLOCK_H_
