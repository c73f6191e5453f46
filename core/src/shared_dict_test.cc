#include "shmdict/shared_dict.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "dict_test_base.h"
#include "segment.h"

namespace shmdict {
namespace {

using namespace std::chrono_literals;

class SharedDictTest : public testing::DictTestBase {
 protected:
  Options Opts() {
    Options o;
    o.name = name_;
    o.buffer_size = 64 * 1024;
    o.lock_timeout = 5000ms;
    return o;
  }
  SharedDict OpenOrDie(size_t max_idle = SharedDict::kDefaultMaxIdleHandles) {
    Result<SharedDict> shared = SharedDict::Open(Opts(), max_idle);
    EXPECT_OK(shared);
    return std::move(*shared);
  }
  SharedDict::Lease AcquireOrDie(SharedDict& shared) {
    Result<SharedDict::Lease> lease = shared.Acquire();
    EXPECT_OK(lease);
    return std::move(*lease);
  }
};

TEST_F(SharedDictTest, ManyThreadsWritingThroughLeasesLoseNoIncrement) {
  SharedDict shared = OpenOrDie(/*max_idle=*/3);
  constexpr int kThreads = 8;
  constexpr int kIncrements = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        Result<SharedDict::Lease> lease = shared.Acquire();
        ASSERT_OK(lease);
        ASSERT_OK((*lease)->Increment("n"));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  SharedDict::Lease lease = AcquireOrDie(shared);
  EXPECT_EQ(lease->Get("n")->value().AsInt(), kThreads * kIncrements);
  EXPECT_LE(shared.idle_handles(), 3u + 1u);  // the cap, plus the first handle
}

TEST_F(SharedDictTest, AReturnedHandleIsLeasedAgain) {
  SharedDict shared = OpenOrDie();
  const Dict* first;
  const Dict* second;
  {
    SharedDict::Lease a = AcquireOrDie(shared);
    SharedDict::Lease b = AcquireOrDie(shared);  // a is out: b is a new handle
    first = &*a;
    second = &*b;
    EXPECT_NE(first, second);
    EXPECT_EQ(shared.idle_handles(), 0u);
  }
  EXPECT_EQ(shared.idle_handles(), 2u);
  SharedDict::Lease a = AcquireOrDie(shared);
  SharedDict::Lease b = AcquireOrDie(shared);
  EXPECT_EQ(std::set<const Dict*>({&*a, &*b}), std::set<const Dict*>({first, second}));
}

TEST_F(SharedDictTest, IdleHandlesBeyondTheCapAreClosed) {
  SharedDict shared = OpenOrDie(/*max_idle=*/2);
  EXPECT_EQ(shared.max_idle_handles(), 2u);
  {
    std::vector<SharedDict::Lease> leases;
    for (int i = 0; i < 6; ++i) leases.push_back(AcquireOrDie(shared));
    EXPECT_EQ(shared.idle_handles(), 0u);
  }
  EXPECT_EQ(shared.idle_handles(), 3u);  // two idle ones, and the first handle
}

TEST_F(SharedDictTest, TheCreatorsHandleIsKeptWhateverTheCap) {
  Options o = Opts();
  o.auto_unlink = true;
  Result<SharedDict> shared = SharedDict::Open(o, /*max_idle_handles=*/0);
  ASSERT_OK(shared);
  EXPECT_TRUE(shared->created());
  {
    SharedDict::Lease a = AcquireOrDie(*shared);
    SharedDict::Lease b = AcquireOrDie(*shared);
    ASSERT_OK(b->Set("k", Value::Int(1)));
  }
  EXPECT_EQ(shared->idle_handles(), 1u);
  EXPECT_OK(Dict::IncarnationOf(name_)) << "the dict was unlinked by the cap";
  ASSERT_OK(shared->Close());
  EXPECT_EQ(Dict::IncarnationOf(name_).status().code(), StatusCode::kNotFound)
      << "Close() did not close the creator's handle";
}

TEST_F(SharedDictTest, CloseRefusesLeasesAndClosesHandlesStillOutOnReturn) {
  Options o = Opts();
  o.auto_unlink = true;
  Result<SharedDict> shared = SharedDict::Open(o);
  ASSERT_OK(shared);
  {
    SharedDict::Lease creator = AcquireOrDie(*shared);
    ASSERT_OK(shared->Close());
    EXPECT_OK(shared->Close());  // idempotent
    EXPECT_EQ(shared->Acquire().status().code(), StatusCode::kFailedPrecondition);
    EXPECT_OK(creator->Set("still", Value::Int(1))) << "a lease outlives Close()";
    EXPECT_OK(Dict::IncarnationOf(name_));
  }
  EXPECT_EQ(shared->idle_handles(), 0u);
  EXPECT_EQ(Dict::IncarnationOf(name_).status().code(), StatusCode::kNotFound)
      << "the creator's handle was not closed when its lease returned it";
}

TEST_F(SharedDictTest, ALeaseMayOutliveItsSharedDict) {
  std::optional<SharedDict::Lease> lease;
  {
    SharedDict shared = OpenOrDie();
    lease.emplace(AcquireOrDie(shared));
  }
  EXPECT_OK((*lease)->Set("k", Value::Int(1)));
  EXPECT_EQ((*lease)->Get("k")->value().AsInt(), 1);
}

TEST_F(SharedDictTest, ADictCreatedAgainUnderTheSameNameIsRefused) {
  SharedDict shared = OpenOrDie();
  SharedDict::Lease first = AcquireOrDie(shared);  // the next Acquire must attach by name
  ASSERT_OK(Dict::UnlinkByName(name_));
  Result<Dict> again = Dict::Open(Opts());
  ASSERT_OK(again);
  ASSERT_NE(again->incarnation(), shared.incarnation());
  Result<SharedDict::Lease> lease = shared.Acquire();
  EXPECT_EQ(lease.status().code(), StatusCode::kAborted) << lease.status().ToString();
  ASSERT_OK(Dict::UnlinkByName(name_));
  EXPECT_EQ(shared.Acquire().status().code(), StatusCode::kNotFound);
}

TEST_F(SharedDictTest, ReleaseTakesTheHandleOutOfThePoolForGood) {
  SharedDict shared = OpenOrDie();
  std::unique_ptr<Dict> owned;
  {
    SharedDict::Lease lease = AcquireOrDie(shared);
    owned = lease.Release();
  }
  EXPECT_EQ(shared.idle_handles(), 0u);
  ASSERT_NE(owned, nullptr);
  EXPECT_OK(owned->Set("k", Value::Int(1)));
  SharedDict::Lease other = AcquireOrDie(shared);
  EXPECT_NE(&*other, owned.get());
}

// Exit codes of the forked child, so that a failure names what went wrong.
enum ChildResult {
  kChildOk = 0,
  kForgotNothing,
  kReusedParentHandle,
  kCannotAcquire,
  kCannotWrite,
  kWrongForkCount
};

TEST_F(SharedDictTest, AForkedChildAttachesHandlesOfItsOwn) {
  SharedDict shared = OpenOrDie();
  std::set<const Dict*> parents;
  SharedDict::Lease held = AcquireOrDie(shared);  // leased across the fork
  {
    SharedDict::Lease idle = AcquireOrDie(shared);  // idle at the fork
    parents = {&*held, &*idle};
  }
  // Another thread of the parent is inside a call on its own lease when the fork happens.
  std::atomic<bool> stop{false};
  std::atomic<bool> started{false};
  std::thread busy([&] {
    while (!stop.load()) {
      Result<SharedDict::Lease> lease = shared.Acquire();
      if (lease.ok()) (void)(*lease)->Increment("busy");
      started.store(true);
    }
  });
  while (!started.load()) std::this_thread::yield();
  const pid_t pid = fork();
  if (pid == 0) {
    int result = kChildOk;
    if (SharedDict::ForkCount() != 1) result = kWrongForkCount;
    if (shared.idle_handles() != 0) result = kForgotNothing;
    {
      SharedDict::Lease stale = std::move(held);  // destroyed here: forgotten, not pooled
    }
    if (result == kChildOk && shared.idle_handles() != 0) result = kForgotNothing;
    Result<SharedDict::Lease> lease = shared.Acquire();
    if (result == kChildOk && !lease.ok()) result = kCannotAcquire;
    if (result == kChildOk && parents.count(&**lease) != 0) result = kReusedParentHandle;
    if (result == kChildOk && !(*lease)->Set("child", Value::Int(1)).ok()) result = kCannotWrite;
    _exit(result);
  }
  ASSERT_GT(pid, 0);
  stop.store(true);
  busy.join();
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), kChildOk);
  EXPECT_EQ(SharedDict::ForkCount(), 0u);
  EXPECT_EQ(held->Get("child")->value().AsInt(), 1);
  held = AcquireOrDie(shared);  // the parent's pool is untouched by the child
  EXPECT_TRUE(parents.count(&*held) != 0);
}

TEST_F(SharedDictTest, AutoUnlinkStaysWithTheParentAcrossAFork) {
  Options options = Opts();
  options.create_mode = CreateMode::kMustCreate;
  options.auto_unlink = true;
  Result<SharedDict> opened = SharedDict::Open(options);
  ASSERT_OK(opened);
  SharedDict shared = std::move(*opened);
  ASSERT_TRUE(shared.created());
  std::optional<SharedDict::Lease> first(AcquireOrDie(shared));  // the creator's handle
  const pid_t pid = fork();
  if (pid == 0) {
    // Everything the child inherited is released the way a child's own code would: the lease
    // taken before the fork, then the pool itself. Neither may unlink the parent's dict.
    first.reset();
    const bool closed = shared.Close().ok();
    _exit(closed && Dict::IncarnationOf(name_).ok() ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's Close() unlinked the parent's dict";
  EXPECT_OK(Dict::IncarnationOf(name_));
  ASSERT_OK((*first)->Set("parent", Value::Int(1)));
  first.reset();
  ASSERT_OK(shared.Close());
  EXPECT_THAT(Dict::IncarnationOf(name_), testing::StatusIs(StatusCode::kNotFound))
      << "the creator's Close() in the parent unlinks the dict";
}

}  // namespace
}  // namespace shmdict
