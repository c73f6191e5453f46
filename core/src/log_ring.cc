#include "log_ring.h"

#include <atomic>
#include <cstring>

namespace shmdict::internal {
namespace {

// A seqlock read races with a writer lapping the reader by design: the bytes may be torn, and
// the reclaim_position check after the copy throws them away. ThreadSanitizer cannot know that
// protocol, so the copy is excluded from its instrumentation (and only the copy).
__attribute__((no_sanitize("thread"))) void RacyCopy(void* dst, const void* src, size_t n) {
  auto* d = static_cast<volatile uint8_t*>(dst);
  const auto* s = static_cast<const volatile uint8_t*>(src);
  // 8-byte steps where possible: records and their positions are 32-byte aligned.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    *reinterpret_cast<volatile uint64_t*>(d + i) =
        *reinterpret_cast<const volatile uint64_t*>(s + i);
  }
  for (; i < n; ++i) d[i] = s[i];
}

}  // namespace

LogRing::ReadResult LogRing::Read(uint64_t position, RecordHeader* h, std::string* payload) const {
  auto lapped = [&] {
    std::atomic_thread_fence(std::memory_order_acquire);
    return position < header_->commit.reclaim_position.load(std::memory_order_relaxed);
  };
  const uint64_t off = position & mask_;
  RacyCopy(h, ring_ + off, sizeof(*h));
  if (!RecordFramed(*h, position, capacity_ - off)) {
    return lapped() ? ReadResult::kLapped : ReadResult::kCorrupt;
  }
  if (IsPadding(*h)) {
    payload->clear();
  } else {
    payload->resize(RecordBodyBytes(*h));
    RacyCopy(payload->data(), ring_ + off + sizeof(*h), payload->size());
  }
  if (lapped()) return ReadResult::kLapped;
  switch (CheckRecord(*h, *payload)) {
    case RecordCheck::kChange:
    case RecordCheck::kExternal:
      return ReadResult::kRecord;
    case RecordCheck::kPadding:
      return ReadResult::kPadding;
    case RecordCheck::kInvalid:
      return ReadResult::kCorrupt;
  }
  return ReadResult::kCorrupt;
}

uint64_t LogRing::SpaceNeeded(uint64_t tail, uint64_t payload_bytes) const {
  const uint64_t len = RecordLength(payload_bytes);
  const uint64_t room = capacity_ - (tail & mask_);
  return room < len ? room + len : len;
}

uint64_t LogRing::Write(uint64_t tail, uint64_t revision, RecordKind kind,
                        std::string_view payload) {
  const uint64_t len = RecordLength(payload.size());
  const uint64_t end = tail + SpaceNeeded(tail, payload.size());
  // Publish the reclaim before touching the bytes: a reader that copies any overwritten byte is
  // then guaranteed (by the fences pairing) to see the new reclaim_position and discard its copy.
  if (end > capacity_) {
    const uint64_t reclaim = end - capacity_;
    if (reclaim > header_->commit.reclaim_position.load(std::memory_order_relaxed)) {
      header_->commit.reclaim_position.store(reclaim, std::memory_order_relaxed);
    }
  }
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t room = capacity_ - (tail & mask_);
  if (room < len) {
    const RecordHeader pad = EncodePaddingHeader(tail, room);
    std::memcpy(ring_ + (tail & mask_), &pad, sizeof(pad));
    tail += room;
  }
  const RecordHeader h = EncodeRecordHeader(tail, revision, kind, payload);
  uint8_t* dst = ring_ + (tail & mask_);
  std::memcpy(dst, &h, sizeof(h));
  std::memcpy(dst + sizeof(h), payload.data(), payload.size());
  return tail + len;
}

}  // namespace shmdict::internal
