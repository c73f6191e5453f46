// LogRing: the change log, a ring of checksummed records in the main segment, addressed by
// monotonic 64-bit byte positions (as Aeron's log buffers). Records never straddle the ring's end
// (a padding record fills it). Each committed revision has exactly one record.
//
// Readers copy a record out, then re-check that the writers have not reclaimed its bytes
// meanwhile (seqlock discipline on reclaim_position); a lapped read is reported, never parsed.
// Writers (holding the dict's write lock) advance reclaim_position before overwriting bytes.
//
// Thread-safety: Read may run concurrently with Write from any process; Write requires the
// dict's writer lock. The object only points into the mapping; it owns nothing.
#ifndef SHMDICT_CORE_LOG_RING_H_
#define SHMDICT_CORE_LOG_RING_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "layout.h"
#include "shmdict/dict.h"

namespace shmdict::internal {

// One operation of a change record; views into caller-owned bytes.
struct OpRef {
  ChangeOp op = ChangeOp::kSet;
  ValueType type = ValueType::kBytes;
  std::string_view key;
  std::string_view value;
};

// Op code of a "retire nested child" marker: not a ChangeOp, and ForEachOp never shows it. A
// change that drops the last reference to a nested child carries one in the same record, naming
// the child (the op's value), so that a writer killed between its commit and unlinking the child
// leaves the intent in the log, and the next lock holder's repair finishes it.
inline constexpr uint8_t kRetireChildOp = 0x80;

inline uint64_t OpsPayloadBytes(std::string_view key, std::string_view value) {
  return sizeof(OpHeader) + key.size() + value.size();
}
void AppendOp(const OpRef& op, std::string* payload);
void AppendRetireChild(std::string_view child, std::string* payload);

// Calls fn(const OpRef&) for each change op (never for retire markers); false if the payload is
// malformed.
template <typename Fn>
bool ForEachOp(std::string_view payload, Fn&& fn) {
  while (!payload.empty()) {
    if (payload.size() < sizeof(OpHeader)) return false;
    OpHeader h;
    std::memcpy(&h, payload.data(), sizeof(h));
    payload.remove_prefix(sizeof(h));
    if (uint64_t{h.key_bytes} + h.value_bytes > payload.size()) return false;
    const std::string_view key = payload.substr(0, h.key_bytes);
    const std::string_view value = payload.substr(h.key_bytes, h.value_bytes);
    payload.remove_prefix(uint64_t{h.key_bytes} + h.value_bytes);
    if (h.op == kRetireChildOp) continue;
    if (h.op < static_cast<uint8_t>(ChangeOp::kSet) ||
        h.op > static_cast<uint8_t>(ChangeOp::kClear)) {
      return false;
    }
    fn(OpRef{static_cast<ChangeOp>(h.op), static_cast<ValueType>(h.type), key, value});
  }
  return true;
}

// Calls fn(std::string_view child) for each retire marker of a well-formed payload.
template <typename Fn>
void ForEachRetiredChild(std::string_view payload, Fn&& fn) {
  while (payload.size() >= sizeof(OpHeader)) {
    OpHeader h;
    std::memcpy(&h, payload.data(), sizeof(h));
    payload.remove_prefix(sizeof(h));
    if (uint64_t{h.key_bytes} + h.value_bytes > payload.size()) return;
    if (h.op == kRetireChildOp) fn(payload.substr(h.key_bytes, h.value_bytes));
    payload.remove_prefix(uint64_t{h.key_bytes} + h.value_bytes);
  }
}

inline uint64_t RecordLength(uint64_t payload_bytes) {
  return (sizeof(RecordHeader) + payload_bytes + kRecordAlign - 1) & ~uint64_t{kRecordAlign - 1};
}

uint64_t RecordChecksum(const RecordHeader& h, std::string_view payload);

class LogRing {
 public:
  LogRing() = default;
  LogRing(MainHeader* header, uint8_t* ring, uint64_t capacity)
      : header_(header), ring_(ring), capacity_(capacity), mask_(capacity - 1) {}

  uint64_t capacity() const { return capacity_; }

  enum class ReadResult { kRecord, kPadding, kLapped, kCorrupt };
  // Copies the record at `position` (header into *h, payload into *payload). kLapped: its bytes
  // may have been overwritten, reload from a snapshot. kCorrupt: not lapped, and still invalid.
  ReadResult Read(uint64_t position, RecordHeader* h, std::string* payload) const;

  // Bytes a record with this payload consumes at `tail`, padding included.
  uint64_t SpaceNeeded(uint64_t tail, uint64_t payload_bytes) const;
  // Writes the record (and padding before it if needed) at `tail`; returns the new tail.
  // The caller checked SpaceNeeded against the published snapshot's position and holds the lock.
  uint64_t Write(uint64_t tail, uint64_t revision, RecordKind kind, std::string_view payload);

 private:
  MainHeader* header_ = nullptr;
  uint8_t* ring_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_LOG_RING_H_
