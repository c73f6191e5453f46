// Snapshot: an immutable, read-only hash index of a whole dict at one revision, in its own
// shared-memory segment that every process maps instead of parsing (docs/DESIGN.md, "Big
// dicts"). Attaching costs one mmap whatever the dict's size, and N processes share one copy.
//
// Snapshots are layered (docs/LAYOUT.md, "Snapshot chains"): a segment is either a BASE holding
// the whole dict or a DELTA over a base, holding only the keys changed since that base (an
// erased key as an erased-marker entry). A build then writes O(changes since the base) bytes
// instead of the whole dict, and a fresh base is written only once the delta outgrows a fraction
// of its base, so building costs amortized O(changes), like the levels of an LSM tree. The
// public Find / ForEach / entry_count see the dict (delta first, then the base); the builder's
// internals work on a segment's own table.
//
// Thread-safety: a SnapshotView is immutable after Open/Build and safe to share between threads
// (handles hold it by shared_ptr so a background builder can keep reading a view the handle has
// moved past). Lifetime: the mapping lives as long as the view, even after the segment's name is
// unlinked by a newer snapshot; a delta's view keeps its base's view (and mapping) alive.
#ifndef SHMDICT_CORE_SNAPSHOT_H_
#define SHMDICT_CORE_SNAPSHOT_H_

#include <sys/types.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "hash.h"
#include "layout.h"
#include "segment.h"
#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict::internal {

using EntryVisitor = std::function<void(std::string_view key, ValueView value)>;

// The changes a new snapshot applies on top of its base: Visit calls fn once per changed key with
// the key's Hash64 and its new value, or nullptr when the key was erased. Contains (optional)
// tells whether visit lists a key; a build that folds a delta into its base needs it.
struct SnapshotDelta {
  using Fn = std::function<void(std::string_view key, uint64_t hash, const ValueView* value)>;
  std::function<void(const Fn&)> visit;
  std::function<bool(std::string_view key, uint64_t hash)> contains;
};

// Where a build first looks for its segment (the Compactor's snapshots this process built and
// still maps): given the new segment's name and size, a segment renamed to it, sized, mapped
// writable and holding an exclusive flock (RecycleHeldSegment), or nullopt. Its pages are then
// already in this process's page tables, which on the VMs we measured makes the build several
// times cheaper than writing through a fresh mapping (segment.h).
using HeldSegmentSource = std::function<std::optional<std::pair<Fd, Mapping>>(
    const std::string& segment, uint64_t bytes)>;

class SnapshotView : public std::enable_shared_from_this<SnapshotView> {
 public:
  // Maps segment `dict@s<generation>` read-only and checks its header (not its contents: that
  // would make every attach O(dict size) and touch every page; see VerifyContents); a delta's
  // base is mapped too. kNotFound if the name is gone (a newer snapshot replaced it: retry with
  // the newer generation), also when a delta's base is gone because the delta itself was retired
  // meanwhile; kDataLoss if a delta's base is missing while the delta is not retired, or a
  // segment is truncated or corrupted; kFailedPrecondition for another layout version.
  static Result<std::shared_ptr<const SnapshotView>> Open(std::string_view dict,
                                                          uint64_t generation);
  // Writes a new snapshot segment `dict@s<generation>` holding the dict `previous` (null:
  // nothing; a base or a delta) with `delta` applied, describing the dict at `revision` /
  // `log_position`. The result is
  //   - a base, when there is no previous snapshot, or when the changes since the chain's base
  //     (previous's own delta merged with `delta`) would outgrow the base (KeepsDelta): the
  //     base with those changes applied;
  //   - otherwise a delta over previous's chain base: previous's own delta (if it is one) with
  //     `delta` applied, erasures of keys the base holds written as erased markers.
  // Either way one table is written from another one plus a list of changes:
  //
  // Usually a patched copy: the base's buckets and entries are copied as one block (memcpy
  // speed, no key hashed or probed) and only the delta's keys are touched: a same-size value is
  // overwritten in place, another one is appended and its old entry marked dead, an erased key
  // leaves a tombstone bucket. When that would leave the table over 70% full (tombstones
  // included), half the entry region dead, or the table far too big for what is left, the base
  // is instead rewritten compactly, walked in bucket order with no key hashed again. The
  // rewrite is O(base) per call like the copy, but its constant is several times larger, and it
  // happens only once per growth or churn of the whole dict.
  // `held` (optional) is asked for the segment first.
  static Result<std::shared_ptr<const SnapshotView>> Build(std::string_view dict,
                                                           uint64_t generation, uint64_t revision,
                                                           uint64_t log_position, mode_t mode,
                                                           const SnapshotView* previous,
                                                           const SnapshotDelta& delta,
                                                           const HeldSegmentSource* held = nullptr);
  // The segment of a view this process built (its fd, holding a shared flock, and its writable
  // mapping) when *view is its only reference: what a HeldSegmentSource recycles. *view is reset
  // either way.
  static std::optional<std::pair<Fd, Mapping>> ReleaseSegment(
      std::shared_ptr<const SnapshotView>* view);
  // Whether a delta of `delta_entries` own entries and `delta_live_bytes`, making a dict of
  // `total_entries` over `base`, stays a delta (else the build folds it into a new base). Two
  // bounds, because a delta's entries are of two kinds:
  //   - entries that hide one of the base's (a newer value, an erased marker) leave the base's
  //     entry as dead weight every reader maps and a lookup looks past: at most
  //     1/kDeltaFraction of the base's entries, as before;
  //   - entries that add a key cost nothing of the kind; they only make each delta build copy
  //     more. They may reach 1/kGrowingDeltaFraction of the base's bytes.
  // Why the second bound is looser (docs/LAYOUT.md, "Snapshot chains"): a fold copies the whole
  // base. While a dict grows (an import), a 1/8 bound folded every other build: a 1M-key import
  // of 34 builds wrote 14 bases, 6.1M entries (each key about six times), and those copies were
  // most of the builder's time, which the writer waits for once the ring is full. With deltas of
  // new keys up to half the base, the base grows 1.5x per fold (about three copies per key), paid
  // for by delta builds that copy at most half the base at memcpy speed. Measured on the 2-vCPU
  // VM (1M keys, 1,000 per Update, two runs each, a loaded machine): the builder's CPU was
  // 1.7-1.9 s at 1/8, 1.2-1.6 s at 1/4, 1.2-1.4 s at 1/2, 1.25-1.75 s at 1/1.
  // Lookups still probe at most two tables (delta, then base).
  static constexpr uint64_t kDeltaFraction = 8;
  static constexpr uint64_t kGrowingDeltaFraction = 2;
  static bool KeepsDelta(uint64_t delta_entries, uint64_t delta_live_bytes, uint64_t total_entries,
                         const SnapshotView& base);

  // Checks the contents (a delta's and its base's) against the checksums the builders stored:
  // kDataLoss on a mismatch. O(size):
  // run on an explicit forced reload, not on every mapping. Snapshots are mapped read-only by all
  // but their builder, so a stray write from a buggy attacher faults instead of corrupting one;
  // reads bounds-check every entry, so even tampered contents cannot crash a reader.
  Status VerifyContents(std::string_view dict) const;

  uint64_t generation() const { return header_->generation; }
  uint64_t revision() const { return header_->revision; }
  uint64_t log_position() const { return header_->log_position; }
  // 0 for a base; otherwise the generation of the base this delta lies over.
  uint64_t base_generation() const { return header_->base_generation; }
  // The delta's base (null for a base).
  const SnapshotView* base() const { return base_.get(); }
  // The dict's entries (base and delta together).
  uint64_t entry_count() const { return header_->total_entry_count; }
  // This segment's own table (below): its live entries, a delta's erased markers included.
  uint64_t own_entry_count() const { return header_->entry_count; }
  uint64_t bucket_count() const { return header_->bucket_count; }
  uint64_t tombstone_count() const { return header_->tombstone_count; }
  uint64_t live_bytes() const { return header_->live_bytes; }
  uint64_t entries_bytes() const { return header_->entries_bytes; }
  uint64_t bytes() const { return map_.size(); }

  // The dict's value for key. `hash` must be Hash64(key). A corrupted entry reads as missing
  // (bounds are checked).
  bool Find(std::string_view key, uint64_t hash, ValueView* out) const {
    if (const uint64_t at = FindOffset(key, hash, out); at != 0) return !IsErasedMarker(at);
    return base_ != nullptr && base_->Find(key, hash, out);
  }

  // Own table: offset (from the segment start) of key's entry (a delta's erased marker too), or 0
  // when missing; *value (optional) gets the entry's value.
  uint64_t FindOffset(std::string_view key, uint64_t hash, ValueView* value = nullptr) const {
    const uint64_t mask = header_->bucket_count - 1;
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    uint64_t i = hash & mask;
    for (uint64_t probes = 0; probes <= mask; ++probes, i = (i + 1) & mask) {
      const SnapshotBucket b = buckets_[i];
      if (b.entry_offset8 == 0) return 0;
      if (b.hash_tag != tag || b.entry_offset8 == kTombstoneOffset8) continue;
      std::string_view k;
      ValueView v;
      if (!EntryAt(uint64_t{b.entry_offset8} * 8, &k, &v)) return 0;
      if (k == key) {
        if (value != nullptr) *value = v;
        return uint64_t{b.entry_offset8} * 8;
      }
    }
    return 0;
  }

  // Every entry of the dict once: the delta's own values, then the base's entries the delta
  // does not hide.
  template <typename Fn>  // Fn(std::string_view key, ValueView value)
  void ForEach(Fn&& fn) const {
    ForEachOwn([&](std::string_view k, ValueView v, bool erased) {
      if (!erased) fn(k, v);
    });
    if (base_ == nullptr) return;
    // A base has no base of its own (Open checks): its own table is all of it. (Calling
    // base_->ForEach here would instantiate this template without end.)
    base_->ForEachOwn([&](std::string_view k, ValueView v, bool) {
      if (header_->entry_count == 0 || FindOffset(k, Hash64(k)) == 0) fn(k, v);
    });
  }

  // Own table, in entry order: every live entry, `erased` for a delta's erased markers.
  template <typename Fn>  // Fn(std::string_view key, ValueView value, bool erased)
  void ForEachOwn(Fn&& fn) const {
    OwnCursor at;
    std::string_view k;
    ValueView v;
    bool erased = false;
    while (NextOwn(&at, &k, &v, &erased)) fn(k, v, erased);
  }

  // A resumable walk over what ForEach visits, one entry per call, for a reader that hands the
  // dict out in pieces (a Watcher's snapshot chunks) and must not copy it whole. Valid for this
  // view only; holds no reference to it.
  struct Cursor {
    bool in_base = false;  // past the delta's own entries, walking its base's
    uint64_t offset = 0;   // own-table entry offset (0: not started)
    uint64_t live = 0;     // live entries passed in the current table
  };
  // The next entry ForEach would visit after those *cursor passed; false at the end.
  bool Next(Cursor* cursor, std::string_view* key, ValueView* value) const {
    bool erased = false;
    if (!cursor->in_base) {
      OwnCursor own{cursor->offset, cursor->live};
      while (NextOwn(&own, key, value, &erased)) {
        if (!erased) {
          cursor->offset = own.offset;
          cursor->live = own.live;
          return true;
        }
      }
      if (base_ == nullptr) {
        cursor->offset = own.offset;
        cursor->live = own.live;
        return false;
      }
      *cursor = Cursor{true, 0, 0};
    }
    OwnCursor own{cursor->offset, cursor->live};
    bool found = false;
    while (base_->NextOwn(&own, key, value, &erased)) {
      if (header_->entry_count == 0 || FindOffset(*key, Hash64(*key)) == 0) {
        found = true;
        break;
      }
    }
    cursor->offset = own.offset;
    cursor->live = own.live;
    return found;
  }

  static uint64_t EntrySize(uint64_t key_bytes, uint64_t value_bytes) {
    return (sizeof(SnapshotEntry) + key_bytes + value_bytes + 7) & ~uint64_t{7};
  }

 private:
  SnapshotView(Mapping map, Fd fd)
      : fd_(std::move(fd)),
        map_(std::move(map)),
        header_(reinterpret_cast<const SnapshotHeader*>(map_.data())),
        buckets_(reinterpret_cast<const SnapshotBucket*>(map_.data() + header_->buckets_offset)) {}

  // Own table, in bucket order, with each key's full hash (bucket tag and entry's low half): what
  // folding a delta into its base visits, without hashing a key again.
  template <typename Fn>  // Fn(std::string_view key, uint64_t hash, ValueView value, bool erased)
  void ForEachOwnWithHash(Fn&& fn) const {
    for (uint64_t i = 0; i < header_->bucket_count; ++i) {
      const SnapshotBucket b = buckets_[i];
      const uint64_t at = uint64_t{b.entry_offset8} * 8;
      if (b.entry_offset8 <= kTombstoneOffset8) continue;
      std::string_view k;
      ValueView v;
      if (!EntryAt(at, &k, &v)) continue;
      SnapshotEntry e;
      std::memcpy(&e, map_.data() + at, sizeof(e));
      fn(k, (uint64_t{b.hash_tag} << 32) | e.hash_low, v, (e.flags & kEntryErased) != 0);
    }
  }

  // A position in the own table's entry region: the offset of the next entry to look at (0: the
  // first) and the live entries passed.
  struct OwnCursor {
    uint64_t offset = 0;
    uint64_t live = 0;
  };
  // The own table's next live entry (dead ones skipped) after *at, advancing it; false at the end
  // (or at an entry out of bounds).
  bool NextOwn(OwnCursor* at, std::string_view* key, ValueView* value, bool* erased) const {
    if (at->offset == 0) at->offset = header_->entries_offset;
    const uint64_t end = header_->entries_offset + header_->entries_bytes;
    while (at->live < header_->entry_count && at->offset < end) {
      const uint64_t off = at->offset;
      if (!EntryAt(off, key, value)) return false;
      at->offset = off + EntrySize(key->size(), value->data.size());
      const uint8_t flags = map_.data()[off + offsetof(SnapshotEntry, flags)];
      if ((flags & kEntryDead) == 0) {
        *erased = (flags & kEntryErased) != 0;
        ++at->live;
        return true;
      }
    }
    return false;
  }

  bool IsErasedMarker(uint64_t off) const {
    return (map_.data()[off + offsetof(SnapshotEntry, flags)] & kEntryErased) != 0;
  }

  bool EntryAt(uint64_t off, std::string_view* key, ValueView* value) const {
    if (off + sizeof(SnapshotEntry) > map_.size()) return false;
    SnapshotEntry e;
    std::memcpy(&e, map_.data() + off, sizeof(e));
    if (off + sizeof(e) + e.key_bytes + e.value_bytes > map_.size()) return false;
    const char* p = reinterpret_cast<const char*>(map_.data() + off + sizeof(e));
    *key = std::string_view(p, e.key_bytes);
    *value =
        ValueView{static_cast<ValueType>(e.type), std::string_view(p + e.key_bytes, e.value_bytes)};
    return true;
  }

  // Writes one table: `base`'s own table (null: an empty one) with `delta` applied, patched or
  // rewritten (see Build). *header has everything but the table's shape.
  struct DeltaPlan;
  static DeltaPlan PlanDelta(const SnapshotView* base, const SnapshotDelta& delta);
  static Result<std::shared_ptr<const SnapshotView>> WriteTable(
      std::string_view dict, mode_t mode, const SnapshotView* base, const SnapshotDelta& delta,
      const DeltaPlan& plan, SnapshotHeader* header, const HeldSegmentSource* held);
  static Result<std::shared_ptr<const SnapshotView>> Patch(
      std::string_view dict, const std::string& segment, mode_t mode, const SnapshotView& base,
      const SnapshotDelta& delta, const DeltaPlan& plan, SnapshotHeader* header,
      const HeldSegmentSource* held);
  static Result<std::shared_ptr<const SnapshotView>> Rewrite(
      std::string_view dict, const std::string& segment, mode_t mode, const SnapshotView* base,
      const SnapshotDelta& delta, const DeltaPlan& plan, SnapshotHeader* header,
      const HeldSegmentSource* held);
  static std::shared_ptr<const SnapshotView> Seal(std::pair<Fd, Mapping> segment,
                                                  SnapshotHeader* header,
                                                  std::shared_ptr<const SnapshotView> base);

  Fd fd_;  // holds a shared flock for as long as the segment is mapped (released after munmap)
  Mapping map_;
  const SnapshotHeader* header_;
  const SnapshotBucket* buckets_;
  std::shared_ptr<const SnapshotView> base_;  // a delta's base; set once, before sharing
  bool built_here_ = false;                   // written by this process's builder: map_ is writable
};

uint64_t SnapshotHeaderChecksum(const SnapshotHeader& h);
uint64_t SnapshotDataChecksum(const uint8_t* segment, uint64_t total_bytes);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_SNAPSHOT_H_
