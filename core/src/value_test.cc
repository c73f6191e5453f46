// The value rules every writer path applies to foreign bytes (ValueEncoding) and every reader and
// the engine apply to nested references (CheckNestedReference, IsNestedChildName): value.h.
#include "shmdict/value.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "status_matchers.h"

namespace shmdict {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

Status Validate(ValueType type, std::string_view bytes) { return ValidateEncoding({type, bytes}); }

TEST(ValueEncodingTest, NumbersMustHoldExactlyEightBytes) {
  EXPECT_OK(Validate(ValueType::kInt64, Value::Int(-3).data()));
  EXPECT_OK(Validate(ValueType::kDouble, Value::Double(0.5).data()));
  EXPECT_THAT(Validate(ValueType::kInt64, std::string(3, '\1')),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("8 bytes, not 3")));
  EXPECT_THAT(Validate(ValueType::kDouble, std::string(9, '\0')),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("8 bytes")));
  EXPECT_THAT(Validate(ValueType::kInt64, ""), StatusIs(StatusCode::kInvalidArgument));
}

TEST(ValueEncodingTest, ABoolIsOneByteZeroOrOne) {
  EXPECT_OK(Validate(ValueType::kBool, Value::Bool(true).data()));
  EXPECT_OK(Validate(ValueType::kBool, Value::Bool(false).data()));
  EXPECT_THAT(Validate(ValueType::kBool, std::string(5, '\1')),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("bool")));
  EXPECT_THAT(Validate(ValueType::kBool, std::string(1, '\2')),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("0 or 1")));
  EXPECT_THAT(Validate(ValueType::kBool, ""), StatusIs(StatusCode::kInvalidArgument));
}

TEST(ValueEncodingTest, StringsMustBeStrictUtf8) {
  EXPECT_OK(Validate(ValueType::kString, ""));
  EXPECT_OK(Validate(ValueType::kString, "plain"));
  EXPECT_OK(Validate(ValueType::kString, "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_OK(Validate(ValueType::kString, "\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
  for (const std::string& bad : {
           std::string("\xFF"),              // never a UTF-8 byte
           std::string("ab\xC3"),            // truncated sequence
           std::string("\xC3\x28"),          // bad continuation byte
           std::string("\xC0\xAF"),          // overlong '/'
           std::string("\xE0\x80\xAF"),      // overlong '/' in three bytes
           std::string("\xED\xA0\x80"),      // U+D800, a surrogate
           std::string("\xED\xBF\xBF"),      // U+DFFF, a surrogate
           std::string("\xF4\x90\x80\x80"),  // above U+10FFFF
       }) {
    EXPECT_THAT(Validate(ValueType::kString, bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("UTF-8")))
        << ::testing::PrintToString(bad);
  }
}

TEST(ValueEncodingTest, JsonMustBeOneJsonTextInUtf8) {
  for (const char* good : {"{}", "[1, 2.5, \"x\"]", "\"text\"", "null", "  42 ", "{\"a\": {}}"}) {
    EXPECT_OK(Validate(ValueType::kJson, good)) << good;
  }
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "nul", "{} x", "1 2", "[] []"}) {
    EXPECT_THAT(Validate(ValueType::kJson, bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("JSON")))
        << bad;
  }
  EXPECT_THAT(Validate(ValueType::kJson, "\"\xC0\xAF\""),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("UTF-8")));
}

TEST(ValueEncodingTest, NullIsEmptyAndOpaqueTagsTakeAnyBytes) {
  EXPECT_OK(Validate(ValueType::kNull, ""));
  EXPECT_THAT(Validate(ValueType::kNull, "x"), StatusIs(StatusCode::kInvalidArgument));
  const std::string noise("\xFF\x00\xC0\xAF", 4);
  EXPECT_OK(Validate(ValueType::kBytes, noise));
  EXPECT_OK(Validate(ValueType::kPickle, noise));
  EXPECT_OK(Validate(static_cast<ValueType>(200), noise));
}

TEST(ValueEncodingTest, ANestedDictValueMustBeANestedChildName) {
  EXPECT_OK(Validate(ValueType::kNestedDict, "orders@c0123456789ab"));
  EXPECT_OK(Validate(ValueType::kNestedDict, "orders@c1@cff"));
  for (const char* bad : {"", "orders", "orders@s1", "orders@c", "@c12", "orders@cXY"}) {
    EXPECT_THAT(Validate(ValueType::kNestedDict, bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("nested child")))
        << bad;
  }
}

TEST(NestedNameTest, OnlyChildComponentsOfOneToThirtyTwoLowercaseHexDigitsMakeAChildName) {
  EXPECT_TRUE(IsNestedChildName("a@c0"));
  EXPECT_TRUE(IsNestedChildName("orders@c0123456789abcdef"));
  EXPECT_TRUE(IsNestedChildName("orders@c" + std::string(32, 'f')));
  EXPECT_TRUE(IsNestedChildName("orders@c1@c2@cabc"));  // a child's child's child
  EXPECT_FALSE(IsNestedChildName("orders@c" + std::string(33, 'f'))) << "33 hex digits";
  EXPECT_FALSE(IsNestedChildName("orders@cABC")) << "uppercase hex";
  EXPECT_FALSE(IsNestedChildName("orders@c12g"));
  EXPECT_FALSE(IsNestedChildName("orders"));
  EXPECT_FALSE(IsNestedChildName("@c12")) << "no parent";
  EXPECT_FALSE(IsNestedChildName("orders@c"));
  EXPECT_FALSE(IsNestedChildName("orders@c12@"));
  EXPECT_FALSE(IsNestedChildName("orders@c12@s3"));
  // The internal segments of a dict: snapshots, retired snapshots, large values.
  for (const char* segment : {"orders@s1", "orders@r2", "orders@b7", "orders@x", "orders@"}) {
    EXPECT_FALSE(IsNestedChildName(segment)) << segment;
  }
}

TEST(NestedNameTest, AReferenceMustNameADirectChildOfItsOwnDict) {
  EXPECT_OK(CheckNestedReference("orders", "orders@c1a2b"));
  EXPECT_OK(CheckNestedReference("orders@c1", "orders@c1@c2"));
  EXPECT_OK(CheckNestedReference("orders", "orders@c" + std::string(32, 'a')));
  for (const std::string& bad : {
           std::string("other@c1a2b"),   // another dict's child
           std::string("other"),         // another top-level dict
           std::string("orders"),        // the dict itself
           std::string("orders@c1@c2"),  // a grandchild
           std::string("orders2@c1"),    // a dict whose name extends this one's
           std::string("orders@s1"),     // an internal segment
           std::string("orders@c") + std::string(33, 'a'),
           std::string("orders@cABC"),
           std::string(""),
       }) {
    EXPECT_THAT(CheckNestedReference("orders", bad),
                StatusIs(StatusCode::kInvalidArgument, HasSubstr("orders")))
        << bad;
  }
  EXPECT_THAT(CheckNestedReference("orders@c1", "orders@c2"),
              StatusIs(StatusCode::kInvalidArgument))
      << "a sibling is not a child";
}

}  // namespace
}  // namespace shmdict
