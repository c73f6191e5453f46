#include "log_ring.h"

#include <atomic>

#include "hash.h"

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

void AppendOp(const OpRef& op, std::string* payload) {
  OpHeader h{};
  h.op = static_cast<uint8_t>(op.op);
  h.type = static_cast<uint8_t>(op.type);
  h.key_bytes = static_cast<uint32_t>(op.key.size());
  h.value_bytes = static_cast<uint32_t>(op.value.size());
  payload->append(reinterpret_cast<const char*>(&h), sizeof(h));
  payload->append(op.key);
  payload->append(op.value);
}

void AppendRetireChild(std::string_view child, std::string* payload) {
  OpHeader h{};
  h.op = kRetireChildOp;
  h.type = static_cast<uint8_t>(ValueType::kNestedDict);
  h.value_bytes = static_cast<uint32_t>(child.size());
  payload->append(reinterpret_cast<const char*>(&h), sizeof(h));
  payload->append(child);
}

uint64_t RecordChecksum(const RecordHeader& h, std::string_view payload) {
  const uint64_t seed =
      h.position ^ (h.revision * 0x9E3779B97F4A7C15ull) ^ (uint64_t{h.length} << 8) ^ h.kind;
  return Hash64(payload.data(), payload.size(), seed);
}

LogRing::ReadResult LogRing::Read(uint64_t position, RecordHeader* h, std::string* payload) const {
  auto lapped = [&] {
    std::atomic_thread_fence(std::memory_order_acquire);
    return position < header_->commit.reclaim_position.load(std::memory_order_relaxed);
  };
  const uint64_t off = position & mask_;
  RacyCopy(h, ring_ + off, sizeof(*h));
  const uint64_t room = capacity_ - off;
  if (h->position != position || h->length < sizeof(RecordHeader) ||
      RecordLength(h->length - sizeof(RecordHeader)) > room) {
    return lapped() ? ReadResult::kLapped : ReadResult::kCorrupt;
  }
  const uint64_t payload_bytes = h->length - sizeof(RecordHeader);
  if (h->kind == static_cast<uint8_t>(RecordKind::kPadding)) {
    payload->clear();
  } else {
    payload->resize(payload_bytes);
    RacyCopy(payload->data(), ring_ + off + sizeof(*h), payload_bytes);
  }
  if (lapped()) return ReadResult::kLapped;
  if (h->kind == static_cast<uint8_t>(RecordKind::kPadding)) {
    return h->revision == 0 ? ReadResult::kPadding : ReadResult::kCorrupt;
  }
  if (h->kind != static_cast<uint8_t>(RecordKind::kChange) &&
      h->kind != static_cast<uint8_t>(RecordKind::kExternal)) {
    return ReadResult::kCorrupt;
  }
  if (RecordChecksum(*h, *payload) != h->checksum) return ReadResult::kCorrupt;
  return ReadResult::kRecord;
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
    RecordHeader pad{};
    pad.position = tail;
    pad.length = static_cast<uint32_t>(room);
    pad.kind = static_cast<uint8_t>(RecordKind::kPadding);
    pad.checksum = RecordChecksum(pad, {});
    std::memcpy(ring_ + (tail & mask_), &pad, sizeof(pad));
    tail += room;
  }
  RecordHeader h{};
  h.position = tail;
  h.revision = revision;
  h.length = static_cast<uint32_t>(sizeof(h) + payload.size());
  h.kind = static_cast<uint8_t>(kind);
  h.checksum = RecordChecksum(h, payload);
  uint8_t* dst = ring_ + (tail & mask_);
  std::memcpy(dst, &h, sizeof(h));
  std::memcpy(dst + sizeof(h), payload.data(), payload.size());
  return tail + len;
}

}  // namespace shmdict::internal
