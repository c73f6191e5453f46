// Binary compatibility: every field of the shared layout sits at the offset docs/LAYOUT.md
// documents. A pattern is written through the struct and read back from the raw bytes, so a
// reordered or resized field fails here even if the static_asserts were edited along with it.
#include "layout.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

namespace shmdict::internal {
namespace {

template <typename T>
T ReadAt(const void* base, size_t offset) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(base) + offset, sizeof(T));
  return v;
}

TEST(LayoutTest, MainHeaderFieldsSitAtTheDocumentedOffsets) {
  auto storage = std::make_unique<MainHeader>();
  MainHeader& h = *storage;
  h.identity.magic = 0x1111111111111111;
  h.identity.layout_version.store(0x22222222);
  h.identity.header_size = 0x33333333;
  h.identity.log_capacity = 0x4444444444444444;
  h.identity.creator_pid = 0x55555555;
  h.identity.mode = 0x66666666;
  h.identity.created_unix_ns = 0x7777777777777777;
  h.identity.user_flags = 0x1a1a1a1a;
  h.commit.commit_revision.store(0x0101010101010101);
  h.commit.reclaim_position.store(0x0202020202020202);
  h.commit.snapshot_generation.store(0x0303030303030303);
  h.commit.entry_count.store(0x0404040404040404);
  h.wait.change_futex.store(0x05050505);
  h.wait.maybe_waiting.store(0x06060606);
  h.writer.write_lock.owner.store(0x1212121212121212);
  h.writer.write_lock.wake_futex.store(0x13131313);
  h.writer.write_lock.holder_pid.store(0x14141414);
  h.writer.write_lock.holder_pid_namespace.store(0x1515151515151515);
  h.writer.write_lock.holder_start_time.store(0x1616161616161616);
  h.writer.next_holder_token.store(0x0707070707070707);
  h.writer.lock_recoveries.store(0x0808080808080808);
  h.writer.writer_tail.store(0x0909090909090909);
  h.writer.writer_tail_revision.store(0x0a0a0a0a0a0a0a0a);
  h.writer.snapshot_log_position.store(0x0b0b0b0b0b0b0b0b);
  h.writer.snapshot_revision.store(0x0c0c0c0c0c0c0c0c);
  h.writer.external_bytes.store(0x1717171717171717);
  h.writer.nested_values_written.store(0x1919191919191919);
  h.writer.snapshot_chain_base.store(0x1818181818181818);
  h.compaction.compaction_lock.owner.store(0x0d0d0d0d0d0d0d0d);
  h.compaction.snapshots_built.store(0x0e0e0e0e0e0e0e0e);
  h.compaction.next_generation.store(0x0f0f0f0f0f0f0f0f);
  h.replica.owner_token.store(0x2121212121212121);
  h.replica.text_sequence.store(0x2222222222222222);
  h.replica.pending_upstream.store(0x2323232323232323);
  h.replica.pending_local.store(0x2424242424242424);
  h.replica.applied_upstream.store(0x2525252525252525);
  h.replica.applied_local.store(0x2626262626262626);
  h.replica.upstream_identity.store(0x2727272727272727);
  h.replica.last_contact_unix_ms.store(0x2828282828282828);
  h.replica.upstream_connected.store(0x29292929);
  h.replica.upstream_bytes.store(0x2a2a2a2a);
  h.replica.listen_bytes.store(0x2b2b2b2b);
  h.replica.owner_pid.store(0x2c2c2c2c);
  h.replica.upstream[0] = 'u';
  h.replica.upstream[639] = 'U';
  h.replica.listen[0] = 'l';
  h.replica.listen[255] = 'L';

  EXPECT_EQ(ReadAt<uint64_t>(&h, 0), 0x1111111111111111u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 8), 0x22222222u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 12), 0x33333333u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 16), 0x4444444444444444u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 24), 0x55555555u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 28), 0x66666666u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 32), 0x7777777777777777u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 40), 0x1a1a1a1au);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 64), 0x0101010101010101u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 72), 0x0202020202020202u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 80), 0x0303030303030303u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 88), 0x0404040404040404u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 128), 0x05050505u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 132), 0x06060606u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 192), 0x1212121212121212u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 200), 0x13131313u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 204), 0x14141414u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 208), 0x1515151515151515u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 216), 0x1616161616161616u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 240), 0x0707070707070707u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 248), 0x0808080808080808u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 256), 0x0909090909090909u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 264), 0x0a0a0a0a0a0a0a0au);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 272), 0x0b0b0b0b0b0b0b0bu);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 280), 0x0c0c0c0c0c0c0c0cu);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 288), 0x1717171717171717u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 296), 0x1919191919191919u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 304), 0x1818181818181818u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 320), 0x0d0d0d0d0d0d0d0du);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 376), 0x0e0e0e0e0e0e0e0eu);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 384), 0x0f0f0f0f0f0f0f0fu);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 448), 0x2121212121212121u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 456), 0x2222222222222222u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 464), 0x2323232323232323u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 472), 0x2424242424242424u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 480), 0x2525252525252525u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 488), 0x2626262626262626u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 496), 0x2727272727272727u);
  EXPECT_EQ(ReadAt<uint64_t>(&h, 504), 0x2828282828282828u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 512), 0x29292929u);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 516), 0x2a2a2a2au);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 520), 0x2b2b2b2bu);
  EXPECT_EQ(ReadAt<uint32_t>(&h, 524), 0x2c2c2c2cu);
  EXPECT_EQ(ReadAt<char>(&h, 576), 'u');
  EXPECT_EQ(ReadAt<char>(&h, 1215), 'U');
  EXPECT_EQ(ReadAt<char>(&h, 1216), 'l');
  EXPECT_EQ(ReadAt<char>(&h, 1471), 'L');
  EXPECT_EQ(reinterpret_cast<uint8_t*>(&h.writer.write_lock) - reinterpret_cast<uint8_t*>(&h), 192);
  EXPECT_EQ(
      reinterpret_cast<uint8_t*>(&h.compaction.compaction_lock) - reinterpret_cast<uint8_t*>(&h),
      320);
}

TEST(LayoutTest, RecordAndSnapshotFieldsSitAtTheDocumentedOffsets) {
  RecordHeader r{};
  r.position = 0x1111111111111111;
  r.revision = 0x2222222222222222;
  r.length = 0x33333333;
  r.kind = 0x44;
  r.checksum = 0x5555555555555555;
  EXPECT_EQ(ReadAt<uint64_t>(&r, 0), 0x1111111111111111u);
  EXPECT_EQ(ReadAt<uint64_t>(&r, 8), 0x2222222222222222u);
  EXPECT_EQ(ReadAt<uint32_t>(&r, 16), 0x33333333u);
  EXPECT_EQ(ReadAt<uint8_t>(&r, 20), 0x44u);
  EXPECT_EQ(ReadAt<uint64_t>(&r, 24), 0x5555555555555555u);

  OpHeader op{};
  op.op = 0x01;
  op.type = 0x02;
  op.key_bytes = 0x03030303;
  op.value_bytes = 0x04040404;
  EXPECT_EQ(ReadAt<uint8_t>(&op, 0), 0x01u);
  EXPECT_EQ(ReadAt<uint8_t>(&op, 1), 0x02u);
  EXPECT_EQ(ReadAt<uint32_t>(&op, 4), 0x03030303u);
  EXPECT_EQ(ReadAt<uint32_t>(&op, 8), 0x04040404u);

  auto snap = std::make_unique<SnapshotHeader>();
  snap->magic = 1;
  snap->layout_version.store(2);
  snap->header_size = 3;
  snap->generation = 4;
  snap->revision = 5;
  snap->log_position = 6;
  snap->entry_count = 7;
  snap->bucket_count = 8;
  snap->buckets_offset = 9;
  snap->entries_offset = 10;
  snap->entries_bytes = 11;
  snap->total_bytes = 12;
  snap->header_checksum = 13;
  snap->data_checksum = 14;
  snap->live_bytes = 15;
  snap->tombstone_count = 16;
  snap->base_generation = 17;
  snap->total_entry_count = 18;
  EXPECT_EQ(ReadAt<uint64_t>(snap.get(), 0), 1u);
  EXPECT_EQ(ReadAt<uint32_t>(snap.get(), 8), 2u);
  EXPECT_EQ(ReadAt<uint32_t>(snap.get(), 12), 3u);
  for (uint64_t field = 4; field <= 18; ++field) {
    EXPECT_EQ(ReadAt<uint64_t>(snap.get(), 16 + (field - 4) * 8), field) << "field " << field;
  }

  SnapshotBucket b{0xaaaaaaaa, 0xbbbbbbbb};
  EXPECT_EQ(ReadAt<uint32_t>(&b, 0), 0xaaaaaaaau);
  EXPECT_EQ(ReadAt<uint32_t>(&b, 4), 0xbbbbbbbbu);
  SnapshotEntry e{};
  e.key_bytes = 0x01020304;
  e.value_bytes = 0x05060708;
  e.type = 0x09;
  e.flags = kEntryDead;
  e.hash_low = 0x0a0b0c0d;
  EXPECT_EQ(ReadAt<uint32_t>(&e, 0), 0x01020304u);
  EXPECT_EQ(ReadAt<uint32_t>(&e, 4), 0x05060708u);
  EXPECT_EQ(ReadAt<uint8_t>(&e, 8), 0x09u);
  EXPECT_EQ(ReadAt<uint8_t>(&e, 9), 0x01u);
  e.flags = kEntryErased;
  EXPECT_EQ(ReadAt<uint8_t>(&e, 9), 0x02u);
  EXPECT_EQ(ReadAt<uint32_t>(&e, 12), 0x0a0b0c0du);
  EXPECT_EQ(kLayoutVersion, 5u) << "a layout change must update docs/LAYOUT.md and this test";
}

}  // namespace
}  // namespace shmdict::internal
