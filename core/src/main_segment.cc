// The main segment's format: creating its header, validating and mapping an existing one, and
// reading its status. docs/LAYOUT.md is the authority for the bytes.
#include "main_segment.h"

#include <signal.h>
#include <time.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <string>

#include "replica_block.h"
#include "robust_lock.h"
#include "shmdict/dict_status.h"

namespace shmdict::internal {
namespace {

// How long an attacher waits for a concurrent creator to finish initializing the header.
constexpr auto kInitializationWait = std::chrono::seconds(1);

bool ProcessAlive(uint32_t pid) {
  if (pid == 0) return false;
  return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

uint64_t NowUnixNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000 + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

// Maps and validates an existing main segment: a clear status for anything that is not a
// complete shmdict segment of this layout version, never a crash.
namespace {

// What an older layout lacks that this build relies on (docs/LAYOUT.md's history), for the advice.
std::string OlderLayoutLacks(uint32_t version) {
  switch (version) {
    case 3:
      return " (layout 3: before user_flags)";
    case 4:
      return " (layout 4: before replica dicts)";
    default:
      return "";
  }
}

}  // namespace

Result<Mapping> MapExistingMainSegment(std::string_view name, int fd, bool writable) {
  const std::string who = "dict " + QuoteForMessage(name);
  const auto deadline = std::chrono::steady_clock::now() + kInitializationWait;
  while (true) {
    auto size = SegmentSize(fd);
    if (!size.ok()) return size.status();
    bool initializing = *size < sizeof(MainHeader);
    if (!initializing) {
      auto probe = MapSegment(fd, sizeof(MainHeader), false);
      if (!probe.ok()) return probe.status();
      const auto* h = reinterpret_cast<const MainHeader*>(probe->data());
      if (h->identity.magic != 0 && h->identity.magic != kMainMagic) {
        return Status(StatusCode::kDataLoss,
                      who + " is not a shmdict segment (bad magic number): unlink it");
      }
      const uint32_t version = h->identity.layout_version.load(std::memory_order_acquire);
      initializing = version == 0;
      if (!initializing) {
        if (version != kLayoutVersion) {
          // Which way the versions differ decides the advice: an older segment is read by the
          // shmdict that made it (or recreated); a newer one needs this shmdict upgraded.
          const std::string advice = version < kLayoutVersion
                                         ? ": it was made by an older shmdict" +
                                               OlderLayoutLacks(version) +
                                               "; use that one, or unlink the dict and create "
                                               "it again"
                                         : ": upgrade shmdict or unlink the dict";
          return Status(StatusCode::kFailedPrecondition,
                        who + " has layout version " + std::to_string(version) +
                            ", this build reads " + std::to_string(kLayoutVersion) + advice);
        }
        const uint64_t capacity = h->identity.log_capacity;
        if (h->identity.magic != kMainMagic || h->identity.header_size != kHeaderSize ||
            capacity < kMinLogCapacity || capacity > kMaxLogCapacity ||
            !std::has_single_bit(capacity)) {
          return Status(StatusCode::kDataLoss, who + " has a corrupted header: unlink it");
        }
        if (*size != kHeaderSize + capacity) {
          return Status(StatusCode::kDataLoss,
                        who + " is truncated (" + std::to_string(*size) + " bytes, expected " +
                            std::to_string(kHeaderSize + capacity) + "): unlink it");
        }
        return MapSegment(fd, *size, writable);
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(StatusCode::kDataLoss, who + " was never completely initialized (" +
                                               std::to_string(*size) +
                                               " bytes; its creator probably died): unlink it");
    }
    // Another process is creating it right now; this is a bounded wait for its few stores.
    timespec pause{0, 1000000};
    nanosleep(&pause, nullptr);
  }
}

Status InitializeMainHeader(MainHeader* h, uint64_t capacity, mode_t mode, uint32_t user_flags) {
  h->identity.magic = kMainMagic;
  h->identity.header_size = kHeaderSize;
  h->identity.log_capacity = capacity;
  h->identity.creator_pid = static_cast<uint32_t>(getpid());
  h->identity.mode = static_cast<uint32_t>(mode);
  h->identity.created_unix_ns = NowUnixNs();
  h->identity.user_flags = user_flags;
  InitRobustLock(&h->writer.write_lock);
  InitRobustLock(&h->compaction.compaction_lock);
  h->writer.next_holder_token.store(2, std::memory_order_relaxed);  // 0 and 1 mean "free"
  // Ready word last: attachers that see it also see every field above.
  h->identity.layout_version.store(kLayoutVersion, std::memory_order_release);
  return Status::Ok();
}

namespace {

void FillReplicaStatus(const MainHeader& h, int segment_fd, DictStatus* st) {
  const ReplicaBlock& r = h.replica;
  const uint64_t owner = r.owner_token.load(std::memory_order_acquire);
  st->replica_of.emplace();
  st->replica_listen.emplace();
  st->upstream_revision = 0;
  st->upstream_connected = false;
  st->last_upstream_contact = 0;
  if (owner == 0) return;
  ReplicaTexts texts = ReadTexts(r);
  st->replica_of = std::move(texts.upstream);
  st->replica_listen = std::move(texts.listen);
  // Read without the lock: a feed committing meanwhile moves both pairs past the revision read
  // first, so the revision is read again until it held still around the derivation.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const uint64_t committed = h.commit.commit_revision.load(std::memory_order_acquire);
    const uint64_t upstream = UpstreamOfCommitted(r, committed);
    if (h.commit.commit_revision.load(std::memory_order_acquire) == committed) {
      st->upstream_revision = upstream;
      break;
    }
  }
  // The flag is the feed's word; the liveness lock of its handle is the kernel's (a SIGKILLed feed
  // cannot clear the flag, but its liveness lock goes with its process).
  st->upstream_connected = r.upstream_connected.load(std::memory_order_relaxed) != 0 &&
                           HolderTokenIsAlive(segment_fd, owner);
  st->last_upstream_contact = r.last_contact_unix_ms.load(std::memory_order_relaxed);
}

}  // namespace

DictStatus StatusFromHeader(std::string_view name, const MainHeader& h, uint64_t segment_bytes,
                            int segment_fd) {
  DictStatus st;
  st.name = std::string(name);
  st.layout_version = h.identity.layout_version.load(std::memory_order_acquire);
  st.revision = h.commit.commit_revision.load(std::memory_order_acquire);
  st.entries = h.commit.entry_count.load(std::memory_order_relaxed);
  st.log_capacity = h.identity.log_capacity;
  st.log_used = h.writer.writer_tail.load(std::memory_order_relaxed) -
                h.writer.snapshot_log_position.load(std::memory_order_relaxed);
  st.snapshot_generation = h.commit.snapshot_generation.load(std::memory_order_relaxed);
  st.snapshot_revision = h.writer.snapshot_revision.load(std::memory_order_relaxed);
  st.snapshots_built = h.compaction.snapshots_built.load(std::memory_order_relaxed);
  const LockHolderInfo holder = ReadRobustLockHolder(h.writer.write_lock);
  st.lock_held = holder.held;
  st.lock_holder_pid = holder.pid;
  st.lock_holder_pid_namespace = holder.pid_namespace;
  st.lock_holder_in_this_pid_namespace = holder.in_this_pid_namespace;
  st.lock_recoveries = h.writer.lock_recoveries.load(std::memory_order_relaxed);
  st.creator_pid = h.identity.creator_pid;
  st.creator_alive = ProcessAlive(h.identity.creator_pid);
  st.segment_bytes = segment_bytes;
  st.mode = static_cast<mode_t>(h.identity.mode);
  FillReplicaStatus(h, segment_fd, &st);
  return st;
}

}  // namespace shmdict::internal
