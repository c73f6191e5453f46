#include "replica_block.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "crash_point.h"
#include "shmdict/status.h"

namespace shmdict::internal {

uint64_t UpstreamOfCommitted(const ReplicaBlock& r, uint64_t committed) {
  if (r.pending_local.load(std::memory_order_acquire) == committed) {
    return r.pending_upstream.load(std::memory_order_acquire);
  }
  if (r.applied_local.load(std::memory_order_acquire) == committed) {
    return r.applied_upstream.load(std::memory_order_acquire);
  }
  return 0;
}

void NormalizePairs(ReplicaBlock* r, uint64_t committed) {
  const uint64_t upstream = UpstreamOfCommitted(*r, committed);
  if (r->applied_local.load(std::memory_order_relaxed) == committed &&
      r->applied_upstream.load(std::memory_order_relaxed) == upstream) {
    return;
  }
  // Only reached while pending_local == committed (or with a broken block): the derivation reads
  // pending meanwhile, so the order of these two stores does not matter to it.
  r->applied_local.store(committed, std::memory_order_release);
  r->applied_upstream.store(upstream, std::memory_order_release);
}

void RecordWithoutCommit(ReplicaBlock* r, uint64_t upstream, uint64_t committed) {
  // Derivation moves to applied (== the old value at `committed`), which then switches to the
  // new value in one store, and pending follows.
  r->pending_local.store(committed + 1, std::memory_order_release);
  r->applied_local.store(committed, std::memory_order_release);
  r->applied_upstream.store(upstream, std::memory_order_release);
  r->pending_upstream.store(upstream, std::memory_order_release);
  r->pending_local.store(committed, std::memory_order_release);
}

void StorePending(ReplicaBlock* r, uint64_t upstream, uint64_t local) {
  r->pending_local.store(local, std::memory_order_release);
  r->pending_upstream.store(upstream, std::memory_order_release);
  CrashPoint("replica.after_pending");
}

void StoreApplied(ReplicaBlock* r, uint64_t upstream, uint64_t local) {
  CrashPoint("replica.after_commit");
  r->applied_local.store(local, std::memory_order_release);
  r->applied_upstream.store(upstream, std::memory_order_release);
}

namespace {

// Byte-wise relaxed atomics: status readers copy without the writer lock, and the seqlock, not
// the bytes, decides whether the copy is used.
void CopyOut(const char* from, uint32_t bytes, size_t capacity, std::string* to) {
  to->resize(std::min<size_t>(bytes, capacity));
  for (size_t i = 0; i < to->size(); ++i) {
    // atomic_ref<const T> is C++26: the load never writes, so the cast is only for the type.
    (*to)[i] = std::atomic_ref<char>(const_cast<char&>(from[i])).load(std::memory_order_relaxed);
  }
}

void CopyIn(std::string_view from, char* to) {
  for (size_t i = 0; i < from.size(); ++i) {
    std::atomic_ref<char>(to[i]).store(from[i], std::memory_order_relaxed);
  }
}

}  // namespace

ReplicaTexts ReadTexts(const ReplicaBlock& r) {
  ReplicaTexts texts;
  // The writer holds the lock for a few hundred byte stores: a reader retries a handful of times
  // at most. A writer that died mid-way leaves the sequence odd until the next Adopt: after many
  // tries the last copy is returned as it is (diagnostics, never a decision).
  for (int attempt = 0; attempt < 10000; ++attempt) {
    const uint64_t before = r.text_sequence.load(std::memory_order_acquire);
    if ((before & 1) != 0) {
      std::this_thread::yield();
      continue;
    }
    CopyOut(r.upstream, r.upstream_bytes.load(std::memory_order_relaxed), sizeof(r.upstream),
            &texts.upstream);
    CopyOut(r.listen, r.listen_bytes.load(std::memory_order_relaxed), sizeof(r.listen),
            &texts.listen);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (r.text_sequence.load(std::memory_order_relaxed) == before) return texts;
  }
  return texts;
}

void WriteTexts(ReplicaBlock* r, std::string_view upstream, std::string_view listen) {
  const uint64_t sequence = r->text_sequence.load(std::memory_order_relaxed);
  // Even whatever a dead writer left, then odd while writing.
  const uint64_t odd = (sequence | 1) + 2;
  r->text_sequence.store(odd, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  CopyIn(upstream, r->upstream);
  r->upstream_bytes.store(static_cast<uint32_t>(upstream.size()), std::memory_order_relaxed);
  CopyIn(listen, r->listen);
  r->listen_bytes.store(static_cast<uint32_t>(listen.size()), std::memory_order_relaxed);
  r->text_sequence.store(odd + 1, std::memory_order_release);
}

Status ReplicaRefusal(std::string_view dict, const ReplicaBlock& r) {
  const ReplicaTexts texts = ReadTexts(r);
  std::string message = "dict " + QuoteForMessage(dict) + " is a replica of " + texts.upstream +
                        " (kept by shmdict-replica): ";
  if (texts.listen.empty()) {
    message += "write to its upstream";
  } else {
    message += "write through " + texts.listen + ", the replica's --listen";
  }
  return Status(StatusCode::kFailedPrecondition, std::move(message));
}

}  // namespace shmdict::internal
