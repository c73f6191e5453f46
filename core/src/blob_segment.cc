#include "blob_segment.h"

#include <fcntl.h>

#include <atomic>
#include <cstring>
#include <new>

#include "crash_point.h"
#include "hash.h"
#include "layout.h"
#include "record_format.h"
#include "segment.h"

namespace shmdict::internal {

Result<BlobRef> WriteBlobSegment(std::string_view dict, uint64_t revision, std::string_view payload,
                                 mode_t mode) {
  auto blob = CreateSegment(BlobSegment(dict, revision), sizeof(BlobHeader) + payload.size(), mode,
                            /*replace_existing=*/true);
  if (!blob.ok()) return blob.status();
  uint8_t* base = blob->second.data();
  auto* bh = new (base) BlobHeader{};
  bh->magic = kBlobMagic;
  bh->header_size = sizeof(BlobHeader);
  bh->revision = revision;
  bh->payload_bytes = payload.size();
  bh->payload_checksum = Hash64(payload.data(), payload.size(), revision);
  std::memcpy(base + sizeof(BlobHeader), payload.data(), payload.size());
  bh->layout_version.store(kLayoutVersion, std::memory_order_release);
  return BlobRef{bh->payload_bytes, bh->payload_checksum};
}

BlobReadOutcome ReadBlobSegment(std::string_view dict, uint64_t revision,
                                std::string_view record_payload, std::string* out) {
  BlobRef ref;
  if (!DecodeBlobRef(record_payload, &ref)) return BlobReadOutcome::kCorrupt;
  auto fd = OpenSegment(BlobSegment(dict, revision), O_RDONLY, 0);
  if (!fd.ok()) return BlobReadOutcome::kGone;
  auto size = SegmentSize(fd->get());
  if (!size.ok() || *size != sizeof(BlobHeader) + ref.payload_bytes) {
    return BlobReadOutcome::kCorrupt;
  }
  auto blob = MapSegment(fd->get(), *size, false);
  if (!blob.ok()) return BlobReadOutcome::kCorrupt;
  const auto* bh = reinterpret_cast<const BlobHeader*>(blob->data());
  if (bh->magic != kBlobMagic ||
      bh->layout_version.load(std::memory_order_acquire) != kLayoutVersion ||
      bh->revision != revision || bh->payload_bytes != ref.payload_bytes) {
    return BlobReadOutcome::kCorrupt;
  }
  out->assign(reinterpret_cast<const char*>(blob->data() + sizeof(BlobHeader)), ref.payload_bytes);
  if (Hash64(out->data(), out->size(), revision) != ref.payload_checksum) {
    return BlobReadOutcome::kCorrupt;
  }
  return BlobReadOutcome::kOk;
}

void UnlinkUnneededBlobSegments(std::string_view dict, uint64_t covered, uint64_t committed) {
  for (const auto& [revision, segment] : ListNumberedSegments(std::string(dict) + "@b")) {
    if (revision <= covered || revision > committed) {
      UnlinkSegmentQuietly(segment);
      // Some of the unneeded large values unlinked, not all: the next sweep finds the rest.
      CrashPoint("blob.covered_value_unlinked");
    }
  }
}

}  // namespace shmdict::internal
