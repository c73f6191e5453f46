#include "record_format.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "change_record.h"

namespace shmdict::internal {
namespace {

std::string Hex(std::string_view bytes) {
  std::string out;
  char digits[3];
  for (unsigned char c : bytes) {
    std::snprintf(digits, sizeof(digits), "%02x", c);
    out += digits;
  }
  return out;
}

std::string HeaderBytes(const RecordHeader& h) {
  return std::string(reinterpret_cast<const char*>(&h), sizeof(h));
}

// The bytes of one record of every op, a padding header and an external record, as the encoder
// of layout version 3 wrote them before the codec was its own module: a change of the codec that
// changes one byte fails here, and must bump kLayoutVersion.
TEST(RecordFormatTest, EncodesTheBytesOfLayoutVersion3) {
  std::string body;
  AppendOp({ChangeOp::kSet, ValueType::kString, "a", "1"}, &body);
  AppendOp({ChangeOp::kErase, ValueType::kBytes, "bb", {}}, &body);
  AppendOp({ChangeOp::kClear, ValueType::kBytes, {}, {}}, &body);
  AppendRetireChild("d@c1", &body);
  EXPECT_EQ(Hex(HeaderBytes(EncodeRecordHeader(64, 7, RecordKind::kChange, body)) + body),
            "4000000000000000"  // position
            "0700000000000000"  // revision
            "58000000"          // length: 32 + 56
            "01000000"          // kind 1 (change), reserved
            "f9de0160cc20e422"  // checksum
            "0101000001000000"  // set, type 1 (str), key_bytes 1
            "0100000061"
            "31"                  // value_bytes 1, "a", "1"
            "0200000002000000"    // erase, key_bytes 2
            "000000006262"        // value_bytes 0, "bb"
            "0300000000000000"    // clear
            "00000000"            //
            "8006000000000000"    // retire child, type 6 (dict), no key
            "0400000064406331");  // value_bytes 4, "d@c1"
  EXPECT_EQ(Hex(HeaderBytes(EncodePaddingHeader(4064, 32))),
            "e00f000000000000"
            "0000000000000000"
            "20000000"
            "02000000"
            "055b17eb9d343935");
  const BlobRef ref{100, 0x0123456789abcdefull};
  const std::string_view external = EncodeBlobRef(ref);
  EXPECT_EQ(Hex(HeaderBytes(EncodeRecordHeader(4096, 9, RecordKind::kExternal, external)) +
                std::string(external)),
            "0010000000000000"
            "0900000000000000"
            "30000000"
            "03000000"
            "d08f74ae4f51ce4a"
            "6400000000000000"
            "efcdab8967452301");
}

TEST(RecordFormatTest, EveryChangeOpRoundTripsThroughItsRecordCode) {
  for (ChangeOp op : {ChangeOp::kSet, ChangeOp::kErase, ChangeOp::kClear}) {
    EXPECT_EQ(ToChangeOp(ToRecordOp(op)), op);
    RecordOp decoded;
    ASSERT_TRUE(DecodeRecordOp(static_cast<uint8_t>(ToRecordOp(op)), &decoded));
    EXPECT_EQ(decoded, ToRecordOp(op));
  }
  EXPECT_EQ(ToChangeOp(RecordOp::kRetireChild), std::nullopt);
}

TEST(RecordFormatTest, OnlyTheFourOpCodesDecode) {
  int codes = 0;
  for (int byte = 0; byte < 256; ++byte) {
    RecordOp op;
    if (DecodeRecordOp(static_cast<uint8_t>(byte), &op)) {
      ++codes;
      EXPECT_EQ(static_cast<int>(op), byte);
    }
  }
  EXPECT_EQ(codes, 4);
}

TEST(RecordFormatTest, OpsDecodeAsEncodedAndRetireMarkersStayOutOfTheChanges) {
  std::string body;
  AppendOp({ChangeOp::kSet, ValueType::kInt64, "k", std::string(8, '\x01')}, &body);
  AppendRetireChild("p@c2", &body);
  AppendOp({ChangeOp::kErase, ValueType::kBytes, "gone", {}}, &body);
  std::vector<std::string> changes;
  ASSERT_TRUE(ForEachOp(body, [&](const OpRef& op) {
    changes.push_back(std::to_string(static_cast<int>(op.op)) + ":" +
                      std::to_string(static_cast<int>(op.type)) + ":" + std::string(op.key) + ":" +
                      std::to_string(op.value.size()));
  }));
  EXPECT_EQ(changes, (std::vector<std::string>{"1:2:k:8", "2:0:gone:0"}));
  std::vector<std::string> children;
  ForEachRetiredChild(body, [&](std::string_view child) { children.emplace_back(child); });
  EXPECT_EQ(children, std::vector<std::string>{"p@c2"});
}

TEST(RecordFormatTest, ATruncatedBodyOrAnUnknownOpCodeDoesNotDecode) {
  std::string body;
  AppendOp({ChangeOp::kSet, ValueType::kString, "key", "value"}, &body);
  int ops = 0;
  auto count = [&](const RecordOpView&) { ++ops; };
  EXPECT_TRUE(DecodeOps(body, count));
  EXPECT_FALSE(DecodeOps(std::string_view(body).substr(0, body.size() - 1), count));
  EXPECT_FALSE(DecodeOps(std::string_view(body).substr(0, sizeof(OpHeader) - 1), count));
  std::string unknown = body;
  unknown[0] = 4;  // the op byte
  EXPECT_FALSE(DecodeOps(unknown, count));
  EXPECT_FALSE(ForEachOp(unknown, [](const OpRef&) {}));
}

TEST(RecordFormatTest, AHeaderFramesARecordOnlyAtItsOwnPositionAndWithinTheRoomLeft) {
  const std::string body = "0123456789";
  const RecordHeader h = EncodeRecordHeader(96, 3, RecordKind::kChange, body);
  EXPECT_EQ(RecordBodyBytes(h), body.size());
  EXPECT_EQ(RecordLength(RecordBodyBytes(h)), 64u);
  EXPECT_TRUE(RecordFramed(h, 96, 64));
  EXPECT_FALSE(RecordFramed(h, 96 + 4096, 64)) << "stale bytes of an earlier lap";
  EXPECT_FALSE(RecordFramed(h, 96, 32)) << "it would straddle the ring's end";
  RecordHeader short_length = h;
  short_length.length = sizeof(RecordHeader) - 1;
  EXPECT_FALSE(RecordFramed(short_length, 96, 64));
}

TEST(RecordFormatTest, CheckRecordTellsKindsApartAndRejectsWhatDoesNotMatch) {
  const std::string body = "body";
  EXPECT_EQ(CheckRecord(EncodeRecordHeader(0, 1, RecordKind::kChange, body), body),
            RecordCheck::kChange);
  EXPECT_EQ(CheckRecord(EncodeRecordHeader(0, 1, RecordKind::kExternal, body), body),
            RecordCheck::kExternal);
  EXPECT_EQ(CheckRecord(EncodePaddingHeader(0, 64), {}), RecordCheck::kPadding);

  EXPECT_EQ(CheckRecord(EncodeRecordHeader(0, 1, RecordKind::kChange, body), "bodY"),
            RecordCheck::kInvalid);
  RecordHeader other_revision = EncodeRecordHeader(0, 1, RecordKind::kChange, body);
  other_revision.revision = 2;
  EXPECT_EQ(CheckRecord(other_revision, body), RecordCheck::kInvalid);
  RecordHeader padding_with_revision = EncodePaddingHeader(0, 64);
  padding_with_revision.revision = 5;
  EXPECT_EQ(CheckRecord(padding_with_revision, {}), RecordCheck::kInvalid);
  RecordHeader unknown_kind = EncodeRecordHeader(0, 1, RecordKind::kChange, body);
  unknown_kind.kind = 4;
  unknown_kind.checksum = RecordChecksum(unknown_kind, body);
  EXPECT_EQ(CheckRecord(unknown_kind, body), RecordCheck::kInvalid);
}

TEST(RecordFormatTest, ABlobRefDecodesOnlyFromItsOwnSize) {
  const BlobRef ref{12345, 0xfeedfacecafebeefull};
  BlobRef out;
  ASSERT_TRUE(DecodeBlobRef(EncodeBlobRef(ref), &out));
  EXPECT_EQ(out.payload_bytes, ref.payload_bytes);
  EXPECT_EQ(out.payload_checksum, ref.payload_checksum);
  EXPECT_FALSE(DecodeBlobRef(EncodeBlobRef(ref).substr(1), &out));
  EXPECT_FALSE(DecodeBlobRef(std::string(17, '\0'), &out));
}

}  // namespace
}  // namespace shmdict::internal
