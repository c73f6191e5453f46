// Large-value segments "/shmdict.NAME@b<revision>": a change too big for a quarter of the log is
// written once into a segment of its own, and the log record carries only a BlobRef. The bytes
// (BlobHeader, then the record's payload) are documented in docs/LAYOUT.md.
//
// Thread-safety: free functions, safe from any thread of any process.
#ifndef SHMDICT_CORE_BLOB_SEGMENT_H_
#define SHMDICT_CORE_BLOB_SEGMENT_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "shmdict/status.h"

namespace shmdict::internal {

// What a kExternal log record holds: the payload's size and checksum.
struct BlobRef {
  uint64_t payload_bytes = 0;
  uint64_t payload_checksum = 0;
};
static_assert(sizeof(BlobRef) == 16, "a kExternal record's payload: bump kLayoutVersion");

// Writes the payload of `revision` into its segment (replacing one a dead writer left for the
// same, never committed, revision). kResourceExhausted when /dev/shm is full.
Result<BlobRef> WriteBlobSegment(std::string_view dict, uint64_t revision, std::string_view payload,
                                 mode_t mode);

enum class BlobReadOutcome {
  kOk,
  kGone,     // unlinked: a snapshot at or after its revision replaced it
  kCorrupt,  // the record's reference and the segment disagree, or the bytes fail the checksum
};
// Reads the payload a kExternal record (`record_payload`, a BlobRef's bytes) refers to into *out.
BlobReadOutcome ReadBlobSegment(std::string_view dict, uint64_t revision,
                                std::string_view record_payload, std::string* out);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_BLOB_SEGMENT_H_
