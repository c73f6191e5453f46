// Snapshot: an immutable, read-only hash index of a whole dict at one revision, in its own
// shared-memory segment that every process maps instead of parsing (DESIGN.md's "shape for big
// dicts"). Attaching costs one mmap whatever the dict's size, and N processes share one copy.
//
// Thread-safety: a SnapshotView is immutable after Open/Build and safe to share between threads
// (handles hold it by shared_ptr so a background builder can keep reading a view the handle has
// moved past). Lifetime: the mapping lives as long as the view, even after the segment's name is
// unlinked by a newer snapshot.
#ifndef SHMDICT_CORE_SNAPSHOT_H_
#define SHMDICT_CORE_SNAPSHOT_H_

#include <sys/types.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "layout.h"
#include "segment.h"
#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict::internal {

using EntryVisitor = std::function<void(std::string_view key, ValueView value)>;

// The changes a new snapshot applies on top of its base: Visit calls fn once per changed key with
// the key's Hash64 and its new value, or nullptr when the key was erased.
struct SnapshotDelta {
  using Fn = std::function<void(std::string_view key, uint64_t hash, const ValueView* value)>;
  std::function<void(const Fn&)> visit;
};

class SnapshotView {
 public:
  // Maps segment `dict@s<generation>` read-only and checks its header (not its contents: that
  // would make every attach O(dict size) and touch every page; see VerifyContents). kNotFound if
  // the name is gone (a newer snapshot replaced it: retry with the newer generation); kDataLoss /
  // kFailedPrecondition if it is truncated, corrupted or of another layout version.
  static Result<std::shared_ptr<const SnapshotView>> Open(std::string_view dict,
                                                          uint64_t generation);
  // Writes a new snapshot segment `dict@s<generation>` holding `base` (null: nothing) with
  // `delta` applied, describing the dict at `revision` / `log_position`. O(base + delta), with the
  // base walked in bucket order and no key hashed again, so the copy is close to sequential.
  static Result<std::shared_ptr<const SnapshotView>> Build(std::string_view dict,
                                                           uint64_t generation, uint64_t revision,
                                                           uint64_t log_position, mode_t mode,
                                                           const SnapshotView* base,
                                                           const SnapshotDelta& delta);

  // Checks the contents against the checksum the builder stored: kDataLoss on a mismatch. O(size):
  // run on an explicit forced reload, not on every mapping. Snapshots are mapped read-only by all
  // but their builder, so a stray write from a buggy attacher faults instead of corrupting one;
  // reads bounds-check every entry, so even tampered contents cannot crash a reader.
  Status VerifyContents(std::string_view dict) const;

  uint64_t generation() const { return header_->generation; }
  uint64_t revision() const { return header_->revision; }
  uint64_t log_position() const { return header_->log_position; }
  uint64_t entry_count() const { return header_->entry_count; }
  uint64_t entries_bytes() const { return header_->entries_bytes; }
  uint64_t bytes() const { return map_.size(); }

  // `hash` must be Hash64(key). A corrupted entry reads as missing (bounds are checked).
  bool Find(std::string_view key, uint64_t hash, ValueView* out) const {
    const uint64_t mask = header_->bucket_count - 1;
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    uint64_t i = hash & mask;
    for (uint64_t probes = 0; probes <= mask; ++probes, i = (i + 1) & mask) {
      const SnapshotBucket b = buckets_[i];
      if (b.entry_offset8 == 0) return false;
      if (b.hash_tag != tag) continue;
      std::string_view k;
      ValueView v;
      if (!EntryAt(uint64_t{b.entry_offset8} * 8, &k, &v)) return false;
      if (k == key) {
        *out = v;
        return true;
      }
    }
    return false;
  }

  template <typename Fn>  // Fn(std::string_view key, ValueView value)
  void ForEach(Fn&& fn) const {
    uint64_t off = header_->entries_offset;
    const uint64_t end = off + header_->entries_bytes;
    for (uint64_t n = 0; n < header_->entry_count && off < end; ++n) {
      std::string_view k;
      ValueView v;
      if (!EntryAt(off, &k, &v)) return;
      fn(k, v);
      off += EntrySize(k.size(), v.data.size());
    }
  }

  // Offset (from the segment start) of key's entry, or 0 when missing.
  uint64_t FindOffset(std::string_view key, uint64_t hash) const {
    const uint64_t mask = header_->bucket_count - 1;
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    uint64_t i = hash & mask;
    for (uint64_t probes = 0; probes <= mask; ++probes, i = (i + 1) & mask) {
      const SnapshotBucket b = buckets_[i];
      if (b.entry_offset8 == 0) return 0;
      if (b.hash_tag != tag) continue;
      std::string_view k;
      ValueView v;
      if (!EntryAt(uint64_t{b.entry_offset8} * 8, &k, &v)) return 0;
      if (k == key) return uint64_t{b.entry_offset8} * 8;
    }
    return 0;
  }

  static uint64_t EntrySize(uint64_t key_bytes, uint64_t value_bytes) {
    return (sizeof(SnapshotEntry) + key_bytes + value_bytes + 7) & ~uint64_t{7};
  }

 private:
  SnapshotView(Mapping map)
      : map_(std::move(map)),
        header_(reinterpret_cast<const SnapshotHeader*>(map_.data())),
        buckets_(reinterpret_cast<const SnapshotBucket*>(map_.data() + header_->buckets_offset)) {}

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

  friend class SnapshotWriter;
  Mapping map_;
  const SnapshotHeader* header_;
  const SnapshotBucket* buckets_;
};

uint64_t SnapshotHeaderChecksum(const SnapshotHeader& h);
uint64_t SnapshotDataChecksum(const uint8_t* segment, uint64_t total_bytes);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_SNAPSHOT_H_
