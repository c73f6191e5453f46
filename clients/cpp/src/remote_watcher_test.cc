// IncarnationIn: the incarnation a bridge names in its metadata, which arrives from a socket and
// so is parsed as untrusted input.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "remote_watcher.h"
#include "shmdict/v1/wire.h"

namespace shmdict::client {
namespace {

// Metadata as gRPC hands it over: views of bytes that `storage` keeps.
class Metadata {
 public:
  Metadata& Add(std::string key, std::string value) {
    storage_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  std::multimap<grpc::string_ref, grpc::string_ref> View() const {
    std::multimap<grpc::string_ref, grpc::string_ref> view;
    for (const auto& [key, value] : storage_) {
      view.emplace(grpc::string_ref(key.data(), key.size()),
                   grpc::string_ref(value.data(), value.size()));
    }
    return view;
  }

 private:
  std::vector<std::pair<std::string, std::string>> storage_;
};

const std::string kKey(wire::kIncarnationMetadata);

uint64_t Parse(const std::string& value) {
  return IncarnationIn(Metadata().Add(kKey, value).View());
}

TEST(IncarnationInTest, ReadsTheDecimalValueTheBridgeSends) {
  EXPECT_EQ(Parse("1"), 1u);
  EXPECT_EQ(Parse("123456789"), 123456789u);
  EXPECT_EQ(Parse("18446744073709551615"), UINT64_MAX);
  EXPECT_EQ(Parse("007"), 7u);  // digits only, so leading zeros are still decimal
  // Among other keys, as a real response carries them.
  EXPECT_EQ(
      IncarnationIn(Metadata().Add("content-type", "application/grpc").Add(kKey, "42").View()),
      42u);
}

TEST(IncarnationInTest, NoKeyIsUnknown) {
  EXPECT_EQ(IncarnationIn({}), 0u);
  EXPECT_EQ(IncarnationIn(Metadata().Add("shmdict-incarnations", "5").View()), 0u);
  EXPECT_EQ(IncarnationIn(Metadata().Add("shmdict-incarnatio", "5").View()), 0u);
}

TEST(IncarnationInTest, AnythingButDigitsIsUnknownNeverAPartialParse) {
  for (const std::string& bad :
       {std::string(), std::string("+5"), std::string("-5"), std::string(" 5"), std::string("5 "),
        std::string("\t5"), std::string("5\n"), std::string("0x10"), std::string("12abc"),
        std::string("1.5"), std::string("1e3"), std::string("abc"),
        std::string("5", 1) + std::string(1, '\0') + "7", std::string(1, '\0') + "5",
        std::string("5") + std::string(1, '\0'), std::string("\xef\xbc\x95")}) {
    SCOPED_TRACE(::testing::PrintToString(bad));
    EXPECT_EQ(Parse(bad), 0u);
  }
}

// 0 is what "unknown" is, so a bridge naming incarnation 0 names none: a handle must not take
// it for a dict of its own (nor for another one than a dict it knows).
TEST(IncarnationInTest, ZeroReadsAsUnknown) {
  EXPECT_EQ(Parse("0"), 0u);
  EXPECT_EQ(Parse("000"), 0u);
}

TEST(IncarnationInTest, AValueBeyondUint64IsUnknown) {
  EXPECT_EQ(Parse("18446744073709551616"), 0u);  // UINT64_MAX + 1
  EXPECT_EQ(Parse("99999999999999999999999999999999"), 0u);
  EXPECT_EQ(Parse(std::string(5000, '9')), 0u);
}

TEST(IncarnationInTest, TwoValuesAreUnknownEvenWhenTheyAgree) {
  EXPECT_EQ(IncarnationIn(Metadata().Add(kKey, "5").Add(kKey, "6").View()), 0u);
  EXPECT_EQ(IncarnationIn(Metadata().Add(kKey, "5").Add(kKey, "5").View()), 0u);
  EXPECT_EQ(IncarnationIn(Metadata().Add(kKey, "5").Add(kKey, "").View()), 0u);
}

}  // namespace
}  // namespace shmdict::client
