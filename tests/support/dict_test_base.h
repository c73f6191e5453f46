// DictTestBase: the one dict fixture of the shmdict::testing kit, derived from by the core's unit
// tests, the process/crash/corruption tests, the bridge tests and the Store contract suite. It
// hands out dict names unique to the test and process, and on TearDown unlinks them and asserts
// that nothing named /dev/shm/shmdict.<name>* is left behind (then removes any leftover so that
// one failing test does not leak into the next).
//
// Also: helpers to look at /dev/shm directly, and (through status_matchers.h) ASSERT_OK and the
// status matchers.
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
#include "status_matchers.h"

namespace shmdict::testing {

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
  // A name this test did not choose (a dict opened without one), cleaned up and checked the same.
  void TrackDictName(std::string name) { names_.push_back(std::move(name)); }

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
