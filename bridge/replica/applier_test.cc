// The Applier against a scripted Upstream: no etcd, no bridge, so that it runs under both
// sanitizers. Process tests with a real etcd are in tests/replica.
#include "applier.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "dict_test_base.h"

namespace shmdict::replica {
namespace {

using ::shmdict::testing::StatusIs;

// An upstream whose history the test writes: each Follow serves the steps after its revision,
// then waits for more; a pushed error ends the current stream.
class ScriptedUpstream final : public Upstream {
 public:
  explicit ScriptedUpstream(std::string description) : description_(std::move(description)) {}

  const std::string& description() const override { return description_; }

  // Commits `changes` as the next upstream revision (applied to the upstream's contents).
  uint64_t Commit(std::vector<Change> changes) {
    std::lock_guard lock(mu_);
    ++revision_;
    for (Change& change : changes) {
      change.revision = revision_;
      if (change.op == ChangeOp::kSet) contents_[change.key] = change.value;
      if (change.op == ChangeOp::kErase) contents_.erase(change.key);
      if (change.op == ChangeOp::kClear) contents_.clear();
    }
    history_.push_back({revision_, std::move(changes)});
    more_.notify_all();
    return revision_;
  }
  // The upstream created again: another identity, revisions from 0, new contents.
  void Recreate(std::vector<Change> changes) {
    {
      std::lock_guard lock(mu_);
      ++identity_;
      revision_ = 0;
      compacted_ = 0;
      contents_.clear();
      history_.clear();
      ++breaks_;
      more_.notify_all();
    }
    Commit(std::move(changes));
  }
  // Forgets the history up to now: a Follow from before it starts with a full listing.
  void Compact() {
    std::lock_guard lock(mu_);
    compacted_ = revision_;
  }
  void BreakStreams() {
    std::lock_guard lock(mu_);
    ++breaks_;
    more_.notify_all();
  }
  int follows() {
    std::lock_guard lock(mu_);
    return follows_;
  }
  std::map<std::string, Value> contents() {
    std::lock_guard lock(mu_);
    return contents_;
  }

  Result<uint64_t> Identity() override {
    std::lock_guard lock(mu_);
    return identity_;
  }
  Result<std::unique_ptr<UpstreamStream>> Follow(uint64_t after,
                                                 std::function<void(bool)> connected) override {
    std::lock_guard lock(mu_);
    ++follows_;
    return std::unique_ptr<UpstreamStream>(new Stream(*this, after, breaks_, std::move(connected)));
  }
  Result<std::unique_ptr<Store>> Writer() override {
    return Status(StatusCode::kUnimplemented, "not used here");
  }

 private:
  struct Entry {
    uint64_t revision;
    std::vector<Change> changes;
  };
  class Stream final : public UpstreamStream {
   public:
    Stream(ScriptedUpstream& up, uint64_t after, int breaks, std::function<void(bool)> connected)
        : up_(up), after_(after), breaks_(breaks), connected_(std::move(connected)) {}
    void Cancel() override {
      std::lock_guard lock(up_.mu_);
      cancelled_ = true;
      up_.more_.notify_all();
    }
    Result<std::vector<UpstreamStep>> Next(std::chrono::milliseconds timeout) override {
      std::unique_lock lock(up_.mu_);
      std::vector<UpstreamStep> steps;
      if (!listed_ && (after_ == 0 || after_ < up_.compacted_)) {
        listed_ = true;
        UpstreamStep replace;
        replace.kind = UpstreamStep::Kind::kReplace;
        replace.revision = up_.revision_;
        replace.identity = up_.identity_;
        for (const auto& [key, value] : up_.contents_) replace.items.emplace_back(key, value);
        after_ = up_.revision_;
        steps.push_back(std::move(replace));
        connected_(true);
        return steps;
      }
      up_.more_.wait_for(lock, timeout, [&] {
        return cancelled_ || up_.breaks_ != breaks_ || up_.revision_ > after_;
      });
      if (cancelled_) return Status(StatusCode::kCancelled, "cancelled");
      if (up_.breaks_ != breaks_) return Status(StatusCode::kUnavailable, "stream broken");
      for (const Entry& entry : up_.history_) {
        if (entry.revision <= after_) continue;
        UpstreamStep step;
        step.kind =
            entry.changes.empty() ? UpstreamStep::Kind::kProgress : UpstreamStep::Kind::kChanges;
        step.revision = entry.revision;
        step.changes = entry.changes;
        steps.push_back(std::move(step));
        after_ = entry.revision;
      }
      connected_(true);
      return steps;
    }

   private:
    ScriptedUpstream& up_;
    uint64_t after_;
    int breaks_;
    std::function<void(bool)> connected_;
    bool cancelled_ = false;
    bool listed_ = false;
  };

  const std::string description_;
  std::mutex mu_;
  std::condition_variable more_;
  uint64_t revision_ = 0;
  uint64_t compacted_ = 0;
  int breaks_ = 0;
  int follows_ = 0;
  uint64_t identity_ = 1;
  std::map<std::string, Value> contents_;
  std::deque<Entry> history_;
};

Change SetOf(std::string key, int64_t value) {
  Change change;
  change.op = ChangeOp::kSet;
  change.key = std::move(key);
  change.value = Value::Int(value);
  return change;
}
Change EraseOf(std::string key) {
  Change change;
  change.op = ChangeOp::kErase;
  change.key = std::move(key);
  return change;
}

std::map<std::string, Value> ContentsOf(Dict& dict) {
  std::map<std::string, Value> contents;
  auto items = dict.Items();
  EXPECT_TRUE(items.ok());
  if (items.ok()) {
    for (auto& [key, value] : *items) contents.emplace(key, value);
  }
  return contents;
}

ApplierOptions FastRetry() {
  ApplierOptions options;
  options.initial_backoff = std::chrono::milliseconds(10);
  options.max_backoff = std::chrono::milliseconds(50);
  return options;
}

constexpr auto kPatience = std::chrono::seconds(30);

template <typename Fn>
bool Eventually(Fn&& done) {
  const auto give_up = std::chrono::steady_clock::now() + kPatience;
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class ApplierTest : public shmdict::testing::DictTestBase {
 protected:
  void SetUp() override {
    auto dict = Dict::Open(CreateOptions(NewDictName()));
    ASSERT_TRUE(dict.ok()) << dict.status().ToString();
    dict_.emplace(std::move(*dict));
  }
  void TearDown() override {
    dict_.reset();
    DictTestBase::TearDown();
  }
  // Waits until the applier has applied upstream revision `revision`.
  void AwaitApplied(Applier& applier, uint64_t revision) {
    auto local = applier.WaitApplied(revision, std::chrono::steady_clock::now() + kPatience);
    ASSERT_TRUE(local.ok()) << local.status().ToString();
  }
  std::optional<Dict> dict_;
};

TEST_F(ApplierTest, ListsFirstThenAppliesEachUpstreamRevisionAsOneLocalRevision) {
  ScriptedUpstream upstream("scripted:a");
  upstream.Commit({SetOf("a", 1), SetOf("b", 2)});
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  ASSERT_TRUE(applier->WaitReady(std::chrono::steady_clock::now() + kPatience));
  const uint64_t after_list = dict_->revision();
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());

  ASSERT_OK_AND_ASSIGN(auto watcher, dict_->Watch(after_list));
  const uint64_t r2 = upstream.Commit({SetOf("c", 3), EraseOf("a")});
  const uint64_t r3 = upstream.Commit({SetOf("b", 20)});
  AwaitApplied(*applier, r3);
  ASSERT_OK_AND_ASSIGN(uint64_t local2, applier->WaitApplied(r2, std::chrono::steady_clock::now()));
  ASSERT_OK_AND_ASSIGN(uint64_t local3, applier->WaitApplied(r3, std::chrono::steady_clock::now()));
  EXPECT_EQ(local2, after_list + 1);
  EXPECT_EQ(local3, after_list + 2);
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());
  EXPECT_EQ(applier->upstream_revision(), r3);

  std::map<uint64_t, size_t> changes_per_revision;
  while (changes_per_revision.size() < 2) {
    ASSERT_OK_AND_ASSIGN(ChangeBatch batch, watcher->Next(WatchLimits{}, kPatience));
    ASSERT_FALSE(batch.changes.empty());
    for (const Change& change : batch.changes) ++changes_per_revision[change.revision];
  }
  EXPECT_EQ(changes_per_revision, (std::map<uint64_t, size_t>{{local2, 2}, {local3, 1}}));
}

TEST_F(ApplierTest, ResumesAfterItsRevisionWithoutListingAgain) {
  ScriptedUpstream upstream("scripted:b");
  upstream.Commit({SetOf("a", 1)});
  {
    ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
    AwaitApplied(*applier, 1);
    EXPECT_EQ(applier->counters().relists, 1u);
  }
  upstream.Commit({SetOf("b", 2)});
  const uint64_t r3 = upstream.Commit({EraseOf("a")});
  const uint64_t local_before = dict_->revision();
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  AwaitApplied(*applier, r3);
  EXPECT_EQ(applier->counters().relists, 0u);
  EXPECT_EQ(dict_->revision(), local_before + 2);  // one local revision per upstream revision
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());
}

TEST_F(ApplierTest, ARelistAfterCompactionIsOneBatchOfTheRealDifferences) {
  ScriptedUpstream upstream("scripted:c");
  upstream.Commit({SetOf("keep", 1), SetOf("change", 2), SetOf("drop", 3)});
  {
    ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
    AwaitApplied(*applier, 1);
  }
  upstream.Commit({SetOf("change", 20), SetOf("new", 4)});
  const uint64_t r3 = upstream.Commit({EraseOf("drop")});
  upstream.Compact();
  const uint64_t local_before = dict_->revision();
  ASSERT_OK_AND_ASSIGN(auto watcher, dict_->Watch(local_before));
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  AwaitApplied(*applier, r3);
  EXPECT_EQ(applier->counters().relists, 1u);
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());
  ASSERT_OK_AND_ASSIGN(ChangeBatch batch, watcher->Next(WatchLimits{}, kPatience));
  EXPECT_EQ(batch.revision, local_before + 1);
  std::map<std::string, ChangeOp> seen;
  for (const Change& change : batch.changes) seen[change.key] = change.op;
  EXPECT_EQ(seen,
            (std::map<std::string, ChangeOp>{
                {"change", ChangeOp::kSet}, {"drop", ChangeOp::kErase}, {"new", ChangeOp::kSet}}));
}

TEST_F(ApplierTest, AStreamThatBreaksIsFollowedAgainFromTheRevisionApplied) {
  ScriptedUpstream upstream("scripted:d");
  // (Revision 0 means "nothing applied yet": a replica of an empty upstream lists it again on
  // every reconnect until its first revision, which is harmless; this test starts after one.)
  upstream.Commit({SetOf("first", 0)});
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  ASSERT_TRUE(applier->WaitReady(std::chrono::steady_clock::now() + kPatience));
  uint64_t last = 0;
  for (int i = 0; i < 50; ++i) {
    last = upstream.Commit({SetOf("k" + std::to_string(i % 7), i)});
    if (i % 10 == 9) upstream.BreakStreams();
  }
  AwaitApplied(*applier, last);
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());
  EXPECT_GE(upstream.follows(), 2);
  EXPECT_EQ(applier->counters().relists, 1u);  // only the first list
}

TEST_F(ApplierTest, AnUpstreamCreatedAgainIsListedAgainAsANewHistory) {
  ScriptedUpstream upstream("scripted:h");
  for (int i = 0; i < 10; ++i) upstream.Commit({SetOf("old" + std::to_string(i), i)});
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  AwaitApplied(*applier, 10);
  upstream.Recreate({SetOf("new", 1)});  // revision 1 of another identity
  const uint64_t r2 = upstream.Commit({SetOf("new", 2)});
  ASSERT_TRUE(Eventually([&] { return ContentsOf(*dict_) == upstream.contents(); }))
      << "the new history was not applied";
  EXPECT_EQ(applier->upstream_revision(), r2);
  const uint64_t r3 = upstream.Commit({SetOf("newer", 3)});
  AwaitApplied(*applier, r3);
  EXPECT_EQ(ContentsOf(*dict_), upstream.contents());
}

TEST_F(ApplierTest, WaitAppliedTimesOutNamingTheUpstreamRevision) {
  ScriptedUpstream upstream("scripted:e");
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  auto waited =
      applier->WaitApplied(99, std::chrono::steady_clock::now() + std::chrono::milliseconds(20));
  EXPECT_THAT(waited, StatusIs(StatusCode::kDeadlineExceeded, ::testing::HasSubstr("99")));
}

TEST_F(ApplierTest, ASecondApplierOfTheSameDictIsRefused) {
  ScriptedUpstream upstream("scripted:f");
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  ASSERT_OK_AND_ASSIGN(Dict other, Dict::Open(AttachOptions(dict_->name())));
  EXPECT_THAT(Applier::Start(other, upstream, FastRetry()), StatusIs(StatusCode::kAlreadyExists));
}

TEST_F(ApplierTest, LocalWritesAreRefusedWhileTheReplicaKeepsApplying) {
  ScriptedUpstream upstream("scripted:g");
  ASSERT_OK_AND_ASSIGN(auto applier, Applier::Start(*dict_, upstream, FastRetry()));
  ASSERT_OK(applier->SetListen("127.0.0.1:7400"));
  ASSERT_TRUE(applier->WaitReady(std::chrono::steady_clock::now() + kPatience));
  ASSERT_OK_AND_ASSIGN(Dict other, Dict::Open(AttachOptions(dict_->name())));
  const uint64_t before = other.revision();
  EXPECT_THAT(other.Set("x", Value::Int(1)),
              StatusIs(StatusCode::kFailedPrecondition, ::testing::HasSubstr("127.0.0.1:7400")));
  EXPECT_EQ(other.revision(), before);
  AwaitApplied(*applier, upstream.Commit({SetOf("x", 2)}));
  ASSERT_OK_AND_ASSIGN(auto value, other.Get("x"));
  EXPECT_EQ(value, Value::Int(2));
}

}  // namespace
}  // namespace shmdict::replica
