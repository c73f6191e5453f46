// LogRing: the change log, a ring of checksummed records in the main segment, addressed by
// monotonic 64-bit byte positions (as Aeron's log buffers). Records never straddle the ring's end
// (a padding record fills it). Each committed revision has exactly one record.
//
// The bytes of a record (its header, its body) are record_format.h's; this is where they sit.
// Readers copy a record out, then re-check that the writers have not reclaimed its bytes
// meanwhile (seqlock discipline on reclaim_position); a lapped read is reported, never parsed.
// Writers (holding the dict's write lock) advance reclaim_position before overwriting bytes.
//
// Thread-safety: Read may run concurrently with Write from any process; Write requires the
// dict's writer lock. The object only points into the mapping; it owns nothing.
#ifndef SHMDICT_CORE_LOG_RING_H_
#define SHMDICT_CORE_LOG_RING_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "layout.h"
#include "record_format.h"

namespace shmdict::internal {

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
