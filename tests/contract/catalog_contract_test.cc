// The Catalog contract (core/api/include/shmdict/catalog.h), written once and run against every
// implementation: LocalCatalog and, when the bridge is built, RemoteCatalog through a real
// shmdict-bridge started with --allow-create. The local catalog of this process is the ground
// truth: what the catalog under test reports must match it, and what it changes must show there.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "dict_test_base.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shmdict/catalog.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#if SHMDICT_CONTRACT_REMOTE
#include "bridge_process.h"
#include "shmdict/remote_catalog.h"
#endif

namespace shmdict::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

struct CatalogKind {
  const char* name;
  bool remote;
};

const CatalogKind kCatalogs[] = {
    {"LocalCatalog", false},
#if SHMDICT_CONTRACT_REMOTE
    {"RemoteCatalog", true},
#endif
};

void PrintTo(const CatalogKind& kind, std::ostream* os) { *os << kind.name; }

class CatalogContractTest : public DictTestBase, public ::testing::WithParamInterface<CatalogKind> {
 protected:
  void SetUp() override { catalog_ = OpenCatalog(); }
  void TearDown() override {
    catalog_.reset();
    DictTestBase::TearDown();
  }
#if SHMDICT_CONTRACT_REMOTE
  static void TearDownTestSuite() { bridge_.reset(); }
  static BridgeProcess& Bridge() {
    if (!bridge_) {
      bridge_ = std::make_unique<BridgeProcess>(std::vector<std::string>{},
                                                std::vector<std::string>{"--allow-create"});
      EXPECT_TRUE(bridge_->Start());
    }
    return *bridge_;
  }
  static inline std::unique_ptr<BridgeProcess> bridge_;
#endif

  std::unique_ptr<Catalog> OpenCatalog() {
    if (!GetParam().remote) return std::make_unique<LocalCatalog>();
#if SHMDICT_CONTRACT_REMOTE
    return std::make_unique<RemoteCatalog>(
        RemoteOptions{.address = Bridge().address(), .mirror = false});
#else
    return nullptr;
#endif
  }

  std::unique_ptr<Catalog> catalog_;
  LocalCatalog truth_;
};

TEST_P(CatalogContractTest, CreateMakesTheDictAndFindsItTheSecondTime) {
  ASSERT_THAT(catalog_->Create(name_, {}), IsOkAndHolds(true));
  ASSERT_OK(truth_.Inspect(name_));
  EXPECT_THAT(catalog_->Create(name_, {}), IsOkAndHolds(false));
  EXPECT_THAT(catalog_->Create(name_, {.exclusive = true}), StatusIs(StatusCode::kAlreadyExists));
  ASSERT_OK(truth_.Unlink(name_));
}

TEST_P(CatalogContractTest, ListNamesIsSortedAndHasEveryDict) {
  ASSERT_OK(truth_.Create(name_, {}));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> names, catalog_->ListNames());
  EXPECT_THAT(names, Contains(name_));
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const std::string& name : names) EXPECT_EQ(name.find('@'), std::string::npos) << name;
  ASSERT_OK(truth_.Unlink(name_));
}

TEST_P(CatalogContractTest, InspectReportsWhatTheDictsHostSees) {
  Options options = DictTestBase::CreateOptions(name_);
  ASSERT_OK_AND_ASSIGN(Dict dict, Dict::Open(options));
  ASSERT_OK(dict.Set("a", Value::Int(1)));
  ASSERT_OK(dict.Set("b", Value::Int(2)));
  ASSERT_OK_AND_ASSIGN(DictStatus status, catalog_->Inspect(name_));
  ASSERT_OK_AND_ASSIGN(DictStatus truth, truth_.Inspect(name_));
  EXPECT_EQ(status.name, name_);
  EXPECT_EQ(status.revision, truth.revision);
  EXPECT_EQ(status.entries, 2u);
  EXPECT_EQ(status.layout_version, Dict::LayoutVersion());
  EXPECT_EQ(status.log_capacity, truth.log_capacity);
  EXPECT_EQ(status.mode, truth.mode);
  EXPECT_EQ(status.creator_pid, truth.creator_pid);
  EXPECT_EQ(status.attached, true);
  EXPECT_EQ(status.abandoned(), false);
  // Only what is about the caller, or about the transport, differs.
  EXPECT_EQ(status.lock_holder_in_this_pid_namespace.has_value(), !GetParam().remote);
  EXPECT_EQ(status.bridge.has_value(), GetParam().remote);
}

TEST_P(CatalogContractTest, UnlinkRemovesTheDictAndAMissingOneIsNotFound) {
  ASSERT_OK(truth_.Create(name_, {}));
  ASSERT_OK(catalog_->Unlink(name_));
  EXPECT_THAT(truth_.Inspect(name_), StatusIs(StatusCode::kNotFound));
  EXPECT_THAT(catalog_->Unlink(name_), StatusIs(StatusCode::kNotFound));
}

TEST_P(CatalogContractTest, AMissingDictIsNotFoundEverywhereAndNeverCreated) {
  EXPECT_THAT(catalog_->Inspect(name_), StatusIs(StatusCode::kNotFound, HasSubstr(name_)));
  EXPECT_THAT(catalog_->OpenStore(name_), StatusIs(StatusCode::kNotFound, HasSubstr("create it")));
  EXPECT_THAT(truth_.Inspect(name_), StatusIs(StatusCode::kNotFound))
      << "a lookup must never create the dict";
}

TEST_P(CatalogContractTest, OpenStoreReachesTheSameDict) {
  ASSERT_OK(truth_.Create(name_, {}));
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, catalog_->OpenStore(name_));
    ASSERT_OK_AND_ASSIGN(uint64_t revision, store->Set("k", Value::Str("v")));
    ASSERT_OK_AND_ASSIGN(DictStatus truth, truth_.Inspect(name_));
    EXPECT_EQ(truth.revision, revision);
    EXPECT_EQ(truth.entries, 1u);
  }
  ASSERT_OK(truth_.Unlink(name_));
}

TEST_P(CatalogContractTest, TheCatalogItselfIsHealthy) {
  EXPECT_THAT(catalog_->CheckHealth(""), IsOkAndHolds(true));
}

TEST_P(CatalogContractTest, ABadNameIsAnInvalidArgumentAndCreatesNothing) {
  EXPECT_THAT(catalog_->Inspect("../escape"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(catalog_->Create("../escape", {}), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(catalog_->Create("has/slash", {}), StatusIs(StatusCode::kInvalidArgument));
}

TEST_P(CatalogContractTest, AFileModeIsHonouredLocallyAndRefusedRemotely) {
  // A remote client must not widen who maps the bridge host's memory: the bridge's
  // --create-mode decides there.
  Result<bool> created = catalog_->Create(name_, {.mode = 0640});
  if (GetParam().remote) {
    EXPECT_THAT(created, StatusIs(StatusCode::kInvalidArgument, HasSubstr("--create-mode")));
    EXPECT_THAT(truth_.Inspect(name_), StatusIs(StatusCode::kNotFound));
    return;
  }
  ASSERT_THAT(created, IsOkAndHolds(true));
  EXPECT_EQ(truth_.Inspect(name_)->mode, std::optional<mode_t>(0640));
  ASSERT_OK(truth_.Unlink(name_));
}

#if SHMDICT_CONTRACT_REMOTE
TEST(RemoteCatalogTest, NoBridgeThereIsUnavailableNeverNotFound) {
  RemoteCatalog nowhere(RemoteOptions{.address = "unix:/nonexistent/shmdict-no-bridge.sock",
                                      .call_timeout = std::chrono::milliseconds(500)});
  EXPECT_THAT(nowhere.ListNames(), StatusIs(StatusCode::kUnavailable));
  EXPECT_THAT(nowhere.Inspect("orders"), StatusIs(StatusCode::kUnavailable));
  EXPECT_THAT(nowhere.Unlink("orders"), StatusIs(StatusCode::kUnavailable));
}
#endif

INSTANTIATE_TEST_SUITE_P(Catalogs, CatalogContractTest, ::testing::ValuesIn(kCatalogs),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace shmdict::testing
