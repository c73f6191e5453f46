// The byte layout of every shared-memory segment shmdict creates. docs/LAYOUT.md is the
// authoritative description; this file must match it.
//
// Rule (iceoryx): if the width, order or meaning of any field changes, bump kLayoutVersion.
// Every struct here holds only fixed-width integers and lock-free std::atomic integers, never
// pointers or process-local objects. The codes a log record carries (RecordKind, RecordOp) and
// their one encoder and decoder are record_format.h's, under the same rule.
//
// Main segment "/shmdict.NAME":
//
//   0      +--------------------------------------------------------------+
//          | IdentityBlock   magic, layout_version (ready word, last),    |
//          |                 header_size, log_capacity, creator, mode,    |
//          |                 user_flags                                   |
//   64     | CommitBlock     commit_revision (THE commit point),          |
//          |                 reclaim_position, snapshot_generation, ...   |
//   128    | WaitBlock       change_futex, maybe_waiting                  |
//   192    | WriterBlock     write_lock (RobustLockWord), holder tokens,  |
//          |                 writer_tail, snapshot position (lock-held)   |
//   320    | CompactionBlock compaction_lock, snapshots_built, next gen   |
//   448    | ReplicaBlock    owner_token (0: not a replica), text seqlock,|
//          |                 pending/applied (upstream, local) pairs,    |
//          |                 identity, contact, upstream and listen text |
//   1472   | reserved up to 4096                                          |
//   4096   +--------------------------------------------------------------+
//          | log ring: log_capacity bytes (power of two) of records,      |
//          | addressed by monotonic 64-bit positions (pos & (cap-1))      |
//          +--------------------------------------------------------------+
//
// Snapshot segment "/shmdict.NAME@s<generation>" (immutable once published):
//   SnapshotHeader (192) | Bucket[bucket_count] | entries (8-aligned)
// A snapshot is a BASE (base_generation 0: the whole dict) or a DELTA over base `@s<base>`: its
// own table then holds only the keys changed since that base, erasures as kEntryErased entries.
// Large-value segment "/shmdict.NAME@b<revision>": BlobHeader (64) | record payload.
// Nested children are dicts named "NAME@c<hex>"; so "shmdict.NAME@" prefixes everything a dict
// owns besides its main segment.
#ifndef SHMDICT_CORE_LAYOUT_H_
#define SHMDICT_CORE_LAYOUT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmdict::internal {

// 2: snapshots are patched copies of their predecessor (dead entries, tombstone buckets,
// live_bytes and tombstone_count in the header).
// 3: the writer lock and the builder claim are RobustLockWords (owner tokens, liveness by OFD
// locks) instead of glibc robust mutexes, which are wrong across pid namespaces
// (docs/WRITER_LOCK.md); WriterBlock's holder pid became next_holder_token; WaitBlock's waiter
// count became the maybe_waiting flag. Snapshots became layered (a delta over a base: the header
// grew to 192 bytes with base_generation and total_entry_count, entries gained kEntryErased,
// WriterBlock gained snapshot_chain_base).
// 4: IdentityBlock gained user_flags (bytes 40..43, reserved before): a version-3 build would
// attach to a dict whose creator set them and silently ignore them.
// 5: the ReplicaBlock (bytes 448..1471, reserved before): a version-4 build would ignore the
// replica marker and write to a replica dict behind its feed's back.
inline constexpr uint32_t kLayoutVersion = 5;
inline constexpr uint64_t kMainMagic = 0x3154434944484D53ull;      // "SMHDICT1" little-endian
inline constexpr uint64_t kSnapshotMagic = 0x31504E5344484D53ull;  // "SMHDSNP1"
inline constexpr uint64_t kBlobMagic = 0x31424C4244484D53ull;      // "SMHDBLB1"
inline constexpr uint32_t kHeaderSize = 4096;
inline constexpr uint64_t kMinLogCapacity = 64 * 1024;
inline constexpr uint64_t kMaxLogCapacity = uint64_t{1} << 36;
// Records are multiples of this, so the space left before the ring's end always fits a padding
// record header.
inline constexpr uint32_t kRecordAlign = 32;

static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(sizeof(std::atomic<uint64_t>) == 8, "atomics must have the plain integer's size");

struct alignas(64) IdentityBlock {
  uint64_t magic;
  // Ready word: 0 while the creator initializes; kLayoutVersion, stored with release order, last.
  std::atomic<uint32_t> layout_version;
  uint32_t header_size;
  uint64_t log_capacity;
  uint32_t creator_pid;  // diagnostics only (pids are per namespace and reused)
  uint32_t mode;
  uint64_t created_unix_ns;
  // Options::user_flags of the creator, written before the ready word and never again: a
  // client's per-dict settings that every attacher must share (the Python UltraDict drop-in's
  // recurse). The core gives them no meaning.
  uint32_t user_flags;
  uint8_t reserved[20];
};
static_assert(sizeof(IdentityBlock) == 64, "layout changed: bump kLayoutVersion");
static_assert(offsetof(IdentityBlock, user_flags) == 40, "layout changed: bump kLayoutVersion");
static_assert(offsetof(IdentityBlock, layout_version) == 8, "ready word is checked at offset 8");

// Hot: every reader loads commit_revision on every read.
struct alignas(64) CommitBlock {
  // The commit point: the newest committed revision. Its record (and all before it) is fully
  // written before this release-store.
  std::atomic<uint64_t> commit_revision;
  // Bytes before this log position may have been overwritten (seqlock guard for readers).
  std::atomic<uint64_t> reclaim_position;
  // Generation of the newest published snapshot (0: none, the empty dict at revision 0).
  std::atomic<uint64_t> snapshot_generation;
  // Entries at commit_revision (stored right after the commit; diagnostics).
  std::atomic<uint64_t> entry_count;
  uint8_t reserved[32];
};
static_assert(sizeof(CommitBlock) == 64, "layout changed: bump kLayoutVersion");

// Futex word for "revision > R" waits. Shared (not FUTEX_PRIVATE) so it works across processes.
struct alignas(64) WaitBlock {
  std::atomic<uint32_t> change_futex;   // bumped by a writer that found maybe_waiting set
  std::atomic<uint32_t> maybe_waiting;  // 1: a process may sleep on change_futex (a flag, not a
                                        // count: a killed sleeper cannot leave it set for good)
  uint8_t reserved[56];
};
static_assert(sizeof(WaitBlock) == 64, "layout changed: bump kLayoutVersion");

// A lock that survives its holder, in any pid namespace (robust_lock.h; docs/WRITER_LOCK.md).
struct alignas(8) RobustLockWord {
  // Bits 0-62: 0 free; 1 free with a repair owed (its holder died, the repair failed); >= 2 the
  // holding handle's token. Bit 63: a waiter may be asleep on wake_futex.
  std::atomic<uint64_t> owner;
  std::atomic<uint32_t> wake_futex;  // bumped by a release that found bit 63 set
  // Diagnostics only, written by the holder after acquiring, cleared before releasing; never
  // used to decide anything.
  std::atomic<uint32_t> holder_pid;            // in the holder's own pid namespace
  std::atomic<uint64_t> holder_pid_namespace;  // inode of /proc/<holder>/ns/pid (0: unknown)
  std::atomic<uint64_t> holder_start_time;     // clock ticks after boot (/proc/<holder>/stat #22)
  uint8_t reserved[16];
};
static_assert(sizeof(RobustLockWord) == 48, "layout changed: bump kLayoutVersion");
static_assert(offsetof(RobustLockWord, wake_futex) == 8, "layout changed: bump kLayoutVersion");
static_assert(offsetof(RobustLockWord, holder_start_time) == 24,
              "layout changed: bump kLayoutVersion");

// Fields below write_lock are written only while holding it (next_holder_token: by anyone, with
// fetch_add).
struct alignas(64) WriterBlock {
  RobustLockWord write_lock;
  // Every handle takes its lock token here (fetch_add); tokens start at 2 and are never reused.
  std::atomic<uint64_t> next_holder_token;
  std::atomic<uint64_t> lock_recoveries;
  // End of the committed log and the revision of its last record. A writer that dies after its
  // commit store but before updating these is repaired by the next lock holder.
  std::atomic<uint64_t> writer_tail;
  std::atomic<uint64_t> writer_tail_revision;
  // Log position and revision of the published snapshot: writers never reclaim past the position.
  std::atomic<uint64_t> snapshot_log_position;
  std::atomic<uint64_t> snapshot_revision;
  // Bytes of large changes stored in their own segments since the last publication. They take
  // almost no log space, yet every attacher replays them: they count toward starting a snapshot
  // as if they were in the log.
  std::atomic<uint64_t> external_bytes;
  // 1 once any nested-dict reference was committed: until then a write skips looking for the
  // children it might retire (a sticky flag; set before the commit that stores the reference).
  std::atomic<uint64_t> nested_values_written;
  // Base generation of the published snapshot's chain (its own generation when it is a base).
  // Stored before snapshot_generation, so a publisher killed between the two leaves a value that
  // refuses deltas (never one that lets a delta be published over a base that is no longer the
  // chain's) until the next lock holder re-derives it from the published snapshot.
  std::atomic<uint64_t> snapshot_chain_base;
};
static_assert(sizeof(WriterBlock) == 128, "layout changed: bump kLayoutVersion");
static_assert(offsetof(WriterBlock, nested_values_written) == 104,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(WriterBlock, external_bytes) == 96, "layout changed: bump kLayoutVersion");
static_assert(offsetof(WriterBlock, snapshot_chain_base) == 112,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(WriterBlock, next_holder_token) == 48,
              "layout changed: bump kLayoutVersion");

struct alignas(64) CompactionBlock {
  RobustLockWord compaction_lock;  // claimed by at most one background builder at a time
  uint64_t reserved0;
  std::atomic<uint64_t> snapshots_built;
  std::atomic<uint64_t> next_generation;  // fetch_add gives every snapshot a unique name
  uint8_t reserved[56];
};
static_assert(sizeof(CompactionBlock) == 128, "layout changed: bump kLayoutVersion");

// Marks a dict as a replica of a dict kept elsewhere and records, atomically with the data, the
// upstream revision applied (replica_block.h has the protocol; shmdict/replica_feed.h the API).
// Everything is written under the writer lock, by the feed that owns the dict (or by the Adopt
// that makes it the owner); readers without the lock (status) use text_sequence for the texts.
struct alignas(64) ReplicaBlock {
  // 0: not a replica. Otherwise the writer-lock token (HolderIdentity) of the feeding handle: its
  // liveness lock tells whether the feed lives. Stored last by Adopt.
  std::atomic<uint64_t> owner_token;
  // Seqlock over the texts and their lengths: odd while they are written.
  std::atomic<uint64_t> text_sequence;
  // (upstream revision, local revision) stored BEFORE a feed's commit store; local = the revision
  // being committed.
  std::atomic<uint64_t> pending_upstream;
  std::atomic<uint64_t> pending_local;
  // The same pair stored AFTER that commit.
  std::atomic<uint64_t> applied_upstream;
  std::atomic<uint64_t> applied_local;
  std::atomic<uint64_t> upstream_identity;     // the feed's (an etcd cluster id); 0: none
  std::atomic<uint64_t> last_contact_unix_ms;  // 0: never
  std::atomic<uint32_t> upstream_connected;    // 1: the feed says it is connected now
  std::atomic<uint32_t> upstream_bytes;        // of `upstream`
  std::atomic<uint32_t> listen_bytes;          // of `listen`
  std::atomic<uint32_t> owner_pid;             // diagnostics only (pid namespaces differ)
  uint8_t reserved[48];
  char upstream[640];  // the ReplicaMarker description, printable ASCII, not NUL-terminated
  char listen[256];    // the replica's first --listen address as bound; empty: none
};
static_assert(sizeof(ReplicaBlock) == 1024, "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, pending_upstream) == 16,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, applied_upstream) == 32,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, upstream_identity) == 48,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, upstream_connected) == 64,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, owner_pid) == 76, "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, upstream) == 128, "layout changed: bump kLayoutVersion");
static_assert(offsetof(ReplicaBlock, listen) == 768, "layout changed: bump kLayoutVersion");

struct MainHeader {
  IdentityBlock identity;
  CommitBlock commit;
  WaitBlock wait;
  WriterBlock writer;
  CompactionBlock compaction;
  ReplicaBlock replica;
  uint8_t reserved[kHeaderSize - 1472];
};
static_assert(sizeof(MainHeader) == kHeaderSize, "layout changed: bump kLayoutVersion");
static_assert(offsetof(MainHeader, commit) == 64, "layout changed: bump kLayoutVersion");
static_assert(offsetof(MainHeader, wait) == 128, "layout changed: bump kLayoutVersion");
static_assert(offsetof(MainHeader, writer) == 192, "layout changed: bump kLayoutVersion");
static_assert(offsetof(MainHeader, compaction) == 320, "layout changed: bump kLayoutVersion");
static_assert(offsetof(MainHeader, replica) == 448, "layout changed: bump kLayoutVersion");

// Every record starts here, at a position that is a multiple of kRecordAlign.
struct RecordHeader {
  uint64_t position;  // its own log position: stale bytes from an earlier lap never match
  uint64_t revision;  // 0 for padding
  uint32_t length;    // header + payload bytes; the record occupies it rounded up to kRecordAlign
  uint8_t kind;       // RecordKind (record_format.h)
  uint8_t reserved[3];
  uint64_t checksum;  // Hash64 of the payload, seeded with position ^ revision ^ length ^ kind
};
static_assert(sizeof(RecordHeader) == 32, "layout changed: bump kLayoutVersion");

// An op inside a change record's body, followed by key bytes then value bytes (unaligned).
struct OpHeader {
  uint8_t op;    // RecordOp (record_format.h): the format's own codes, not the public ChangeOp
  uint8_t type;  // the value's type tag
  uint16_t reserved;
  uint32_t key_bytes;
  uint32_t value_bytes;
};
static_assert(sizeof(OpHeader) == 12, "layout changed: bump kLayoutVersion");

// The body of a kExternal record: the size and checksum of the ops stored in the large-value
// segment NAME@b<revision> (blob_segment.h).
struct BlobRef {
  uint64_t payload_bytes = 0;
  uint64_t payload_checksum = 0;  // Hash64 of those bytes, seeded with the revision
};
static_assert(sizeof(BlobRef) == 16, "layout changed: bump kLayoutVersion");

struct SnapshotHeader {
  uint64_t magic;
  std::atomic<uint32_t> layout_version;  // ready word, stored last
  uint32_t header_size;
  uint64_t generation;
  uint64_t revision;      // state of the dict at this revision
  uint64_t log_position;  // log position just after that revision's record
  uint64_t entry_count;   // live entries of this segment's own table (a delta's erased markers too)
  uint64_t bucket_count;  // power of two
  uint64_t buckets_offset;
  uint64_t entries_offset;
  uint64_t entries_bytes;
  uint64_t total_bytes;      // the segment's size
  uint64_t header_checksum;  // Hash64 of the fields above (not the ready word)
  // Hash64 of every byte after the header (buckets and entries), verified once per mapping:
  // a damaged snapshot is a DATA_LOSS error, not silently wrong answers.
  uint64_t data_checksum;
  // Bytes of live entries; entries_bytes - live_bytes are dead ones, superseded in place by a
  // patched copy. A builder copies instead of patching once half the region would be dead.
  uint64_t live_bytes;
  uint64_t tombstone_count;  // buckets holding kTombstoneOffset8
  // 0: a base (the whole dict). Otherwise a delta over snapshot `@s<base_generation>`, which must
  // be a base with a smaller generation: a key found in the delta's own table wins (an erased
  // marker reads as missing), any other key is looked up in the base.
  uint64_t base_generation;
  uint64_t total_entry_count;  // the dict's entries at `revision`, base and delta together
  uint8_t reserved[56];
};
static_assert(sizeof(SnapshotHeader) == 192, "layout changed: bump kLayoutVersion");
static_assert(offsetof(SnapshotHeader, live_bytes) == 104, "layout changed: bump kLayoutVersion");
static_assert(offsetof(SnapshotHeader, base_generation) == 120,
              "layout changed: bump kLayoutVersion");
static_assert(offsetof(SnapshotHeader, total_entry_count) == 128,
              "layout changed: bump kLayoutVersion");

// Open addressing, linear probing. entry_offset8 == 0 marks an empty bucket (a probe stops),
// kTombstoneOffset8 an erased one (a probe goes on; an insertion may reuse it). Both lie inside
// the header, where no entry can start.
inline constexpr uint32_t kTombstoneOffset8 = 1;
struct SnapshotBucket {
  uint32_t hash_tag;       // high 32 bits of the key's Hash64
  uint32_t entry_offset8;  // entry's offset from the segment start, in units of 8 bytes
};
static_assert(sizeof(SnapshotBucket) == 8, "layout changed: bump kLayoutVersion");

struct SnapshotEntry {  // followed by key bytes, value bytes, zero padding to 8
  uint32_t key_bytes;
  uint32_t value_bytes;
  uint8_t type;
  uint8_t flags;  // kEntryDead: superseded by a later entry or erased; no bucket points here.
                  // kEntryErased (deltas only): a bucket points here, and the key is missing
  uint8_t reserved[2];
  // Low 32 bits of the key's Hash64 (the bucket holds the high 32): the next snapshot is built
  // without hashing any key again.
  uint32_t hash_low;
};
static_assert(sizeof(SnapshotEntry) == 16, "layout changed: bump kLayoutVersion");
static_assert(offsetof(SnapshotEntry, flags) == 9, "layout changed: bump kLayoutVersion");
inline constexpr uint8_t kEntryDead = 1;
inline constexpr uint8_t kEntryErased = 2;
static_assert(offsetof(SnapshotEntry, hash_low) == 12, "layout changed: bump kLayoutVersion");

struct BlobHeader {
  uint64_t magic;
  std::atomic<uint32_t> layout_version;  // ready word
  uint32_t header_size;
  uint64_t revision;
  uint64_t payload_bytes;
  uint64_t payload_checksum;
  uint8_t reserved[24];
};
static_assert(sizeof(BlobHeader) == 64, "layout changed: bump kLayoutVersion");

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_LAYOUT_H_
