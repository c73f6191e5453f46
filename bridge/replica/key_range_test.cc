#include "key_range.h"

#include <gtest/gtest.h>

#include <string>

#include "shmdict/dict.h"

namespace shmdict::replica {
namespace {

TEST(KeyRangeTest, PrefixEndIncrementsTheLastByteThatIsNotFF) {
  EXPECT_EQ(PrefixRangeEnd("/app/"), "/app0");
  EXPECT_EQ(PrefixRangeEnd("a"), "b");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\xFF", 2)), "b");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\xFE\xFF\xFF", 4)), std::string("a\xFF", 2));
  EXPECT_EQ(PrefixRangeEnd(std::string("\x00", 1)), std::string("\x01", 1));
}

TEST(KeyRangeTest, APrefixWithoutEndCoversEveryKeyFromIt) {
  EXPECT_EQ(PrefixRangeEnd(""), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeEnd("\xFF\xFF"), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeKey(""), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeKey("/app/"), "/app/");
}

TEST(KeyRangeTest, LocalKeysAreTheBytesAfterThePrefix) {
  EXPECT_EQ(LocalKeyOf("/app/k", "/app/"), "k");
  EXPECT_EQ(LocalKeyOf(std::string("/app/\x00\xFF", 7), "/app/"), std::string("\x00\xFF", 2));
  EXPECT_EQ(LocalKeyOf("k", ""), "k");
  EXPECT_EQ(EtcdKeyOf("k", "/app/"), "/app/k");
  EXPECT_EQ(EtcdKeyOf("k", ""), "k");
  EXPECT_EQ(LocalKeyOf(EtcdKeyOf(std::string("\xFF", 1), "/a"), "/a"), std::string("\xFF", 1));
}

TEST(KeyRangeTest, KeysTheReplicaCannotHoldAreSkipped) {
  EXPECT_EQ(LocalKeyOf("/app/", "/app/"), std::nullopt);  // its local key would be empty
  EXPECT_EQ(LocalKeyOf("/other/k", "/app/"), std::nullopt);
  EXPECT_EQ(LocalKeyOf("/ap", "/app/"), std::nullopt);
  const std::string longest(kMaxKeyBytes, 'k');
  EXPECT_EQ(LocalKeyOf("/app/" + longest, "/app/"), longest);
  EXPECT_EQ(LocalKeyOf("/app/" + longest + "k", "/app/"), std::nullopt);
}

}  // namespace
}  // namespace shmdict::replica
