#include "value_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "status_matchers.h"

namespace shmdict::replica {
namespace {

using ::shmdict::testing::IsOkAndHolds;
using ::shmdict::testing::StatusIs;
using ::testing::HasSubstr;

std::string Trailer(ValueType type) { return std::string(kTrailerMagic) + static_cast<char>(type); }

TEST(ValueCodecTest, EveryReplicableTypeRoundTripsExactly) {
  const std::vector<Value> values = {
      Value::Str(""),
      Value::Str("plain text"),
      Value::Str("\xC3\xA9t\xC3\xA9 \xF0\x9F\x8D\x93"),  // été and a strawberry
      Value::Bytes(""),
      Value::Bytes(std::string("\x00\xFF\x80 binary", 10)),
      Value::Bytes("looks like text"),
      // A bytes value that itself ends in a trailer: only the last one is ours.
      Value::Bytes("x" + Trailer(ValueType::kInt64)),
      Value::Int(0),
      Value::Int(-1),
      Value::Int(std::numeric_limits<int64_t>::min()),
      Value::Int(std::numeric_limits<int64_t>::max()),
      Value::Double(0.0),
      Value::Double(-2.5e300),
      Value::Double(std::numeric_limits<double>::infinity()),
      Value::Bool(false),
      Value::Bool(true),
      Value::Json(R"({"a": [1, 2.5, null], "b": "\u00e9"})"),
      Value::Json("null"),
      Value::Null(),
      Value(ValueType::kPickle, std::string("\x80\x04\x95\x00", 4)),
      Value(ValueType::kUserFirst, std::string("\xFF\xFF", 2)),
      Value(static_cast<ValueType>(255), "user payload"),
  };
  for (const Value& value : values) {
    SCOPED_TRACE(TypeName(value.type()) + " " + value.ToText());
    ASSERT_OK_AND_ASSIGN(const std::string encoded, EncodeValue(value, /*allow_pickle=*/true));
    EXPECT_EQ(DecodeValue(encoded, /*allow_pickle=*/true), value);
  }
}

TEST(ValueCodecTest, StringsAreStoredAsTheirTextAndJsonStaysReadable) {
  EXPECT_THAT(EncodeValue(Value::Str("hello"), false), IsOkAndHolds(std::string("hello")));
  EXPECT_THAT(EncodeValue(Value::Json("[1,2]"), false),
              IsOkAndHolds("[1,2]" + Trailer(ValueType::kJson)));
  EXPECT_THAT(EncodeValue(Value::Int(1), false),
              IsOkAndHolds(std::string("\x01\0\0\0\0\0\0\0", 8) + Trailer(ValueType::kInt64)));
}

TEST(ValueCodecTest, ForeignUtf8TextReadsAsStr) {
  EXPECT_EQ(DecodeValue("", false), Value::Str(""));
  EXPECT_EQ(DecodeValue("written by etcdctl", false), Value::Str("written by etcdctl"));
  EXPECT_EQ(DecodeValue(R"({"json": true})", false), Value::Str(R"({"json": true})"));
  // Text that ends in "SD" and a tag-like byte is still text: no 0xFF in UTF-8.
  EXPECT_EQ(DecodeValue("abcSD\x02", false), Value::Str("abcSD\x02"));
}

TEST(ValueCodecTest, ForeignNonUtf8ValuesReadAsBytes) {
  const std::string binary("\x00\x01\xFE\xFF\xC0\xAF", 6);
  EXPECT_EQ(DecodeValue(binary, false), Value::Bytes(binary));
  EXPECT_EQ(DecodeValue("\xED\xA0\x80", false), Value::Bytes("\xED\xA0\x80"));  // a surrogate
}

TEST(ValueCodecTest, ATrailerWhosePayloadIsInvalidReadsAsTheRawBytes) {
  // An int needs 8 bytes, a bool 0 or 1, JSON one JSON text, null nothing: each of these is
  // left exactly as stored, trailer included, and is not UTF-8 (0xFF).
  for (const std::string& raw :
       {"abc" + Trailer(ValueType::kInt64), std::string("\x02") + Trailer(ValueType::kBool),
        "{not json" + Trailer(ValueType::kJson), "x" + Trailer(ValueType::kNull),
        std::string("\xC3") + Trailer(ValueType::kJson)}) {
    SCOPED_TRACE(raw);
    EXPECT_EQ(DecodeValue(raw, true), Value::Bytes(raw));
  }
}

TEST(ValueCodecTest, TrailersOfTagsThatAreNotReplicatedReadAsBytes) {
  // str is never given a trailer; 6 (nested dict) never leaves its host; 9..127 are unassigned.
  for (const ValueType type : {ValueType::kString, ValueType::kNestedDict,
                               static_cast<ValueType>(9), static_cast<ValueType>(127)}) {
    const std::string raw = "payload" + Trailer(type);
    EXPECT_EQ(DecodeValue(raw, true), Value::Bytes(raw)) << static_cast<int>(type);
  }
  // Too short for a trailer, or only part of one.
  EXPECT_EQ(DecodeValue("\xFF\x53\x44", true), Value::Bytes("\xFF\x53\x44"));
  EXPECT_EQ(DecodeValue(Trailer(ValueType::kNull), true), Value::Null());
}

TEST(ValueCodecTest, PicklesOnlyWhereTheOperatorAllowedThem) {
  const Value pickle(ValueType::kPickle, "\x80\x04N.");
  EXPECT_THAT(EncodeValue(pickle, /*allow_pickle=*/false),
              StatusIs(StatusCode::kPermissionDenied, HasSubstr("--allow-pickle")));
  const std::string raw = "\x80\x04N." + Trailer(ValueType::kPickle);
  EXPECT_EQ(DecodeValue(raw, /*allow_pickle=*/false), Value::Bytes(raw));
  EXPECT_EQ(DecodeValue(raw, /*allow_pickle=*/true), pickle);
}

TEST(ValueCodecTest, RefusesNestedDictsAndInvalidEncodings) {
  EXPECT_THAT(EncodeValue(Value(ValueType::kNestedDict, "orders@c1"), true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("nested-dict")));
  EXPECT_THAT(EncodeValue(Value(ValueType::kInt64, "abc"), true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("8 bytes")));
  EXPECT_THAT(EncodeValue(Value(ValueType::kString, "\xFF"), true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
  EXPECT_THAT(EncodeValue(Value(ValueType::kJson, "{"), true),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("JSON")));
}

}  // namespace
}  // namespace shmdict::replica
