#include "log_ring.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "change_record.h"

namespace shmdict::internal {
namespace {

// A header and a ring in ordinary memory: the ring logic does not care where they live.
struct TestRing {
  static constexpr uint64_t kCapacity = 4096;
  std::unique_ptr<MainHeader> header = std::make_unique<MainHeader>();
  std::vector<uint8_t> bytes = std::vector<uint8_t>(kCapacity);
  LogRing ring{header.get(), bytes.data(), kCapacity};
};

std::string Payload(std::string_view key, std::string_view value) {
  std::string p;
  AppendOp({ChangeOp::kSet, ValueType::kString, key, value}, &p);
  return p;
}

TEST(LogRingTest, RecordsReadBackWithTheirOps) {
  TestRing t;
  uint64_t tail = t.ring.Write(0, 1, RecordKind::kChange, Payload("a", "1"));
  tail = t.ring.Write(tail, 2, RecordKind::kChange, Payload("bb", "22"));
  RecordHeader h;
  std::string payload;
  ASSERT_EQ(t.ring.Read(0, &h, &payload), LogRing::ReadResult::kRecord);
  EXPECT_EQ(h.revision, 1u);
  const uint64_t second = RecordLength(RecordBodyBytes(h));
  ASSERT_EQ(t.ring.Read(second, &h, &payload), LogRing::ReadResult::kRecord);
  EXPECT_EQ(h.revision, 2u);
  std::vector<std::string> keys;
  ASSERT_TRUE(ForEachOp(payload, [&](const OpRef& op) { keys.emplace_back(op.key); }));
  EXPECT_EQ(keys, std::vector<std::string>{"bb"});
  EXPECT_EQ(second + RecordLength(RecordBodyBytes(h)), tail);
}

TEST(LogRingTest, ARecordNeverStraddlesTheEndOfTheRing) {
  TestRing t;
  const std::string payload = Payload("k", std::string(1000, 'v'));
  uint64_t tail = 0;
  for (uint64_t rev = 1; rev <= 3; ++rev)
    tail = t.ring.Write(tail, rev, RecordKind::kChange, payload);
  // The 4th record does not fit before the end: padding fills it, the record starts at 4096.
  const uint64_t padded_at = tail;
  tail = t.ring.Write(tail, 4, RecordKind::kChange, payload);
  RecordHeader h;
  std::string out;
  ASSERT_EQ(t.ring.Read(padded_at, &h, &out), LogRing::ReadResult::kPadding);
  EXPECT_EQ(padded_at + h.length, TestRing::kCapacity);
  ASSERT_EQ(t.ring.Read(TestRing::kCapacity, &h, &out), LogRing::ReadResult::kRecord);
  EXPECT_EQ(h.revision, 4u);
  EXPECT_GT(t.header->commit.reclaim_position.load(), 0u) << "bytes of lap 0 were reclaimed";
}

// The seqlock re-check: bytes that are intact but already reclaimed must not be trusted, since a
// writer may be overwriting them while they are copied.
TEST(LogRingTest, AReadBelowTheReclaimPositionIsLappedEvenIfTheBytesLookIntact) {
  TestRing t;
  t.ring.Write(0, 1, RecordKind::kChange, Payload("a", "1"));
  RecordHeader h;
  std::string payload;
  ASSERT_EQ(t.ring.Read(0, &h, &payload), LogRing::ReadResult::kRecord);
  t.header->commit.reclaim_position.store(32);
  EXPECT_EQ(t.ring.Read(0, &h, &payload), LogRing::ReadResult::kLapped);
}

TEST(LogRingTest, FlippedPayloadBitIsCorruption) {
  TestRing t;
  t.ring.Write(0, 1, RecordKind::kChange, Payload("key", "value"));
  t.bytes[sizeof(RecordHeader) + 14] ^= 0x01;
  RecordHeader h;
  std::string payload;
  EXPECT_EQ(t.ring.Read(0, &h, &payload), LogRing::ReadResult::kCorrupt);
}

TEST(LogRingTest, StaleBytesFromAnEarlierLapDoNotPassAsTheRecordAtAPosition) {
  TestRing t;
  t.ring.Write(0, 1, RecordKind::kChange, Payload("a", "1"));
  RecordHeader h;
  std::string payload;
  // Position 4096 maps to the same bytes, but the record there says position 0.
  EXPECT_EQ(t.ring.Read(TestRing::kCapacity, &h, &payload), LogRing::ReadResult::kCorrupt);
}

}  // namespace
}  // namespace shmdict::internal
