#include "overlay.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "pass_counter.h"

namespace shmdict::internal {

namespace {

// Small values grow in place when overwritten by slightly bigger ones.
constexpr uint64_t kMinValueCapacity = 16;
constexpr size_t kChunkBytes = 256 * 1024;

size_t EntryBytes(size_t key_bytes, uint64_t value_capacity) {
  return (sizeof(Overlay::Entry) + key_bytes + value_capacity + 7) & ~size_t{7};
}

}  // namespace

void* Overlay::Arena::Allocate(size_t bytes) {
  if (bytes > left_) {
    // An entry bigger than a chunk gets a chunk of its own; the current chunk stays current.
    if (bytes > kChunkBytes / 4) {
      chunks_.emplace_back(std::make_unique<char[]>(bytes), bytes);
      bytes_ += bytes;
      return chunks_.back().first.get();
    }
    if (spare_.empty()) {
      chunks_.emplace_back(std::make_unique<char[]>(kChunkBytes), kChunkBytes);
    } else {
      chunks_.emplace_back(std::move(spare_.back()), kChunkBytes);
      spare_.pop_back();
    }
    next_ = chunks_.back().first.get();
    left_ = kChunkBytes;
  }
  void* out = next_;
  next_ += bytes;
  left_ -= bytes;
  bytes_ += bytes;
  return out;
}

void Overlay::Arena::KeepSpare(std::unique_ptr<char[]> chunk, size_t chunk_bytes) {
  if (chunk_bytes == kChunkBytes && spare_.size() < kSpareChunks)
    spare_.push_back(std::move(chunk));
}

void Overlay::Arena::Reset() {
  for (auto& [chunk, chunk_bytes] : chunks_) KeepSpare(std::move(chunk), chunk_bytes);
  chunks_.clear();
  next_ = nullptr;
  left_ = 0;
  bytes_ = 0;
}

void Overlay::Arena::AdoptChunks(Arena&& other) {
  other.Reset();
  for (auto& chunk : other.spare_) KeepSpare(std::move(chunk), kChunkBytes);
  other.spare_.clear();
}

Overlay::Entry* Overlay::NewEntry(std::string_view key, uint64_t value_bytes, uint64_t* bytes) {
  const uint64_t capacity = value_bytes < kMinValueCapacity ? kMinValueCapacity : value_bytes;
  *bytes = EntryBytes(key.size(), capacity);
  auto* e = new (arena_.Allocate(*bytes)) Entry{};
  e->key_bytes = static_cast<uint32_t>(key.size());
  e->value_capacity = static_cast<uint32_t>(*bytes - sizeof(Entry) - key.size());
  std::memcpy(e + 1, key.data(), key.size());
  live_bytes_ += *bytes;
  return e;
}

void Overlay::RebuildFilter() {
  const uint64_t bits = slots_.size() * 8;  // slots are at most half full: 16 bits per entry
  filter_.assign(bits / 64, 0);
  filter_mask_ = bits - 1;
  for (const Slot& s : slots_) {
    if (s.entry != nullptr) AddToFilter(s.hash);
  }
}

void Overlay::Reserve(size_t keys) {
  if (keys * 2 > slots_.size()) Grow(keys * 2);
}

void Overlay::Grow(size_t min_capacity) {
  std::vector<Slot> old = std::move(slots_);
  size_t capacity = old.empty() ? 64 : old.size() * 2;
  while (capacity < min_capacity) capacity *= 2;
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  for (const Slot& s : old) {
    if (s.entry == nullptr) continue;
    size_t i = s.hash & mask_;
    while (slots_[i].entry != nullptr) i = (i + 1) & mask_;
    slots_[i] = s;
  }
  RebuildFilter();
}

void Overlay::Put(std::string_view key, uint64_t hash, uint64_t revision, const ValueView* value,
                  bool* had_entry, bool* was_present) {
  if ((size_ + 1) * 2 > slots_.size()) Grow();
  size_t i = hash & mask_;
  for (; slots_[i].entry != nullptr; i = (i + 1) & mask_) {
    if (slots_[i].hash == hash && slots_[i].entry->key() == key) break;
  }
  Slot& slot = slots_[i];
  const uint64_t value_bytes = value != nullptr ? value->data.size() : 0;
  *had_entry = slot.entry != nullptr;
  *was_present = *had_entry && slot.entry->present;
  if (slot.entry == nullptr) {
    AddToFilter(hash);
    slot.hash = hash;
    slot.entry = NewEntry(key, value_bytes, &slot.bytes);
    ++size_;
  } else if (value_bytes > slot.entry->value_capacity) {
    // The outgrown entry stays in the arena (garbage) until a compaction: `value` may point into
    // it, and it is copied from below.
    live_bytes_ -= slot.bytes;
    slot.entry = NewEntry(key, value_bytes, &slot.bytes);
  }
  slot.revision = revision;
  Entry* e = slot.entry;
  e->revision = revision;
  e->present = value != nullptr;
  e->type = value != nullptr ? value->type : ValueType::kBytes;
  e->value_bytes = static_cast<uint32_t>(value_bytes);
  if (value_bytes != 0) {
    std::memmove(reinterpret_cast<char*>(e + 1) + e->key_bytes, value->data.data(), value_bytes);
  }
  // Garbage beyond the live bytes (and a floor, so small overlays never bother) is compacted.
  if (arena_.bytes() > 2 * live_bytes_ + (size_t{4} << 20)) CompactArena();
}

// Backward-shift deletion keeps linear probing free of tombstones: every entry after the hole
// that may move closer to its home slot does so.
void Overlay::EraseSlot(size_t hole) {
  live_bytes_ -= slots_[hole].bytes;
  slots_[hole] = Slot{};
  --size_;
  for (size_t j = (hole + 1) & mask_; slots_[j].entry != nullptr; j = (j + 1) & mask_) {
    const size_t home = slots_[j].hash & mask_;
    // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    slots_[j] = Slot{};
    hole = j;
  }
}

void Overlay::Erase(std::string_view key, uint64_t hash) {
  if (size_ == 0) return;
  for (size_t i = hash & mask_; slots_[i].entry != nullptr; i = (i + 1) & mask_) {
    if (slots_[i].hash == hash && slots_[i].entry->key() == key) {
      EraseSlot(i);
      return;
    }
  }
}

// The arena's chunks keep their memory (see Arena), and so do the slot array and the filter unless
// they were sparse: an overlay holds at most a log's worth of changes, so what it keeps is bounded
// by the log, not the dict.
void Overlay::Clear() {
  // Wiping the slot array and the filter costs their capacity, which never shrinks: a batch of
  // many clears would pay it once per clear. An overlay already wiped is not wiped again, and a
  // sparse one gives its arrays up instead (the next Put grows a small one), so a clear costs at
  // most a few times the entries that the puts since the last one added.
  if (!wiped_) {
    if (size_ * 8 >= slots_.size()) {
      ++whole_dict_passes;
      std::fill(slots_.begin(), slots_.end(), Slot{});
      std::fill(filter_.begin(), filter_.end(), 0);
    } else {
      slots_ = {};
      filter_ = {};
      mask_ = 0;
      filter_mask_ = 0;
    }
    wiped_ = true;
  }
  size_ = 0;
  arena_.Reset();
  live_bytes_ = 0;
}

void Overlay::DropUpTo(uint64_t revision) {
  // Only the slot array is rebuilt, in place: dropped entries become arena garbage, never
  // touched.
  std::vector<Slot> kept;
  for (const Slot& s : slots_) {
    if (s.entry == nullptr) continue;
    if (s.revision > revision) {
      kept.push_back(s);
    } else {
      live_bytes_ -= s.bytes;
    }
  }
  if (kept.empty()) {
    Clear();
    return;
  }
  std::fill(slots_.begin(), slots_.end(), Slot{});
  size_ = 0;
  for (const Slot& s : kept) {
    size_t i = s.hash & mask_;
    while (slots_[i].entry != nullptr) i = (i + 1) & mask_;
    slots_[i] = s;
    ++size_;
  }
  RebuildFilter();
  if (arena_.bytes() > 2 * live_bytes_ + (size_t{4} << 20)) CompactArena();
}

void Overlay::CompactArena() {
  Arena old_arena = std::move(arena_);  // its chunks become spares once the entries are copied
  arena_ = Arena();
  live_bytes_ = 0;
  for (Slot& s : slots_) {
    if (s.entry == nullptr) continue;
    const Entry& e = *s.entry;
    Entry* copy = NewEntry(e.key(), e.value_bytes, &s.bytes);
    const uint32_t capacity = copy->value_capacity;
    std::memcpy(static_cast<void*>(copy), &e, sizeof(Entry) + e.key_bytes + e.value_bytes);
    copy->value_capacity = capacity;
    s.entry = copy;
  }
  arena_.AdoptChunks(std::move(old_arena));
}

}  // namespace shmdict::internal
