// CrashTestBase: the fixture of the crash tests (tests/crash_test.cc: SIGKILLs at random points;
// tests/crash_points_test.cc: SIGKILLs at named steps). Writers in other processes print
// "acked <i> <revision>" after each Set returned; once such a writer is dead, this process checks
// what a user would: it can write within the lock timeout, every acknowledged write is there with
// its value, and the dict holds exactly the committed writes.
//
// Thread-safety: use from the test's main thread.
#ifndef SHMDICT_TESTS_SUPPORT_CRASH_TEST_BASE_H_
#define SHMDICT_TESTS_SUPPORT_CRASH_TEST_BASE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "worker_process.h"

namespace shmdict::testing {

inline constexpr uint64_t kSmallLog = 64 * 1024;
inline constexpr std::chrono::milliseconds kLockTimeout = std::chrono::seconds(5);
inline constexpr const char* kForever = "100000000";  // a COUNT a writer never reaches

// Follows a writer's "acked <i> ..." lines: they must come in order; an "error" line is a test
// failure.
class AckTracker {
 public:
  explicit AckTracker(const WorkerProcess& writer) : writer_(writer) {}
  // Takes one line of the writer's output; true if it was an acknowledgement.
  bool Take(const std::string& line);
  // The highest index acknowledged (-1: none).
  int64_t acked() const { return acked_; }

 private:
  const WorkerProcess& writer_;
  int64_t acked_ = -1;
};

class CrashTestBase : public DictTestBase {
 protected:
  Options CrashOptions() const;

  // Spawns a writer, waits for `first_line` (if any), lets it acknowledge `acks` writes (0: none,
  // the kill may then land before or while it attaches), SIGKILLs it and returns the highest
  // index it acknowledged, counting the acks still in the pipe (-1: none).
  int64_t SpawnAndKill(const std::vector<std::string>& args, int acks,
                       const char* first_line = nullptr);

  // Right after a kill: a write from this process goes through within the lock timeout, and the
  // dict catches up without error.
  void ExpectWritableAndReadable(Dict& dict);

  // After a writer using `prefix` was killed having acknowledged indexes 0..acked: this process
  // writes within the lock timeout, and the dict holds every acknowledged write and exactly what
  // was committed.
  void ExpectSurvivedKill(Dict& dict, const std::string& prefix, int64_t acked);

  // The part of ExpectSurvivedKill about one writer: its writes 0..acked are there with their
  // values; committed_[prefix] then counts them (and the one after, if it committed too).
  void ExpectAcknowledgedWritesKept(Dict& dict, const std::string& prefix, int64_t acked);

  // Every key is PREFIX.i with i below committed_[PREFIX], with its value; none is missing.
  void ExpectHoldsExactlyTheCommittedWrites(Dict& dict);

  std::map<std::string, int64_t, std::less<>> committed_;  // prefix -> entries PREFIX.0 ..
  int64_t writes_after_kills_ = 0;
};

}  // namespace shmdict::testing

#endif  // SHMDICT_TESTS_SUPPORT_CRASH_TEST_BASE_H_
