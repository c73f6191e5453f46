// Overlay: a handle's private record of the changes since the snapshot it maps, keyed by key.
//
// Why not std::unordered_map<std::string, ...>: its lookup walks bucket -> node -> the value's
// heap bytes, three dependent cache misses, and every new key costs two or three allocations. A
// read of a busy dict probes the overlay first, so that walk was the largest cost of both reads
// and writes (perf: 31% of a write-heavy run in _M_find_before_node). Here a lookup is one probe
// of a flat slot array that holds the full 64-bit hash (a mismatch never touches the entry) and
// one entry holding the key and value in a single allocation: two misses, the same as the shared
// snapshot index.
//
// Entries live in an arena of large chunks, not one malloc each: moving to a newer snapshot
// drops most of the overlay at once, and freeing tens of thousands of entries one by one was a
// pause of ~250 ns per entry under the write lock (perf: free + malloc_consolidate, 15% of a
// write-heavy run). Dropping now scans the slot array (which holds each entry's revision, so a
// dropped entry is never touched), copies the few survivors into a fresh arena and releases the
// old chunks wholesale. Overwrites that outgrow an entry leave the old one as garbage in the
// arena until the next drop, or a compaction once garbage exceeds the live bytes.
//
// Thread-safety: none (a handle's overlay is used by one thread). Lifetime: owns its entries;
// pointers returned by Find stay valid until the next non-const call.
#ifndef SHMDICT_CORE_OVERLAY_H_
#define SHMDICT_CORE_OVERLAY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "shmdict/value.h"

namespace shmdict::internal {

class Overlay {
 public:
  // One key's newest state: a value, or a tombstone hiding the snapshot's entry. Followed in the
  // same allocation by the key's bytes, then room for value_capacity value bytes.
  struct Entry {
    uint64_t revision;  // the revision that last changed the key
    uint32_t key_bytes;
    uint32_t value_bytes;
    uint32_t value_capacity;
    ValueType type;
    bool present;  // false: erased since the snapshot

    std::string_view key() const { return {reinterpret_cast<const char*>(this + 1), key_bytes}; }
    std::string_view value() const {
      return {reinterpret_cast<const char*>(this + 1) + key_bytes, value_bytes};
    }
    ValueView view() const { return {type, value()}; }
  };

  Overlay() = default;
  // A moved-from overlay is empty.
  Overlay(Overlay&& other) noexcept { *this = std::move(other); }
  Overlay& operator=(Overlay&& other) noexcept {
    if (this != &other) {
      slots_ = std::exchange(other.slots_, {});
      filter_ = std::exchange(other.filter_, {});
      filter_mask_ = std::exchange(other.filter_mask_, 0);
      mask_ = std::exchange(other.mask_, 0);
      size_ = std::exchange(other.size_, 0);
      arena_ = std::exchange(other.arena_, Arena());
      live_bytes_ = std::exchange(other.live_bytes_, 0);
      wiped_ = std::exchange(other.wiped_, true);
    }
    return *this;
  }
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // `hash` must be Hash64(key). nullptr when the overlay has no entry (present or not) for key.
  const Entry* Find(std::string_view key, uint64_t hash) const {
    if (size_ == 0 || !MayContain(hash)) return nullptr;
    for (size_t i = hash & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.entry == nullptr) return nullptr;
      if (s.hash == hash && s.entry->key() == key) return s.entry;
    }
  }

  // Makes key's entry hold `value` (present) or a tombstone (value == nullptr), as of
  // `revision`. Returns whether the overlay already had an entry for key, and if so whether it
  // was present, through *had_entry / *was_present.
  void Put(std::string_view key, uint64_t hash, uint64_t revision, const ValueView* value,
           bool* had_entry, bool* was_present);
  // Makes room for `keys` entries in all, so that inserting them never rehashes (a replay of a
  // long log would otherwise grow the slot array a dozen times, moving every entry each time).
  void Reserve(size_t keys);
  // Removes key's entry, if any.
  void Erase(std::string_view key, uint64_t hash);
  // Removes every entry. O(entries added since the last Clear), not O(capacity): see overlay.cc.
  void Clear();
  // Drops every entry changed at or before `revision` (they are in a newer snapshot). O(size).
  void DropUpTo(uint64_t revision);

  template <typename Fn>  // Fn(uint64_t hash, const Entry&)
  void ForEach(Fn&& fn) const {
    for (const Slot& s : slots_) {
      if (s.entry != nullptr) fn(s.hash, *s.entry);
    }
  }

 private:
  struct Slot {
    uint64_t hash;
    uint64_t revision;  // a copy of entry->revision: DropUpTo decides without touching the entry
    Entry* entry;       // nullptr: empty
    uint64_t bytes;     // the entry's arena bytes, for the same reason
  };
  // Bump allocation in chunks; released only all together. Released chunks of the standard size
  // are kept (up to kSpareChunks) for the next allocations: a writer's overlay empties at every
  // snapshot its handle moves onto and refills at once, and fresh memory costs a page fault per
  // 4 KiB on first touch (10-20 us on the shadow-paged VMs we measured).
  class Arena {
   public:
    void* Allocate(size_t bytes);
    size_t bytes() const { return bytes_; }
    // Forgets every allocation, keeping the chunks as spares.
    void Reset();
    // Takes `other`'s chunks as spares (after `other`'s entries were copied out).
    void AdoptChunks(Arena&& other);

   private:
    static constexpr size_t kSpareChunks = 32;  // 8 MiB
    void KeepSpare(std::unique_ptr<char[]> chunk, size_t chunk_bytes);

    std::vector<std::pair<std::unique_ptr<char[]>, size_t>> chunks_;  // with their sizes
    std::vector<std::unique_ptr<char[]>> spare_;                      // standard-size chunks
    char* next_ = nullptr;
    size_t left_ = 0;
    size_t bytes_ = 0;  // handed out
  };

  // A one-bit-per-hash filter, 16 bits per slot pair: a read of a key the overlay does not hold
  // (most reads, in a busy dict) costs a probe of this small, cache-resident array instead of a
  // cache miss in the slot array. Bits are set on insertion and cleared only when the slots are
  // rebuilt, so an erased key may still pass (a false positive costs the slot probe, nothing
  // more).
  bool MayContain(uint64_t hash) const {
    const uint64_t bit = (hash >> 32) & filter_mask_;
    return (filter_[bit / 64] >> (bit % 64)) & 1;
  }
  void AddToFilter(uint64_t hash) {
    wiped_ = false;
    const uint64_t bit = (hash >> 32) & filter_mask_;
    filter_[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  // Sizes the filter for the slot array and refills it from the slots.
  void RebuildFilter();
  Entry* NewEntry(std::string_view key, uint64_t value_bytes, uint64_t* bytes);
  // Doubles the slot array, or more, to at least min_capacity slots.
  void Grow(size_t min_capacity = 0);
  void EraseSlot(size_t i);
  // Moves the live entries into a fresh arena, leaving the garbage behind.
  void CompactArena();

  std::vector<Slot> slots_;  // power-of-two size, at most half full; empty until the first Put
  std::vector<uint64_t> filter_;
  uint64_t filter_mask_ = 0;
  size_t mask_ = 0;
  size_t size_ = 0;
  Arena arena_;
  size_t live_bytes_ = 0;  // arena bytes of the entries slots point at
  // No slot is used and no filter bit set since the last wipe: Clear has nothing to wipe. Every
  // slot is filled through AddToFilter's caller, so AddToFilter is where it turns false.
  bool wiped_ = true;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_OVERLAY_H_
