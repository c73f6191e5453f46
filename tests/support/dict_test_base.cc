#include "dict_test_base.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace shmdict::testing {
namespace {

constexpr std::string_view kShmDir = "/dev/shm/";
constexpr std::string_view kSegmentPrefix = "shmdict.";

}  // namespace

std::string ShmPath(std::string_view name) {
  return std::string(kShmDir) + std::string(kSegmentPrefix) + std::string(name);
}

std::vector<std::string> ShmEntriesWithPrefix(std::string_view name) {
  const std::string prefix = std::string(kSegmentPrefix) + std::string(name);
  std::vector<std::string> found;
  DIR* dir = opendir(std::string(kShmDir).c_str());
  if (dir == nullptr) return found;
  while (dirent* e = readdir(dir)) {
    std::string_view entry = e->d_name;
    if (entry.starts_with(prefix)) found.emplace_back(entry);
  }
  closedir(dir);
  std::sort(found.begin(), found.end());
  return found;
}

std::string UniqueDictName() {
  static int counter = 0;
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string base = info != nullptr
                         ? std::string(info->test_suite_name()) + "." + std::string(info->name())
                         : std::string("shmdict_test");
  for (char& c : base) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) c = '_';
  }
  if (base.size() > 150) base.resize(150);
  char suffix[48];
  std::snprintf(suffix, sizeof(suffix), "-%d-%03d", static_cast<int>(getpid()), counter++);
  return base + suffix;
}

int Scaled(int count) {
  const char* env = std::getenv("SHMDICT_TEST_SCALE");
  const long scale = env != nullptr ? std::strtol(env, nullptr, 10) : 1;
  return count * static_cast<int>(std::max(1L, scale));
}

uint64_t TestSeed() {
  const char* env = std::getenv("SHMDICT_TEST_SEED");
  if (env != nullptr && *env != '\0') return std::strtoull(env, nullptr, 10);
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

DictTestBase::DictTestBase() : name_(UniqueDictName()), seed_(TestSeed()), rng_(seed_) {
  names_.push_back(name_);
}

std::string DictTestBase::SeedTrace() const {
  return "SHMDICT_TEST_SEED=" + std::to_string(seed_) + " replays this run";
}

std::string DictTestBase::NewDictName() {
  names_.push_back(UniqueDictName());
  return names_.back();
}

Options DictTestBase::CreateOptions(const std::string& name) {
  Options options;
  options.name = name;
  options.create_mode = CreateMode::kMustCreate;
  options.auto_unlink = true;
  return options;
}

Options DictTestBase::AttachOptions(const std::string& name) {
  Options options;
  options.name = name;
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  return options;
}

void DictTestBase::TearDown() {
  for (const std::string& name : names_) {
    const Status unlinked = Dict::UnlinkByName(name);
    EXPECT_THAT(unlinked, ::testing::AnyOf(IsOk(), StatusIs(StatusCode::kNotFound)))
        << "UnlinkByName(" << name << ")";
    const std::vector<std::string> left = ShmEntriesWithPrefix(name);
    std::string listing;
    for (const std::string& entry : left) listing += " " + entry;
    EXPECT_TRUE(left.empty()) << "left behind in /dev/shm after UnlinkByName:" << listing;
    for (const std::string& entry : left) {
      std::remove((std::string(kShmDir) + entry).c_str());
    }
  }
}

}  // namespace shmdict::testing
