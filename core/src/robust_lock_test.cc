// RobustLock on its own: mutual exclusion among many holder identities (each thread stands for a
// process; ThreadSanitizer checks the happens-before the lock promises), and the take-over of a
// dead holder's lock by exactly one waiter. The process-level behaviour (pid namespaces, fork,
// SIGKILL) is in tests/writer_lock_test.cc.
#include "robust_lock.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dict_test_base.h"
#include "segment.h"

namespace shmdict::internal {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// A main-header-sized segment with both locks initialized, as a creator leaves it.
class RobustLockTest : public shmdict::testing::DictTestBase {
 protected:
  void SetUp() override {
    auto created = CreateSegment(name_, kHeaderSize, 0600, /*replace_existing=*/true);
    ASSERT_OK(created);
    fd_ = std::move(created->first);
    map_ = std::move(created->second);
    header_ = reinterpret_cast<MainHeader*>(map_.data());
    InitRobustLock(&header_->writer.write_lock);
    header_->writer.next_holder_token.store(2);
  }
  void TearDown() override {
    map_ = Mapping();
    fd_ = Fd();
    UnlinkSegmentQuietly(name_);
    DictTestBase::TearDown();
  }
  // A new identity, as a newly opened handle has.
  std::unique_ptr<HolderIdentity> NewIdentity() {
    auto identity = std::make_unique<HolderIdentity>();
    EXPECT_OK(identity->Claim(name_, fd_.get(), header_));
    return identity;
  }
  RobustLockWord* lock() { return &header_->writer.write_lock; }

  Fd fd_;
  Mapping map_;
  MainHeader* header_ = nullptr;
};

TEST_F(RobustLockTest, ManyHoldersIncrementAPlainCounterExactly) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 20000;
  uint64_t counter = 0;  // deliberately not atomic: only the lock orders the increments
  std::vector<std::unique_ptr<HolderIdentity>> identities;
  for (int i = 0; i < kThreads; ++i) identities.push_back(NewIdentity());
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRounds; ++r) {
        ASSERT_EQ(AcquireRobustLock(lock(), *identities[i], nanoseconds(-1)),
                  LockResult::kAcquired);
        ++counter;
        ASSERT_TRUE(ReleaseRobustLock(lock(), *identities[i]));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, uint64_t{kThreads} * kRounds);
  EXPECT_FALSE(RobustLockIsHeld(*lock()));
}

TEST_F(RobustLockTest, ADeadHoldersLockGoesToExactlyOneWaiter) {
  // Destroying the identity drops its liveness lock, as its process's death would. (Threads of
  // their own here and below, whose record of held locks ends with them, as a process's does.)
  auto doomed = NewIdentity();
  std::thread([&] {
    ASSERT_EQ(AcquireRobustLock(lock(), *doomed, nanoseconds(-1)), LockResult::kAcquired);
    doomed.reset();
  }).join();
  auto first = NewIdentity();
  auto second = NewIdentity();
  std::atomic<int> took_over{0};
  std::atomic<int> acquired_plainly{0};
  auto contend = [&](HolderIdentity& me) {
    const LockResult r = AcquireRobustLock(lock(), me, milliseconds(5000));
    if (r == LockResult::kOwnerDied) ++took_over;
    if (r == LockResult::kAcquired) ++acquired_plainly;
    if (r == LockResult::kOwnerDied || r == LockResult::kAcquired) {
      EXPECT_TRUE(ReleaseRobustLock(lock(), me));
    }
  };
  std::thread a([&] { contend(*first); });
  std::thread b([&] { contend(*second); });
  a.join();
  b.join();
  EXPECT_EQ(took_over.load(), 1) << "the repair must run exactly once";
  EXPECT_EQ(acquired_plainly.load(), 1);
}

TEST_F(RobustLockTest, TryLockTakesADeadHoldersLockOverAtOnceAndALiveOneNever) {
  auto holder = NewIdentity();
  auto other = NewIdentity();
  std::thread([&] {
    ASSERT_EQ(AcquireRobustLock(lock(), *holder, nanoseconds(-1)), LockResult::kAcquired);
  }).join();
  EXPECT_EQ(AcquireRobustLock(lock(), *other, nanoseconds(0)), LockResult::kBusy);
  holder->Release();  // dies holding it
  std::thread([&] {
    EXPECT_EQ(AcquireRobustLock(lock(), *other, nanoseconds(0)), LockResult::kOwnerDied);
    EXPECT_TRUE(ReleaseRobustLock(lock(), *other));
  }).join();
}

TEST_F(RobustLockTest, AReleaseByANonHolderLeavesTheLockAlone) {
  auto holder = NewIdentity();
  auto other = NewIdentity();
  ASSERT_EQ(AcquireRobustLock(lock(), *holder, nanoseconds(-1)), LockResult::kAcquired);
  EXPECT_FALSE(ReleaseRobustLock(lock(), *other));
  EXPECT_TRUE(RobustLockIsHeld(*lock()));
  EXPECT_TRUE(ReleaseRobustLock(lock(), *holder));
}

TEST_F(RobustLockTest, AFailedRepairIsOwedToTheNextAcquirer) {
  auto first = NewIdentity();
  auto second = NewIdentity();
  ASSERT_EQ(AcquireRobustLock(lock(), *first, nanoseconds(-1)), LockResult::kAcquired);
  ASSERT_TRUE(ReleaseRobustLock(lock(), *first, /*repaired=*/false));
  EXPECT_FALSE(RobustLockIsHeld(*lock()));
  EXPECT_EQ(AcquireRobustLock(lock(), *second, nanoseconds(-1)), LockResult::kOwnerDied);
  ASSERT_TRUE(ReleaseRobustLock(lock(), *second));
  EXPECT_EQ(AcquireRobustLock(lock(), *first, nanoseconds(-1)), LockResult::kAcquired);
  ASSERT_TRUE(ReleaseRobustLock(lock(), *first));
}

TEST_F(RobustLockTest, DiagnosticsNameTheHolderWhileHeldAndNothingAfter) {
  auto holder = NewIdentity();
  ASSERT_EQ(AcquireRobustLock(lock(), *holder, nanoseconds(-1)), LockResult::kAcquired);
  const LockHolderInfo info = ReadRobustLockHolder(*lock());
  EXPECT_TRUE(info.held);
  EXPECT_EQ(info.pid, static_cast<uint32_t>(getpid()));
  EXPECT_TRUE(info.in_this_pid_namespace);
  EXPECT_EQ(DescribeRobustLockHolder(*lock()),
            "held by pid " + std::to_string(getpid()) + " (this process)");
  ASSERT_TRUE(ReleaseRobustLock(lock(), *holder));
  EXPECT_FALSE(ReadRobustLockHolder(*lock()).held);
  EXPECT_EQ(lock()->holder_pid.load(), 0u);
}

}  // namespace
}  // namespace shmdict::internal
