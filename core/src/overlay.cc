#include "overlay.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace shmdict::internal {

namespace {

// Small values grow in place when overwritten by slightly bigger ones.
constexpr uint64_t kMinValueCapacity = 16;

}  // namespace

Overlay::Overlay(Overlay&& other) noexcept
    : slots_(std::move(other.slots_)), mask_(other.mask_), size_(other.size_) {
  other.slots_.clear();
  other.mask_ = 0;
  other.size_ = 0;
}

Overlay& Overlay::operator=(Overlay&& other) noexcept {
  if (this != &other) {
    Clear();
    slots_ = std::move(other.slots_);
    mask_ = other.mask_;
    size_ = other.size_;
    other.slots_.clear();
    other.mask_ = 0;
    other.size_ = 0;
  }
  return *this;
}

Overlay::Entry* Overlay::NewEntry(std::string_view key, uint64_t value_bytes) {
  const uint64_t capacity = value_bytes < kMinValueCapacity ? kMinValueCapacity : value_bytes;
  void* memory = std::malloc(sizeof(Entry) + key.size() + capacity);
  if (memory == nullptr) throw std::bad_alloc();
  auto* e = new (memory) Entry{};
  e->key_bytes = static_cast<uint32_t>(key.size());
  e->value_capacity = static_cast<uint32_t>(capacity);
  std::memcpy(e + 1, key.data(), key.size());
  return e;
}

void Overlay::Grow() {
  std::vector<Slot> old = std::move(slots_);
  const size_t capacity = old.empty() ? 64 : old.size() * 2;
  slots_.assign(capacity, Slot{0, nullptr});
  mask_ = capacity - 1;
  for (const Slot& s : old) {
    if (s.entry == nullptr) continue;
    size_t i = s.hash & mask_;
    while (slots_[i].entry != nullptr) i = (i + 1) & mask_;
    slots_[i] = s;
  }
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
  Entry* replaced = nullptr;  // freed only after the copy: `value` may point into it
  if (slot.entry == nullptr) {
    slot = Slot{hash, NewEntry(key, value_bytes)};
    ++size_;
  } else if (value_bytes > slot.entry->value_capacity) {
    replaced = slot.entry;
    slot.entry = NewEntry(key, value_bytes);
  }
  Entry* e = slot.entry;
  e->revision = revision;
  e->present = value != nullptr;
  e->type = value != nullptr ? value->type : ValueType::kBytes;
  e->value_bytes = static_cast<uint32_t>(value_bytes);
  if (value_bytes != 0) {
    std::memmove(reinterpret_cast<char*>(e + 1) + e->key_bytes, value->data.data(), value_bytes);
  }
  std::free(replaced);
}

// Backward-shift deletion keeps linear probing free of tombstones: every entry after the hole
// that may move closer to its home slot does so.
void Overlay::EraseSlot(size_t hole) {
  std::free(slots_[hole].entry);
  slots_[hole] = Slot{0, nullptr};
  --size_;
  for (size_t j = (hole + 1) & mask_; slots_[j].entry != nullptr; j = (j + 1) & mask_) {
    const size_t home = slots_[j].hash & mask_;
    // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
    const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (stays) continue;
    slots_[hole] = slots_[j];
    slots_[j] = Slot{0, nullptr};
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

void Overlay::Clear() {
  for (Slot& s : slots_) std::free(s.entry);
  slots_.clear();
  mask_ = 0;
  size_ = 0;
}

void Overlay::DropUpTo(uint64_t revision) {
  // Rebuilt rather than erased in place: one pass, and the table shrinks with its contents.
  std::vector<Slot> old = std::move(slots_);
  slots_.clear();
  mask_ = 0;
  size_ = 0;
  size_t kept = 0;
  for (const Slot& s : old) kept += s.entry != nullptr && s.entry->revision > revision;
  if (kept != 0) {
    size_t capacity = 64;
    while (capacity < kept * 2) capacity *= 2;
    slots_.assign(capacity, Slot{0, nullptr});
    mask_ = capacity - 1;
  }
  for (const Slot& s : old) {
    if (s.entry == nullptr) continue;
    if (s.entry->revision <= revision) {
      std::free(s.entry);
      continue;
    }
    size_t i = s.hash & mask_;
    while (slots_[i].entry != nullptr) i = (i + 1) & mask_;
    slots_[i] = s;
    ++size_;
  }
}

}  // namespace shmdict::internal
