#include "snapshot.h"

#include <fcntl.h>
#include <sys/file.h>

#include <bit>
#include <vector>

#include "crash_point.h"
#include "hash.h"

namespace shmdict::internal {

uint64_t SnapshotHeaderChecksum(const SnapshotHeader& h) {
  // Fields are hashed one by one: the atomic ready word is not part of the checksum.
  const uint64_t fields[] = {
      h.magic,          h.header_size,     h.generation,      h.revision,
      h.log_position,   h.entry_count,     h.bucket_count,    h.buckets_offset,
      h.entries_offset, h.entries_bytes,   h.total_bytes,     h.data_checksum,
      h.live_bytes,     h.tombstone_count, h.base_generation, h.total_entry_count};
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
  // Held while mapped: a builder reuses a retired segment's pages only when nobody maps it.
  // Failing here means a builder is rewriting this segment for a newer generation right now.
  if (flock(fd->get(), LOCK_SH | LOCK_NB) != 0) {
    return Status(StatusCode::kNotFound,
                  "snapshot segment " + QuoteForMessage(segment) + " is being reused");
  }
  auto size = SegmentSize(fd->get());
  if (!size.ok()) return size.status();
  auto corrupt = [&](const std::string& why) {
    return Status(StatusCode::kDataLoss, "dict " + QuoteForMessage(dict) + ": snapshot segment " +
                                             QuoteForMessage(segment) + " " + why +
                                             ": unlink the dict");
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
                  "dict " + QuoteForMessage(dict) + " snapshot has layout version " +
                      std::to_string(version) + ", this build reads " +
                      std::to_string(kLayoutVersion) + ": upgrade or unlink it");
  }
  if (h->header_checksum != SnapshotHeaderChecksum(*h)) return corrupt("has a corrupted header");
  if (h->generation != generation) {
    // Retired and reused for a newer generation between our open and our lock.
    return Status(StatusCode::kNotFound,
                  "snapshot segment " + QuoteForMessage(segment) + " was reused");
  }
  if (h->total_bytes != *size) return corrupt("is truncated");
  const uint64_t buckets_end = h->buckets_offset + h->bucket_count * sizeof(SnapshotBucket);
  if (h->total_bytes != *size || h->bucket_count == 0 || !std::has_single_bit(h->bucket_count) ||
      h->header_size != sizeof(SnapshotHeader) || h->buckets_offset < sizeof(SnapshotHeader) ||
      buckets_end > h->entries_offset || h->entries_offset + h->entries_bytes > *size ||
      h->generation != generation || h->live_bytes > h->entries_bytes ||
      h->tombstone_count > h->bucket_count || h->base_generation >= generation) {
    return corrupt("has inconsistent sizes");
  }
  std::shared_ptr<SnapshotView> view(new SnapshotView(std::move(*map), std::move(*fd)));
  if (h->base_generation == 0) return std::shared_ptr<const SnapshotView>(std::move(view));
  auto base = Open(dict, h->base_generation);
  if (!base.ok()) {
    if (base.status().code() != StatusCode::kNotFound) return base.status();
    // Cleanup retires a chain's deltas before its base (Compactor::AfterPublish), so a base gone
    // while its delta still has its name was lost, not retired.
    if (OpenSegment(segment, O_RDONLY, 0).ok()) {
      return corrupt("lies over base snapshot " +
                     QuoteForMessage(SnapshotSegment(dict, h->base_generation)) +
                     ", which is missing");
    }
    return Status(StatusCode::kNotFound,
                  "snapshot segment " + QuoteForMessage(segment) + " was retired");
  }
  if ((*base)->base_generation() != 0) return corrupt("lies over a snapshot that is not a base");
  view->base_ = std::move(*base);
  return std::shared_ptr<const SnapshotView>(std::move(view));
}

Status SnapshotView::VerifyContents(std::string_view dict) const {
  if (SnapshotDataChecksum(map_.data(), map_.size()) == header_->data_checksum) {
    return base_ != nullptr ? base_->VerifyContents(dict) : Status::Ok();
  }
  return Status(StatusCode::kDataLoss,
                "dict " + QuoteForMessage(dict) + ": snapshot segment " +
                    QuoteForMessage(SnapshotSegment(dict, generation())) +
                    " has corrupted contents (checksum mismatch): unlink the dict");
}

// What the delta does to the base, found in one pass before anything is written.
struct SnapshotView::DeltaPlan {
  std::vector<uint64_t> base_offsets;  // per delta key, in visit order: its base entry, or 0
  std::vector<uint64_t> shadowed;      // bitmap over base offsets / 8: entries the delta replaces
  uint64_t count = 0;                  // live entries after the delta
  uint64_t live_bytes = 0;             // their bytes
  uint64_t appended_bytes = 0;         // entries a patched copy appends
  uint64_t new_tombstones = 0;         // base keys the delta erases
  std::shared_ptr<const SnapshotView> chain_base;  // a delta's base; null when writing a base
};

namespace {

// What an erasure becomes in a delta whose base holds the key: an entry that hides the base's.
// Recognized by address, so no user value can be mistaken for it.
const ValueView kErasedMarker{ValueType::kBytes, {}};

}  // namespace

bool SnapshotView::KeepsDelta(uint64_t delta_entries, uint64_t delta_live_bytes,
                              uint64_t total_entries, const SnapshotView& base) {
  // Every entry of the delta either adds a key to the dict or hides one of the base's (a newer
  // value, an erased marker): entries = added + hidden_values + markers, and total = base +
  // added - markers, so entries + base - total = hidden_values + 2 * markers. Counted so, a
  // marker weighs twice: it removes a key as well as hiding an entry.
  const uint64_t base_entries = base.own_entry_count();
  const uint64_t hidden = delta_entries + base_entries > total_entries
                              ? delta_entries + base_entries - total_entries
                              : 0;
  return hidden * kDeltaFraction <= base_entries &&
         delta_live_bytes * kGrowingDeltaFraction <= base.live_bytes();
}

SnapshotView::DeltaPlan SnapshotView::PlanDelta(const SnapshotView* base,
                                                const SnapshotDelta& delta) {
  DeltaPlan plan;
  if (base != nullptr) {
    plan.shadowed.assign(base->map_.size() / 8 / 64 + 1, 0);
    plan.count = base->own_entry_count();
    plan.live_bytes = base->live_bytes();
  }
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    uint64_t old_size = 0;
    uint64_t at = 0;
    if (base != nullptr) {
      ValueView old;
      at = base->FindOffset(key, hash, &old);
      uint64_t& word = plan.shadowed[at / 8 / 64];
      const uint64_t bit = uint64_t{1} << (at / 8 % 64);
      if (at != 0 && (word & bit) == 0) {  // a damaged base could list an entry twice
        word |= bit;
        old_size = EntrySize(key.size(), old.data.size());
        --plan.count;
        plan.live_bytes -= old_size;
      } else {
        at = 0;
      }
    }
    plan.base_offsets.push_back(at);
    if (value != nullptr) {
      const uint64_t size = EntrySize(key.size(), value->data.size());
      ++plan.count;
      plan.live_bytes += size;
      if (size != old_size) plan.appended_bytes += size;
    } else if (at != 0) {
      ++plan.new_tombstones;
    }
  });
  return plan;
}

Result<std::shared_ptr<const SnapshotView>> SnapshotView::Build(
    std::string_view dict, uint64_t generation, uint64_t revision, uint64_t log_position,
    mode_t mode, const SnapshotView* previous, const SnapshotDelta& delta,
    const HeldSegmentSource* held) {
  SnapshotHeader h{};
  h.magic = kSnapshotMagic;
  h.header_size = sizeof(SnapshotHeader);
  h.generation = generation;
  h.revision = revision;
  h.log_position = log_position;
  if (previous == nullptr) {
    DeltaPlan plan = PlanDelta(nullptr, delta);
    h.total_entry_count = plan.count;
    return WriteTable(dict, mode, nullptr, delta, plan, &h, held);
  }
  const SnapshotView* chain_base = previous->base_ ? previous->base_.get() : previous;
  const SnapshotView* own = previous->base_ ? previous : nullptr;
  // The delta's own table: erasures of keys the base holds must hide them; any other erasure
  // just removes the key from the table.
  const SnapshotDelta layered{
      [&](const SnapshotDelta::Fn& fn) {
        delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
          if (value == nullptr && chain_base->FindOffset(key, hash) != 0) value = &kErasedMarker;
          fn(key, hash, value);
        });
      },
      nullptr};
  DeltaPlan plan = PlanDelta(own, layered);
  // The dict's count moves by what each change does to the previous snapshot's dict.
  uint64_t total = previous->entry_count();
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    ValueView old;
    const bool existed = previous->Find(key, hash, &old);
    total = total + (value != nullptr) - existed;
  });
  if (KeepsDelta(plan.count, plan.live_bytes, total, *chain_base)) {
    h.base_generation = chain_base->generation();
    h.total_entry_count = total;
    plan.chain_base = previous->base_ ? previous->base_ : chain_base->shared_from_this();
    return WriteTable(dict, mode, own, layered, plan, &h, held);
  }
  // A new base: the chain's base with the previous delta's changes not overridden by `delta`,
  // then `delta`, applied (each key once, as a plan needs).
  if (own != nullptr && !delta.contains) {
    return Status(StatusCode::kInternal, "folding a delta into its base needs delta.contains");
  }
  const SnapshotDelta merged{[&](const SnapshotDelta::Fn& fn) {
                               if (own != nullptr) {
                                 own->ForEachOwnWithHash([&](std::string_view key, uint64_t hash,
                                                             ValueView value, bool erased) {
                                   if (!delta.contains(key, hash))
                                     fn(key, hash, erased ? nullptr : &value);
                                 });
                               }
                               delta.visit(fn);
                             },
                             nullptr};
  plan = PlanDelta(chain_base, merged);
  h.total_entry_count = plan.count;
  return WriteTable(dict, mode, chain_base, merged, plan, &h, held);
}

Result<std::shared_ptr<const SnapshotView>> SnapshotView::WriteTable(
    std::string_view dict, mode_t mode, const SnapshotView* base, const SnapshotDelta& delta,
    const DeltaPlan& plan, SnapshotHeader* h, const HeldSegmentSource* held) {
  h->entry_count = plan.count;
  h->live_bytes = plan.live_bytes;
  // Load factor <= 0.7 keeps linear-probe chains short.
  const uint64_t compact_buckets = std::bit_ceil(std::max<uint64_t>(16, plan.count * 10 / 7 + 1));
  bool patch = base != nullptr;
  if (patch) {
    const uint64_t buckets = base->bucket_count();
    const uint64_t occupied = plan.count + base->tombstone_count() + plan.new_tombstones;
    const uint64_t region = base->entries_bytes() + plan.appended_bytes;
    patch = occupied * 10 <= buckets * 7 && region <= 2 * plan.live_bytes &&
            buckets <= 4 * compact_buckets;
  }
  const std::string segment = SnapshotSegment(dict, h->generation);
  if (patch) return Patch(dict, segment, mode, *base, delta, plan, h, held);
  h->bucket_count = compact_buckets;
  return Rewrite(dict, segment, mode, base, delta, plan, h, held);
}

namespace {

// The segment for a new snapshot: in order of preference, a retired snapshot this process still
// maps (`held`), a retired snapshot's pages when one is no longer mapped by anyone, fresh pages.
// The fd holds an exclusive flock until Seal.
Result<std::pair<Fd, Mapping>> AcquireSnapshotSegment(std::string_view dict,
                                                      const std::string& segment, uint64_t total,
                                                      mode_t mode, const HeldSegmentSource* held) {
  if (total / 8 > UINT32_MAX) {
    return Status(StatusCode::kResourceExhausted, "dict " + QuoteForMessage(dict) +
                                                      ": a snapshot of " + std::to_string(total) +
                                                      " bytes exceeds the 32 GiB snapshot limit");
  }
  if (held != nullptr && *held) {
    if (auto warm = (*held)(segment, total)) {
      CrashPoint("snapshot.segment_recycled");  // as below, through the mapping we kept
      return std::move(*warm);
    }
  }
  for (const auto& [old_generation, retired] : ListNumberedSegments(std::string(dict) + "@r")) {
    auto recycled = RecycleSegment(retired, segment, total);
    if (recycled.ok()) {
      // The new generation's name now holds a retired snapshot's complete bytes (with their own
      // generation): Open refuses it as reused, and it is never published.
      CrashPoint("snapshot.segment_recycled");
      return recycled;
    }
    // Otherwise still mapped somewhere: try the next one.
  }
  // Every byte is about to be written: mapping the pages in one call beats a trapped fault per
  // page (see RecycleHeldSegment).
  auto created = CreateSegment(segment, total, mode, /*replace_existing=*/true, /*populate=*/true);
  if (!created.ok()) return created.status();
  flock(created->first.get(), LOCK_EX);  // nobody else knows the name yet: cannot block
  return created;
}

void PutEntry(uint8_t* at, std::string_view key, uint64_t hash, ValueType type,
              std::string_view value, uint8_t flags) {
  SnapshotEntry e{};
  e.key_bytes = static_cast<uint32_t>(key.size());
  e.value_bytes = static_cast<uint32_t>(value.size());
  e.type = static_cast<uint8_t>(type);
  e.flags = flags;
  e.hash_low = static_cast<uint32_t>(hash);
  std::memcpy(at, &e, sizeof(e));
  // An erased marker's value is an empty view whose data() may be null: memcpy from null is
  // undefined even for zero bytes.
  if (!key.empty()) std::memcpy(at + sizeof(e), key.data(), key.size());
  if (!value.empty()) std::memcpy(at + sizeof(e) + key.size(), value.data(), value.size());
  // Reused pages hold old bytes: the padding is zeroed so the segment's bytes are all defined.
  const uint64_t used = sizeof(e) + key.size() + value.size();
  std::memset(at + used, 0, SnapshotView::EntrySize(key.size(), value.size()) - used);
}

uint8_t FlagsOf(const ValueView* value) { return value == &kErasedMarker ? kEntryErased : 0; }

Status Inconsistent(std::string_view dict) {
  return Status(StatusCode::kDataLoss, "dict " + QuoteForMessage(dict) +
                                           ": the snapshot being replaced is inconsistent "
                                           "(its entries disagree with its header)");
}

}  // namespace

Result<std::shared_ptr<const SnapshotView>> SnapshotView::Patch(
    std::string_view dict, const std::string& segment, mode_t mode, const SnapshotView& base,
    const SnapshotDelta& delta, const DeltaPlan& plan, SnapshotHeader* h,
    const HeldSegmentSource* held) {
  const SnapshotHeader& bh = *base.header_;
  const uint64_t copied_end = bh.entries_offset + bh.entries_bytes;
  const uint64_t total = copied_end + plan.appended_bytes;
  auto acquired = AcquireSnapshotSegment(dict, segment, total, mode, held);
  if (!acquired.ok()) return acquired.status();
  uint8_t* out = acquired->second.data();
  // One block copy: buckets and entries keep their offsets, so every bucket stays valid.
  std::memcpy(out + sizeof(SnapshotHeader), base.map_.data() + sizeof(SnapshotHeader),
              copied_end - sizeof(SnapshotHeader));
  // The base copied, none of the delta's keys patched in; the header not written.
  CrashPoint(h->base_generation != 0 ? CrashPointName("snapshot.delta_half_written")
                                     : CrashPointName("snapshot.base_half_written"));
  auto* buckets = reinterpret_cast<SnapshotBucket*>(out + bh.buckets_offset);
  const uint64_t mask = bh.bucket_count - 1;
  uint64_t tombstones = bh.tombstone_count;
  uint64_t off = copied_end;
  size_t index = 0;
  bool bad = false;
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    if (bad || index >= plan.base_offsets.size()) {
      bad = true;
      return;
    }
    const uint64_t at = plan.base_offsets[index++];
    const uint64_t size = value != nullptr ? EntrySize(key.size(), value->data.size()) : 0;
    uint64_t slot = hash & mask;
    if (at != 0) {
      SnapshotEntry e;
      std::memcpy(&e, out + at, sizeof(e));
      if (value != nullptr && size == EntrySize(e.key_bytes, e.value_bytes)) {
        // Same size: overwrite in place, zeroing the padding the old value may have used.
        PutEntry(out + at, key, hash, value->type, value->data, FlagsOf(value));
        return;
      }
      out[at + offsetof(SnapshotEntry, flags)] |= kEntryDead;
      uint64_t probes = 0;
      while (buckets[slot].entry_offset8 != at / 8 && probes++ <= mask) slot = (slot + 1) & mask;
      if (probes > mask + 1) {
        bad = true;
        return;
      }
      if (value == nullptr) {
        buckets[slot] = SnapshotBucket{0, kTombstoneOffset8};
        ++tombstones;
        return;
      }
    } else {
      if (value == nullptr) return;
      // A new key (the base has no entry for it): the first reusable bucket of its chain.
      uint64_t probes = 0;
      while (buckets[slot].entry_offset8 > kTombstoneOffset8 && probes++ <= mask) {
        slot = (slot + 1) & mask;
      }
      if (probes > mask + 1) {
        bad = true;
        return;
      }
      if (buckets[slot].entry_offset8 == kTombstoneOffset8) --tombstones;
    }
    if (off + size > total) {
      bad = true;
      return;
    }
    PutEntry(out + off, key, hash, value->type, value->data, FlagsOf(value));
    buckets[slot] =
        SnapshotBucket{static_cast<uint32_t>(hash >> 32), static_cast<uint32_t>(off / 8)};
    off += size;
  });
  if (bad || index != plan.base_offsets.size() || off != total) {
    UnlinkSegmentQuietly(segment);
    return Inconsistent(dict);
  }
  h->bucket_count = bh.bucket_count;
  h->buckets_offset = bh.buckets_offset;
  h->entries_offset = bh.entries_offset;
  h->entries_bytes = total - bh.entries_offset;
  h->tombstone_count = tombstones;
  h->total_bytes = total;
  return Seal(std::move(*acquired), h, plan.chain_base);
}

Result<std::shared_ptr<const SnapshotView>> SnapshotView::Rewrite(
    std::string_view dict, const std::string& segment, mode_t mode, const SnapshotView* base,
    const SnapshotDelta& delta, const DeltaPlan& plan, SnapshotHeader* h,
    const HeldSegmentSource* held) {
  const uint64_t buckets = h->bucket_count;
  const uint64_t buckets_offset = sizeof(SnapshotHeader);
  const uint64_t entries_offset = buckets_offset + buckets * sizeof(SnapshotBucket);
  const uint64_t total = entries_offset + plan.live_bytes;
  auto acquired = AcquireSnapshotSegment(dict, segment, total, mode, held);
  if (!acquired.ok()) return acquired.status();
  uint8_t* out = acquired->second.data();
  auto* bucket_array = reinterpret_cast<SnapshotBucket*>(out + buckets_offset);
  std::memset(static_cast<void*>(bucket_array), 0, buckets * sizeof(SnapshotBucket));
  uint64_t off = entries_offset;
  uint64_t written = 0;
  bool overflow = false;
  auto put = [&](std::string_view key, uint64_t hash, ValueType type, std::string_view value,
                 uint8_t flags) {
    const uint64_t size = EntrySize(key.size(), value.size());
    if (off + size > total) {
      overflow = true;  // only a damaged base can disagree with the sizes computed above
      return;
    }
    PutEntry(out + off, key, hash, type, value, flags);
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
      if (b.entry_offset8 <= kTombstoneOffset8 || at >= base->map_.size()) continue;
      if ((plan.shadowed[b.entry_offset8 / 64] >> (b.entry_offset8 % 64)) & 1) continue;
      std::string_view k;
      ValueView v;
      if (!base->EntryAt(at, &k, &v)) continue;
      SnapshotEntry e;
      std::memcpy(&e, base->map_.data() + at, sizeof(e));
      put(k, (uint64_t{b.hash_tag} << 32) | e.hash_low, v.type, v.data, e.flags & kEntryErased);
    }
  }
  // The base's surviving entries written, none of the delta's; the header not written.
  CrashPoint(h->base_generation != 0 ? CrashPointName("snapshot.delta_half_written")
                                     : CrashPointName("snapshot.base_half_written"));
  delta.visit([&](std::string_view key, uint64_t hash, const ValueView* value) {
    if (value != nullptr && !overflow) put(key, hash, value->type, value->data, FlagsOf(value));
  });
  if (overflow || written != plan.count || off != total) {
    UnlinkSegmentQuietly(segment);
    return Inconsistent(dict);
  }
  h->buckets_offset = buckets_offset;
  h->entries_offset = entries_offset;
  h->entries_bytes = plan.live_bytes;
  h->tombstone_count = 0;
  h->total_bytes = total;
  return Seal(std::move(*acquired), h, plan.chain_base);
}

std::shared_ptr<const SnapshotView> SnapshotView::Seal(std::pair<Fd, Mapping> segment,
                                                       SnapshotHeader* header,
                                                       std::shared_ptr<const SnapshotView> base) {
  auto& [fd, map] = segment;
  uint8_t* out = map.data();
  header->data_checksum = SnapshotDataChecksum(out, header->total_bytes);
  header->header_checksum = SnapshotHeaderChecksum(*header);
  // Copied with its ready word still 0; the word is stored last, with release order.
  header->layout_version.store(0, std::memory_order_relaxed);
  std::memcpy(static_cast<void*>(out), static_cast<const void*>(header), sizeof(*header));
  // Complete but for the ready word: Open reports it as never finished.
  CrashPoint("snapshot.sealed_before_ready");
  reinterpret_cast<SnapshotHeader*>(out)->layout_version.store(kLayoutVersion,
                                                               std::memory_order_release);
  flock(fd.get(), LOCK_SH);  // from writing it to mapping it, like every reader
  std::shared_ptr<SnapshotView> view(new SnapshotView(std::move(map), std::move(fd)));
  view->base_ = std::move(base);
  view->built_here_ = true;
  return view;
}

std::optional<std::pair<Fd, Mapping>> SnapshotView::ReleaseSegment(
    std::shared_ptr<const SnapshotView>* view) {
  std::shared_ptr<const SnapshotView> only = std::move(*view);
  // use_count is exact here: nobody else holds a reference, so nobody can make another one.
  if (only == nullptr || !only->built_here_ || only.use_count() != 1) return std::nullopt;
  // The object is about to be destroyed and nobody else sees it: taking its members is safe.
  auto* self = const_cast<SnapshotView*>(only.get());
  std::pair<Fd, Mapping> segment(std::move(self->fd_), std::move(self->map_));
  return segment;
}

}  // namespace shmdict::internal
