#include "crash_test_base.h"

#include <signal.h>

#include <cstdlib>
#include <optional>

#include "workload.h"

namespace shmdict::testing {

bool AckTracker::Take(const std::string& line) {
  if (line.starts_with("error")) ADD_FAILURE() << writer_.description() << ": " << line;
  if (!line.starts_with("acked ")) return false;
  const int64_t index = std::strtoll(line.c_str() + 6, nullptr, 10);
  EXPECT_EQ(index, acked_ + 1) << "the writer acknowledges in order";
  acked_ = index;
  return true;
}

Options CrashTestBase::CrashOptions() const {
  Options options = CreateOptions(name_);
  options.lock_timeout = kLockTimeout;
  return options;
}

int64_t CrashTestBase::SpawnAndKill(const std::vector<std::string>& args, int acks,
                                    const char* first_line) {
  auto writer = SpawnWorker(args);
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  if (first_line != nullptr) {
    EXPECT_TRUE(writer->AwaitLine(first_line, deadline));
  }
  AckTracker tracker(*writer);
  std::string line;
  for (int seen = 0; seen < acks && !HasFailure();) {
    if (writer->ReadLine(&line, deadline) != LineStatus::kLine) {
      ADD_FAILURE() << writer->description() << " stopped before its kill; output:\n"
                    << writer->output();
      break;
    }
    if (tracker.Take(line)) ++seen;
  }
  const ExitInfo exit = writer->KillAndWait();
  EXPECT_TRUE(exit.KilledBy(SIGKILL))
      << writer->description() << " " << exit.ToString() << "; output:\n"
      << writer->output();
  for (const std::string& rest : writer->TakeLines()) tracker.Take(rest);
  return tracker.acked();
}

void CrashTestBase::ExpectWritableAndReadable(Dict& dict) {
  const auto start = Clock::now();
  Result<uint64_t> rev =
      dict.Set(KeyFor("after", writes_after_kills_), ValueFor(writes_after_kills_, 0));
  const auto elapsed = Clock::now() - start;
  ASSERT_OK(rev) << " (a write right after the kill)";
  EXPECT_LT(elapsed, kLockTimeout);
  committed_["after"] = ++writes_after_kills_;
  ASSERT_OK(dict.Refresh());
}

void CrashTestBase::ExpectSurvivedKill(Dict& dict, const std::string& prefix, int64_t acked) {
  ASSERT_NO_FATAL_FAILURE(ExpectWritableAndReadable(dict));
  ASSERT_NO_FATAL_FAILURE(ExpectAcknowledgedWritesKept(dict, prefix, acked));
  ExpectHoldsExactlyTheCommittedWrites(dict);
}

void CrashTestBase::ExpectAcknowledgedWritesKept(Dict& dict, const std::string& prefix,
                                                 int64_t acked) {
  Value value;
  for (int64_t i = 0; i <= acked; ++i) {
    ASSERT_TRUE(*dict.Get(KeyFor(prefix, i), &value))
        << "acknowledged write " << KeyFor(prefix, i) << " was lost";
    ASSERT_TRUE(ValueMatchesIndex(value.view(), i)) << KeyFor(prefix, i) << " has a wrong value";
  }
  // The write after the last acknowledged one may have committed before the kill; none later.
  int64_t committed = acked + 1;
  if (*dict.Contains(KeyFor(prefix, committed))) ++committed;
  committed_[prefix] = committed;
}

void CrashTestBase::ExpectHoldsExactlyTheCommittedWrites(Dict& dict) {
  std::map<std::string, int64_t, std::less<>> seen;
  std::string wrong;
  dict.ForEach([&](std::string_view key, ValueView value) {
    std::optional<ParsedKey> parsed = ParseKey(key);
    auto it = parsed ? committed_.find(parsed->prefix) : committed_.end();
    if (it == committed_.end() || parsed->index >= it->second ||
        !ValueMatchesIndex(value, parsed->index)) {
      if (wrong.empty()) wrong = std::string(key);
      return;
    }
    ++seen[std::string(parsed->prefix)];
  });
  EXPECT_EQ(wrong, "") << "an uncommitted or wrong entry is visible";
  uint64_t total = 0;
  for (const auto& [prefix, count] : committed_) {
    EXPECT_EQ(seen[prefix], count) << "entries of " << prefix;
    total += static_cast<uint64_t>(count);
  }
  EXPECT_EQ(*dict.Size(), total);
}

}  // namespace shmdict::testing
