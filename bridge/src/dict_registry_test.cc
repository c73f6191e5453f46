// The registry through its public interface: leases by name, the fan-out's subscribers, the
// notice of a dict unlinked and created again, and shutdown.
#include "dict_registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dict_test_base.h"
#include "metrics.h"
#include "shmdict/replica_feed.h"

namespace shmdict::bridge {
namespace {

using std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kPatience = 30s;  // a deadline for what must happen, never a measured time

// A stream as the fan-out sees it: counts pokes, records how it was ended.
class FakeSubscriber final : public Subscriber {
 public:
  void Pump() override {
    std::lock_guard lock(mu_);
    ++pumps_;
    changed_.notify_all();
  }
  void End(const Status& status) override {
    std::lock_guard lock(mu_);
    ended_ = status;
    changed_.notify_all();
  }
  uint64_t SentRevision() const override { return 0; }

  // Waits until Pump was called more than `seen` times; false at the deadline.
  bool AwaitPumpsBeyond(int seen) {
    std::unique_lock lock(mu_);
    return changed_.wait_until(lock, steady_clock::now() + kPatience,
                               [&] { return pumps_ > seen; });
  }
  int pumps() {
    std::lock_guard lock(mu_);
    return pumps_;
  }
  bool ended() {
    std::lock_guard lock(mu_);
    return ended_.has_value();
  }
  // How the stream was ended; nullopt if it was not by the deadline.
  std::optional<Status> AwaitEnd() {
    std::unique_lock lock(mu_);
    changed_.wait_until(lock, steady_clock::now() + kPatience, [&] { return ended_.has_value(); });
    return ended_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  int pumps_ = 0;
  std::optional<Status> ended_;
};

// What the registry reported through its serving callback, in order.
class ServingLog {
 public:
  DictRegistry::ServingCallback Callback() {
    return [this](const std::string& name, bool serving) {
      std::lock_guard lock(mu_);
      events_.emplace_back(name, serving);
      changed_.notify_all();
    };
  }
  // Waits for `count` events and returns them (fewer at the deadline).
  std::vector<std::pair<std::string, bool>> Await(size_t count) {
    std::unique_lock lock(mu_);
    changed_.wait_until(lock, steady_clock::now() + kPatience,
                        [&] { return events_.size() >= count; });
    return events_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<std::pair<std::string, bool>> events_;
};

class DictRegistryTest : public testing::DictTestBase {
 protected:
  void SetUp() override {
    registry_.emplace(DictRegistry::Limits{}, serving_.Callback());
    auto created = Dict::Open(CreateOptions(name_));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    creator_.emplace(std::move(*created));
  }
  void TearDown() override {
    registry_.reset();  // closes its handles before the base checks /dev/shm
    creator_.reset();
    DictTestBase::TearDown();
  }

  // Unlinks the test's dict and creates a new one under its name holding only `key`.
  void Recreate(const std::string& key) {
    ASSERT_OK(Dict::UnlinkByName(name_));
    creator_.reset();
    auto created = Dict::Open(CreateOptions(name_));
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    creator_.emplace(std::move(*created));
    ASSERT_OK(creator_->Set(key, Value::Int(1)));
  }

  ServingLog serving_;
  std::optional<DictRegistry> registry_;
  std::optional<Dict> creator_;
};

TEST_F(DictRegistryTest, LeaseAttachesAnExistingDictByNameAndSharesItsWrites) {
  ASSERT_OK(creator_->Set("before", Value::Int(1)));
  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  auto before = lease->dict().Get("before");
  ASSERT_OK(before);
  ASSERT_TRUE(before->has_value());
  EXPECT_EQ(**before, Value::Int(1));

  ASSERT_OK(lease->dict().Set("through-lease", Value::Int(2)));
  auto seen = creator_->Get("through-lease");
  ASSERT_OK(seen);
  EXPECT_TRUE(seen->has_value()) << "the creator does not see the lease's write";

  EXPECT_EQ(registry_->AttachedNames(), std::vector<std::string>{name_});
  EXPECT_EQ(serving_.Await(1), (std::vector<std::pair<std::string, bool>>{{name_, true}}));
}

// Open descriptors of this process on the dict's main segment: the same number for every Dict
// handle (the creator's handle gives that number).
int HandlesOpenOn(const std::string& name) {
  const std::string segment = testing::ShmPath(name);
  int open = 0;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    if (std::filesystem::read_symlink(fd.path(), error) == segment) ++open;
  }
  return open;
}

TEST_F(DictRegistryTest, IdleHandlesBeyondTheCapAreClosed) {
  for (size_t cap : {size_t{1}, size_t{8}}) {
    SCOPED_TRACE("max_idle_handles_per_dict " + std::to_string(cap));
    DictRegistry::Limits limits;
    limits.max_idle_handles_per_dict = cap;
    registry_.emplace(limits, serving_.Callback());
    const int per_handle = HandlesOpenOn(name_);  // only the creator's handle is open
    ASSERT_GT(per_handle, 0);
    const int before = per_handle;
    {
      std::vector<DictRegistry::Lease> leases;
      for (int i = 0; i < 4; ++i) {
        auto lease = registry_->Acquire(name_);
        ASSERT_OK(lease);
        leases.push_back(std::move(*lease));
      }
      EXPECT_EQ(HandlesOpenOn(name_), before + 4 * per_handle)
          << "four concurrent calls, four handles";
    }
    // Returned: the handle the dict keeps, plus at most `cap` idle ones.
    EXPECT_EQ(HandlesOpenOn(name_),
              before + per_handle * static_cast<int>(std::min<size_t>(4, cap + 1)));
    registry_.reset();
    EXPECT_EQ(HandlesOpenOn(name_), before) << "the registry closes every handle it opened";
  }
}

TEST_F(DictRegistryTest, LeaseNeverCreatesADict) {
  const std::string missing = NewDictName();
  auto lease = registry_->Acquire(missing);
  ASSERT_FALSE(lease.ok());
  EXPECT_EQ(lease.status().code(), StatusCode::kNotFound);
  EXPECT_NE(lease.status().message().find("'" + missing + "'"), std::string::npos)
      << lease.status().message();
  EXPECT_TRUE(testing::ShmEntriesWithPrefix(missing).empty());
  EXPECT_TRUE(registry_->AttachedNames().empty());

  auto bad = registry_->Acquire("../etc");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
}

TEST_F(DictRegistryTest, LeasesHeldAtTheSameTimeAreSeparateHandles) {
  auto first = registry_->Acquire(name_);
  auto second = registry_->Acquire(name_);
  ASSERT_OK(first);
  ASSERT_OK(second);
  EXPECT_NE(&first->dict(), &second->dict()) << "two calls would share one handle";
  EXPECT_EQ(first->entry(), second->entry()) << "one dict, one fan-out";
}

TEST_F(DictRegistryTest, SubscribersArePokedAndCountedUntilUnsubscribed) {
  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  FakeSubscriber subscriber;
  registry_->Subscribe(lease->entry(), &subscriber);
  EXPECT_EQ(registry_->SubscriberCounts(), (std::map<std::string, uint64_t>{{name_, 1}}));

  const int pumps = subscriber.pumps();
  ASSERT_OK(creator_->Set("k", Value::Int(1)));
  EXPECT_TRUE(subscriber.AwaitPumpsBeyond(pumps)) << "a write did not poke the stream";

  registry_->Unsubscribe(lease->entry(), &subscriber);
  EXPECT_EQ(registry_->SubscriberCounts(), (std::map<std::string, uint64_t>{{name_, 0}}));
  std::vector<DictStats> stats = registry_->Stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].name, name_);
  EXPECT_EQ(stats[0].revision, creator_->published_revision());
  EXPECT_EQ(stats[0].subscribers, 0u);
}

// A replica dict's freshness reaches the metrics (docs/REPLICA.md); other dicts render no replica
// family.
TEST_F(DictRegistryTest, AReplicaDictsUpstreamRevisionAndContactAreInItsStatsAndMetrics) {
  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  Metrics metrics;
  EXPECT_FALSE(registry_->Stats()[0].replica);
  EXPECT_EQ(metrics.Render(registry_->Stats()).find("shmdict_dict_upstream"), std::string::npos);

  ReplicaResumePoint resume;
  auto feed =
      ReplicaFeed::Adopt(*creator_, ReplicaMarker{"etcd:127.0.0.1:2379 prefix=/m/"}, &resume);
  ASSERT_OK(feed);
  Change set;
  set.op = ChangeOp::kSet;
  set.key = "k";
  set.value = Value::Int(1);
  ASSERT_OK(feed->Apply({set}, 42));
  feed->SetContact(true);
  const std::vector<DictStats> stats = registry_->Stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_TRUE(stats[0].replica);
  EXPECT_EQ(stats[0].upstream_revision, 42u);
  EXPECT_EQ(stats[0].upstream_connected, 1u);
  EXPECT_GT(stats[0].last_upstream_contact_ms, 0u);
  const std::string page = metrics.Render(stats);
  EXPECT_NE(page.find("shmdict_dict_upstream_revision{dict=\"" + name_ + "\"} 42"),
            std::string::npos)
      << page;
  EXPECT_NE(page.find("shmdict_dict_upstream_connected{dict=\"" + name_ + "\"} 1"),
            std::string::npos);
}

// The notifier notices by itself (no call needed) that the name now holds another dict: the old
// dict's streams end with ABORTED (their clients resubscribe from revision 0), and the next lease
// attaches the new dict.
TEST_F(DictRegistryTest, DictUnlinkedAndCreatedAgainEndsItsStreamsAndLeasesTheNewOne) {
  ASSERT_OK(creator_->Set("old", Value::Int(1)));
  FakeSubscriber subscriber;
  {
    auto lease = registry_->Acquire(name_);
    ASSERT_OK(lease);
    registry_->Subscribe(lease->entry(), &subscriber);
  }
  Recreate("new");

  std::optional<Status> ended = subscriber.AwaitEnd();
  ASSERT_TRUE(ended.has_value()) << "the old dict's stream was not ended";
  EXPECT_EQ(ended->code(), StatusCode::kAborted) << ended->ToString();
  EXPECT_NE(ended->message().find("revision 0"), std::string::npos) << ended->message();
  EXPECT_EQ(serving_.Await(2),
            (std::vector<std::pair<std::string, bool>>{{name_, true}, {name_, false}}));

  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  auto old_key = lease->dict().Contains("old");
  auto new_key = lease->dict().Contains("new");
  ASSERT_OK(old_key);
  ASSERT_OK(new_key);
  EXPECT_FALSE(*old_key) << "the lease attached the unlinked dict";
  EXPECT_TRUE(*new_key);
  EXPECT_EQ(serving_.Await(3).back(), std::make_pair(name_, true));
}

// Without a stream (so without a notifier), a lease notices the replacement on its own.
TEST_F(DictRegistryTest, LeaseAfterReplacementAttachesTheNewDict) {
  {
    auto lease = registry_->Acquire(name_);
    ASSERT_OK(lease);
    ASSERT_OK(lease->dict().Set("old", Value::Int(1)));
  }  // its handle goes back to the registry
  Recreate("new");
  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  auto old_key = lease->dict().Contains("old");
  ASSERT_OK(old_key);
  EXPECT_FALSE(*old_key) << "an idle handle of the unlinked dict was leased";
  auto new_key = lease->dict().Contains("new");
  ASSERT_OK(new_key);
  EXPECT_TRUE(*new_key);
}

TEST_F(DictRegistryTest, ShutdownEndsEveryStreamAndRefusesLaterLeases) {
  auto lease = registry_->Acquire(name_);
  ASSERT_OK(lease);
  FakeSubscriber first;
  FakeSubscriber second;
  registry_->Subscribe(lease->entry(), &first);
  registry_->Subscribe(lease->entry(), &second);

  registry_->Shutdown(Status(StatusCode::kUnavailable, "going away"));
  for (FakeSubscriber* subscriber : {&first, &second}) {
    std::optional<Status> ended = subscriber->AwaitEnd();
    ASSERT_TRUE(ended.has_value());
    EXPECT_EQ(ended->code(), StatusCode::kUnavailable);
    EXPECT_EQ(ended->message(), "going away");
  }
  auto later = registry_->Acquire(name_);
  ASSERT_FALSE(later.ok());
  EXPECT_EQ(later.status().code(), StatusCode::kUnavailable) << later.status().ToString();
  EXPECT_TRUE(registry_->AttachedNames().empty());

  // A stream subscribing after the shutdown (a Get or Watch that raced it) is ended at once, with
  // the shutdown's status: not ABORTED, which would send its client to resubscribe from 0.
  FakeSubscriber late;
  registry_->Subscribe(lease->entry(), &late);
  std::optional<Status> late_end = late.AwaitEnd();
  ASSERT_TRUE(late_end.has_value());
  EXPECT_EQ(late_end->code(), StatusCode::kUnavailable) << late_end->ToString();
  EXPECT_EQ(late_end->message(), "going away");
}

TEST_F(DictRegistryTest, TrackedStreamsArePokedAndEndedAtShutdownThoughNotSubscribed) {
  FakeSubscriber stream;
  ASSERT_TRUE(registry_->Track(&stream));
  // The housekeeping thread pokes it on its own; PokeAll at once.
  ASSERT_TRUE(stream.AwaitPumpsBeyond(0));
  const int pumps = stream.pumps();
  registry_->PokeAll();
  EXPECT_GT(stream.pumps(), pumps);

  FakeSubscriber untracked;
  ASSERT_TRUE(registry_->Track(&untracked));
  registry_->Untrack(&untracked);
  // The housekeeping thread may have poked it while it was tracked; never after Untrack.
  const int untracked_pumps = untracked.pumps();
  registry_->PokeAll();
  EXPECT_EQ(untracked.pumps(), untracked_pumps);
  registry_->Shutdown(Status(StatusCode::kUnavailable, "stopping"));
  std::optional<Status> ended = stream.AwaitEnd();
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->code(), StatusCode::kUnavailable);
  EXPECT_FALSE(untracked.ended()) << "Shutdown ended a stream that was untracked";
  EXPECT_EQ(untracked.pumps(), untracked_pumps);
  FakeSubscriber late;
  EXPECT_FALSE(registry_->Track(&late)) << "a stream tracked after Shutdown would never end";
}

}  // namespace
}  // namespace shmdict::bridge
