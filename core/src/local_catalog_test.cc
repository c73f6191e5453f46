#include "shmdict/local_catalog.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>

#include "dict_test_base.h"
#include "segment.h"
#include "shmdict/dict.h"
#include "shmdict/dict_status.h"

namespace shmdict {
namespace {

class LocalCatalogTest : public testing::DictTestBase {
 protected:
  LocalCatalog catalog_;
};

TEST_F(LocalCatalogTest, CreateFindsAnExistingDictAndExclusiveRefusesIt) {
  auto created = catalog_.Create(name_, {.mode = 0640});
  ASSERT_OK(created);
  EXPECT_TRUE(*created);
  auto again = catalog_.Create(name_, {});
  ASSERT_OK(again);
  EXPECT_FALSE(*again);
  EXPECT_EQ(catalog_.Create(name_, {.exclusive = true}).status().code(),
            StatusCode::kAlreadyExists);
  auto status = catalog_.Inspect(name_);
  ASSERT_OK(status);
  EXPECT_EQ(status->mode, std::optional<mode_t>(0640));
  EXPECT_EQ(status->attached, false) << "Create must not keep the dict open";
}

TEST_F(LocalCatalogTest, InspectFillsEveryFieldButTheBridge) {
  Options options{.name = name_, .auto_unlink = false};
  auto dict = Dict::Open(options);
  ASSERT_OK(dict);
  ASSERT_OK(dict->Set("a", Value::Int(1)));
  auto status = catalog_.Inspect(name_);
  ASSERT_OK(status);
  for (const StatusField& field : StatusFields()) {
    if (field.name == "bridge") {
      EXPECT_FALSE(field.get(*status).has_value());
    } else {
      EXPECT_TRUE(field.get(*status).has_value()) << field.name << " unknown locally";
    }
  }
  EXPECT_EQ(status->entries, 1u);
  EXPECT_EQ(status->attached, true);
  EXPECT_EQ(status->abandoned(), false);
}

TEST_F(LocalCatalogTest, MissingDictsAreNotFoundWithTheCommandThatCreatesThem) {
  auto status = catalog_.Inspect(name_);
  EXPECT_EQ(status.status().code(), StatusCode::kNotFound);
  EXPECT_NE(status.status().message().find("shmdict create " + name_), std::string::npos)
      << status.status().message();
  EXPECT_EQ(catalog_.OpenStore(name_).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(catalog_.Unlink(name_).code(), StatusCode::kNotFound);
  EXPECT_EQ(catalog_.CheckHealth(name_).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(internal::ListSegments(name_).empty()) << "a lookup must never create the dict";
}

TEST_F(LocalCatalogTest, ListsOpensAndUnlinks) {
  ASSERT_OK(catalog_.Create(name_, {}));
  auto names = catalog_.ListNames();
  ASSERT_OK(names);
  EXPECT_NE(std::find(names->begin(), names->end(), name_), names->end());
  EXPECT_TRUE(std::is_sorted(names->begin(), names->end()));
  EXPECT_THAT(catalog_.CheckHealth(name_), testing::IsOkAndHolds(true));
  {
    auto store = catalog_.OpenStore(name_);
    ASSERT_OK(store);
    ASSERT_OK((*store)->Set("k", Value::Str("v")));
  }
  EXPECT_EQ(catalog_.Inspect(name_)->entries, 1u);
  EXPECT_OK(catalog_.Unlink(name_));
  EXPECT_EQ(catalog_.Inspect(name_).status().code(), StatusCode::kNotFound);
}

TEST(StatusFieldsTest, NamesAreUniqueAndEachSetterFeedsItsGetter) {
  std::set<std::string_view> names;
  DictStatus status;
  for (const StatusField& field : StatusFields()) {
    EXPECT_TRUE(names.insert(field.name).second) << "duplicate field " << field.name;
    StatusFieldValue value = field.kind == StatusFieldKind::kText   ? StatusFieldValue("x")
                             : field.kind == StatusFieldKind::kFlag ? StatusFieldValue(true)
                                                                    : StatusFieldValue(uint64_t{7});
    field.set(status, value);
    EXPECT_EQ(field.get(status), std::optional<StatusFieldValue>(value)) << field.name;
  }
  EXPECT_TRUE(names.contains("name"));
  EXPECT_EQ(OctalFileMode(0600), "0600");
  EXPECT_EQ(OctalFileMode(01777), "1777");
}

TEST(StatusFieldsTest, AbandonedIsUnknownUnlessBothFactsAreKnown) {
  DictStatus status;
  EXPECT_EQ(status.abandoned(), std::nullopt);
  status.creator_alive = false;
  EXPECT_EQ(status.abandoned(), std::nullopt);
  status.attached = false;
  EXPECT_EQ(status.abandoned(), true);
  status.attached = true;
  EXPECT_EQ(status.abandoned(), false);
}

// The catalog takes dict names only: an internal segment's name is refused by every call, '@' by
// Create, a leading '-' everywhere; a nested child stays reachable.
TEST_F(LocalCatalogTest, InternalSegmentAndDashedNamesAreRefused) {
  Options options{.name = name_, .auto_unlink = false};
  auto dict = Dict::Open(options);
  ASSERT_OK(dict);
  ASSERT_OK(dict->Set("a", Value::Int(1)));
  auto generation = dict->Dump();
  ASSERT_OK(generation);
  const std::string snapshot = name_ + "@s" + std::to_string(*generation);
  for (const std::string& bad : {snapshot, name_ + "@b3", "-" + name_}) {
    EXPECT_EQ(catalog_.Inspect(bad).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(catalog_.Unlink(bad).code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(catalog_.Create(bad, {}).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(catalog_.Create(name_ + "@c12", {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(std::filesystem::exists(testing::ShmPath(snapshot)));
  auto child = dict->OpenNested("child");
  ASSERT_OK(child);
  const std::string child_name = child->name();
  EXPECT_OK(catalog_.Inspect(child_name));
  ASSERT_OK(child->Close());
  EXPECT_OK(catalog_.Unlink(child_name));
  ASSERT_OK(dict->Refresh(/*force=*/true));
  EXPECT_EQ((*dict->Get("a"))->AsInt(), 1);
  ASSERT_OK(dict->Close());
}

}  // namespace
}  // namespace shmdict
