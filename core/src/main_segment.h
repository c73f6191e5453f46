// The main segment "/shmdict.NAME": its header's creation, validation and status. The log ring
// after the header is LogRing's (log_ring.h); the bytes are documented in docs/LAYOUT.md.
//
// Thread-safety: free functions, safe from any thread. Lifetime: the Mapping returned owns its
// mapping; MainHeader pointers into it are valid while it lives.
#ifndef SHMDICT_CORE_MAIN_SEGMENT_H_
#define SHMDICT_CORE_MAIN_SEGMENT_H_

#include <sys/types.h>

#include <cstdint>
#include <string_view>

#include "layout.h"
#include "segment.h"
#include "shmdict/status.h"

namespace shmdict {
// The public status of a dict (the facade's, shmdict/dict.h): this header only names it, so the
// engine does not depend on the facade; main_segment.cc, which fills it, includes its definition.
struct DictStatus;
}  // namespace shmdict

namespace shmdict::internal {

// Maps and validates an existing main segment (waiting up to a second for a concurrent creator
// to publish its ready word). kFailedPrecondition for another layout version; kDataLoss for a
// truncated, corrupted or never-initialized segment; never a crash.
Result<Mapping> MapExistingMainSegment(std::string_view name, int fd, bool writable);
// Writes a new header for a log of `capacity` bytes, the ready word last (creator only).
Status InitializeMainHeader(MainHeader* h, uint64_t capacity, mode_t mode, uint32_t user_flags);
// What the header says, for Inspect (no attach) and GetStatus (a handle) alike. `segment_fd` (any
// descriptor of the segment, read-only will do) answers whether a replica's feed is alive.
DictStatus StatusFromHeader(std::string_view name, const MainHeader& h, uint64_t segment_bytes,
                            int segment_fd);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_MAIN_SEGMENT_H_
