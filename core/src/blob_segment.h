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

#include "layout.h"
#include "shmdict/status.h"

namespace shmdict::internal {

// Writes the payload of `revision` into its segment (replacing one a dead writer left for the
// same, never committed, revision). kResourceExhausted when /dev/shm is full.
Result<BlobRef> WriteBlobSegment(std::string_view dict, uint64_t revision, std::string_view payload,
                                 mode_t mode);

enum class BlobReadOutcome {
  kOk,
  kGone,     // unlinked: a snapshot at or after its revision replaced it
  kCorrupt,  // the record's reference and the segment disagree, or the bytes fail the checksum
};
// Reads the payload a kExternal record's body (`record_payload`, a BlobRef's bytes) refers to
// into *out.
BlobReadOutcome ReadBlobSegment(std::string_view dict, uint64_t revision,
                                std::string_view record_payload, std::string* out);

// Unlinks the large-value segments of `dict` that no reader needs: those of revisions up to
// `covered` (a published snapshot at that revision holds their changes; a reader that still
// looks for one gets kGone and loads it) and those above `committed` (written by a writer that
// died before its commit; the next writer of that revision would replace it, but a small change
// does not). Only the writer lock's holder knows that nothing above `committed` is being written:
// others pass UINT64_MAX. Idempotent: the sweep after a publication, and the repair after a dead
// writer, which finishes the sweep of a publisher killed before it.
void UnlinkUnneededBlobSegments(std::string_view dict, uint64_t covered, uint64_t committed);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_BLOB_SEGMENT_H_
