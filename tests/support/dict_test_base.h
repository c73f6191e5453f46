// DictTestBase: the fixture every process/crash/corruption test derives from. It hands out dict
// names unique to the test and process, and on TearDown unlinks them and asserts that nothing
// named /dev/shm/shmdict.<name>* is left behind (then removes any leftover so that one failing
// test does not leak into the next).
//
// Also: status assertion macros and helpers to look at /dev/shm directly.
//
// Thread-safety: use from the test's main thread.
#ifndef SHMDICT_TESTS_SUPPORT_DICT_TEST_BASE_H_
#define SHMDICT_TESTS_SUPPORT_DICT_TEST_BASE_H_

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "shmdict/dict.h"
#include "shmdict/status.h"

namespace shmdict::testing {

inline const Status& ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}

// ASSERT_OK(dict->Set(...)) << "context"; EXPECT_OK(Dict::UnlinkByName(name));
// (The switch is gtest's guard against a dangling else.)
#define SHMDICT_STATUS_CHECK_(on_failure, expr)                                       \
  switch (0)                                                                          \
  case 0:                                                                             \
  default:                                                                            \
    if (const ::shmdict::Status shmdict_status_ = ::shmdict::testing::ToStatus(expr); \
        shmdict_status_.ok()) {                                                       \
    } else                                                                            \
      on_failure() << #expr << " returned " << shmdict_status_.ToString()
#define ASSERT_OK(expr) SHMDICT_STATUS_CHECK_(GTEST_FAIL, expr)
#define EXPECT_OK(expr) SHMDICT_STATUS_CHECK_(ADD_FAILURE, expr)

// "/dev/shm/shmdict.NAME": where the main segment of dict NAME lives.
std::string ShmPath(std::string_view name);

// Entries of /dev/shm whose file name starts with "shmdict." + name (the main segment and every
// "@" segment), sorted.
std::vector<std::string> ShmEntriesWithPrefix(std::string_view name);

// The seed for a test's random choices: $SHMDICT_TEST_SEED if set, otherwise random.
uint64_t TestSeed();

// `count` (of kills, rounds) times $SHMDICT_TEST_SCALE (default 1), for soak runs.
int Scaled(int count);

// A dict name for the running test: "<Suite>.<Test>-<pid>-<NNN>" (sanitized, at most 200 bytes).
// The fixed-width counter keeps names prefix-free, so ShmEntriesWithPrefix(a) never matches b.
std::string UniqueDictName();

class DictTestBase : public ::testing::Test {
 protected:
  DictTestBase();
  void TearDown() override;

  // Another name for this test, also cleaned up and checked on TearDown.
  std::string NewDictName();

  // Options creating `name` (kMustCreate) with the creator's handle unlinking it on close.
  static Options CreateOptions(const std::string& name);
  // Options attaching to `name` (kMustAttach) without ever unlinking it.
  static Options AttachOptions(const std::string& name);

  // "SHMDICT_TEST_SEED=N replays this run": for SCOPED_TRACE in tests that use rng_.
  std::string SeedTrace() const;
  // Uniform in [0, below).
  uint64_t Random(uint64_t below) { return rng_() % below; }

  // The test's main dict name.
  const std::string name_;
  // Random choices of a test come from rng_, seeded from SHMDICT_TEST_SEED if set, else randomly.
  const uint64_t seed_;
  std::mt19937_64 rng_;

 private:
  std::vector<std::string> names_;
};

}  // namespace shmdict::testing

#endif  // SHMDICT_TESTS_SUPPORT_DICT_TEST_BASE_H_
