#include "snapshot.h"

#include <fcntl.h>

#include <bit>
#include <vector>

#include "hash.h"

namespace shmdict::internal {

uint64_t SnapshotHeaderChecksum(const SnapshotHeader& h) {
  // Fields are hashed one by one: the atomic ready word is not part of the checksum.
  const uint64_t fields[] = {h.magic,          h.header_size,   h.generation,   h.revision,
                             h.log_position,   h.entry_count,   h.bucket_count, h.buckets_offset,
                             h.entries_offset, h.entries_bytes, h.total_bytes};
  return Hash64(fields, sizeof(fields), kSnapshotMagic);
}

uint64_t SnapshotDataChecksum(const uint8_t* segment, uint64_t total_bytes) {
  return Hash64(segment + sizeof(SnapshotHeader), total_bytes - sizeof(SnapshotHeader),
                kSnapshotMagic);
}

Result<std::shared_ptr<const SnapshotView>> SnapshotView::Open(std::string_view dict,
                                                               uint64_t generation) {
  const std::string segment = SnapshotSegment(dict, generation);
  auto fd = OpenSegment(segment, O_RDONLY, 0);
  if (!fd.ok()) return fd.status();
  auto size = SegmentSize(fd->get());
  if (!size.ok()) return size.status();
  auto corrupt = [&](const std::string& why) {
    return Status(StatusCode::kDataLoss, "dict '" + std::string(dict) + "': snapshot segment '" +
                                             segment + "' " + why + ": unlink the dict");
  };
  if (*size < sizeof(SnapshotHeader)) return corrupt("is truncated");
  auto map = MapSegment(fd->get(), *size, false);
  if (!map.ok()) return map.status();
  const auto* h = reinterpret_cast<const SnapshotHeader*>(map->data());
  if (h->magic != kSnapshotMagic) return corrupt("has a wrong magic number");
  const uint32_t version = h->layout_version.load(std::memory_order_acquire);
  if (version != kLayoutVersion) {
    if (version == 0) return corrupt("was never finished");
    return Status(StatusCode::kFailedPrecondition,
                  "dict '" + std::string(dict) + "' snapshot has layout version " +
                      std::to_string(version) + ", this build reads " +
                      std::to_string(kLayoutVersion) + ": upgrade or unlink it");
  }
  if (h->header_checksum != SnapshotHeaderChecksum(*h)) return corrupt("has a corrupted header");
  if (h->total_bytes != *size) return corrupt("is truncated");
  const uint64_t buckets_end = h->buckets_offset + h->bucket_count * sizeof(SnapshotBucket);
  if (h->total_bytes != *size || h->bucket_count == 0 || !std::has_single_bit(h->bucket_count) ||
      h->buckets_offset < sizeof(SnapshotHeader) || buckets_end > h->entries_offset ||
      h->entries_offset + h->entries_bytes > *size || h->generation != generation) {
    return corrupt("has inconsistent sizes");
  }
  return std::shared_ptr<const SnapshotView>(new SnapshotView(std::move(*map)));
}

Status SnapshotView::VerifyContents(std::string_view dict) const {
  if (SnapshotDataChecksum(map_.data(), map_.size()) == header_->data_checksum) return Status::Ok();
  return Status(StatusCode::kDataLoss,
                "dict '" + std::string(dict) + "': snapshot segment '" +
                    SnapshotSegment(dict, generation()) +
                    "' has corrupted contents (checksum mismatch): unlink the dict");
}

Result<std::shared_ptr<const SnapshotView>> SnapshotView::Build(
    std::string_view dict, uint64_t generation, uint64_t revision, uint64_t log_position,
    mode_t mode, const SnapshotView* base, const SnapshotDelta& delta) {
  // First the delta alone: which base entries it replaces or erases (a bitmap over the base's
  // entry offsets, so the base walk below needs no lookup per entry) and the resulting sizes.
  std::vector<uint64_t> shadowed;
  uint64_t count = 0;
  uint64_t entries_bytes = 0;
  if (base != nullptr) {
    shadowed.assign(base->map_.size() / 8 / 64 + 1, 0);
    count = base->entry_count();
    entries_bytes = base->entries_bytes();
  }
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    if (base != nullptr) {
      if (const uint64_t off = base->FindOffset(key, hash); off != 0) {
        uint64_t& word = shadowed[off / 8 / 64];
        const uint64_t bit = uint64_t{1} << (off / 8 % 64);
        std::string_view k;
        ValueView v;
        if ((word & bit) == 0 && base->EntryAt(off, &k, &v)) {
          word |= bit;
          --count;
          entries_bytes -= EntrySize(k.size(), v.data.size());
        }
      }
    }
    if (value != nullptr) {
      ++count;
      entries_bytes += EntrySize(key.size(), value->data.size());
    }
  });
  // Load factor <= 0.7 keeps linear-probe chains short.
  const uint64_t buckets = std::bit_ceil(std::max<uint64_t>(16, count * 10 / 7 + 1));
  const uint64_t buckets_offset = sizeof(SnapshotHeader);
  const uint64_t entries_offset = buckets_offset + buckets * sizeof(SnapshotBucket);
  const uint64_t total = entries_offset + entries_bytes;
  if (total / 8 > UINT32_MAX) {
    return Status(StatusCode::kResourceExhausted, "dict '" + std::string(dict) +
                                                      "': a snapshot of " + std::to_string(total) +
                                                      " bytes exceeds the 32 GiB snapshot limit");
  }
  const std::string segment = SnapshotSegment(dict, generation);
  auto created = CreateSegment(segment, total, mode, /*replace_existing=*/true);
  if (!created.ok()) return created.status();
  Mapping map = std::move(created->second);
  uint8_t* out = map.data();
  auto* bucket_array = reinterpret_cast<SnapshotBucket*>(out + buckets_offset);
  uint64_t off = entries_offset;
  uint64_t written = 0;
  bool overflow = false;
  auto put = [&](std::string_view key, uint64_t hash, ValueType type, std::string_view value) {
    const uint64_t size = EntrySize(key.size(), value.size());
    if (off + size > total) {
      overflow = true;  // only a damaged base can disagree with the sizes computed above
      return;
    }
    SnapshotEntry e{};
    e.key_bytes = static_cast<uint32_t>(key.size());
    e.value_bytes = static_cast<uint32_t>(value.size());
    e.type = static_cast<uint8_t>(type);
    e.hash_low = static_cast<uint32_t>(hash);
    std::memcpy(out + off, &e, sizeof(e));
    std::memcpy(out + off + sizeof(e), key.data(), key.size());
    std::memcpy(out + off + sizeof(e) + key.size(), value.data(), value.size());
    uint64_t i = hash & (buckets - 1);
    while (bucket_array[i].entry_offset8 != 0) i = (i + 1) & (buckets - 1);
    bucket_array[i] =
        SnapshotBucket{static_cast<uint32_t>(hash >> 32), static_cast<uint32_t>(off / 8)};
    off += size;
    ++written;
  };
  if (base != nullptr) {
    // Bucket order: entries land near where they were, so reads and writes stay sequential.
    const uint64_t base_buckets = base->header_->bucket_count;
    for (uint64_t i = 0; i < base_buckets && !overflow; ++i) {
      const SnapshotBucket b = base->buckets_[i];
      const uint64_t at = uint64_t{b.entry_offset8} * 8;
      if (b.entry_offset8 == 0 || at >= base->map_.size()) continue;  // empty, or damaged
      if ((shadowed[b.entry_offset8 / 64] >> (b.entry_offset8 % 64)) & 1) continue;
      std::string_view k;
      ValueView v;
      if (!base->EntryAt(at, &k, &v)) continue;
      SnapshotEntry e;
      std::memcpy(&e, base->map_.data() + at, sizeof(e));
      put(k, (uint64_t{b.hash_tag} << 32) | e.hash_low, v.type, v.data);
    }
  }
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    if (value != nullptr && !overflow) put(key, hash, value->type, value->data);
  });
  if (overflow || written != count || off != total) {
    UnlinkSegmentQuietly(segment);
    return Status(StatusCode::kDataLoss, "dict '" + std::string(dict) +
                                             "': the snapshot being replaced is inconsistent "
                                             "(its entries disagree with its header)");
  }
  auto* h = new (out) SnapshotHeader{};
  h->magic = kSnapshotMagic;
  h->header_size = sizeof(SnapshotHeader);
  h->generation = generation;
  h->revision = revision;
  h->log_position = log_position;
  h->entry_count = count;
  h->bucket_count = buckets;
  h->buckets_offset = buckets_offset;
  h->entries_offset = entries_offset;
  h->entries_bytes = entries_bytes;
  h->total_bytes = total;
  h->data_checksum = SnapshotDataChecksum(out, total);
  h->header_checksum = SnapshotHeaderChecksum(*h);
  h->layout_version.store(kLayoutVersion, std::memory_order_release);
  return std::shared_ptr<const SnapshotView>(new SnapshotView(std::move(map)));
}

}  // namespace shmdict::internal
