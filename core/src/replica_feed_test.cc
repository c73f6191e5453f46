// ReplicaFeed: adoption (fresh, with data, another upstream, a live owner, a dead one), the feed's
// commits and their upstream revisions, the resume rule at every step of a commit, the refusal of
// every other write path, and what status reports.
#include "shmdict/replica_feed.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "dict_test_base.h"
#include "layout.h"
#include "replica_block.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"

namespace shmdict {
namespace {

using ::testing::HasSubstr;
using testing::StatusIs;

constexpr char kUpstream[] = "etcd:http://127.0.0.1:2379 prefix=/app/";
constexpr char kListen[] = "127.0.0.1:7400";

Change Set(std::string key, int64_t value) {
  return Change{.op = ChangeOp::kSet, .key = std::move(key), .value = Value::Int(value)};
}

class ReplicaFeedTest : public testing::DictTestBase {
 protected:
  void SetUp() override {
    auto d = Dict::Open(CreateOptions(name_));
    ASSERT_OK(d);
    dict_ = std::make_unique<Dict>(std::move(*d));
  }
  void TearDown() override {
    dict_.reset();
    DictTestBase::TearDown();
  }

  Result<ReplicaFeed> Adopt(const std::string& upstream = kUpstream,
                            ReplicaResumePoint* point = nullptr) {
    return ReplicaFeed::Adopt(*dict_, ReplicaMarker{.description = upstream}, point);
  }

  DictStatus Status() { return dict_->GetStatus(); }

  std::unique_ptr<Dict> dict_;
};

TEST_F(ReplicaFeedTest, AFreshDictIsAdoptedWithNothingAppliedAndReportsItsUpstream) {
  ReplicaResumePoint point{.upstream_revision = 99, .upstream_identity = 99, .local_revision = 99};
  auto feed = Adopt(kUpstream, &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 0u);
  EXPECT_EQ(point.upstream_identity, 0u);
  EXPECT_EQ(point.local_revision, 0u);
  EXPECT_EQ(feed->upstream_revision(), 0u);
  const DictStatus st = Status();
  EXPECT_EQ(st.replica_of, std::optional<std::string>(kUpstream));
  EXPECT_EQ(st.replica_listen, std::optional<std::string>(""));
  EXPECT_EQ(st.upstream_revision, std::optional<uint64_t>(0));
  EXPECT_EQ(st.upstream_connected, std::optional<bool>(false));
  EXPECT_EQ(st.last_upstream_contact, std::optional<uint64_t>(0));
}

TEST_F(ReplicaFeedTest, ADictThatIsNoReplicaReportsEmptyReplicaFields) {
  const DictStatus st = Status();
  EXPECT_EQ(st.replica_of, std::optional<std::string>(""));
  EXPECT_EQ(st.replica_listen, std::optional<std::string>(""));
  EXPECT_EQ(st.upstream_revision, std::optional<uint64_t>(0));
  EXPECT_EQ(st.upstream_connected, std::optional<bool>(false));
}

TEST_F(ReplicaFeedTest, ADictWithDataIsAdoptedAtItsRevisionWithNothingAppliedAndKeepsItsData) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  ASSERT_OK(dict_->Set("b", Value::Int(2)));
  ReplicaResumePoint point;
  auto feed = Adopt(kUpstream, &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 0u);
  EXPECT_EQ(point.local_revision, 2u);
  EXPECT_EQ(dict_->Export().size(), 2u);
}

TEST_F(ReplicaFeedTest, ApplyCommitsContiguousLocalRevisionsAndRecordsTheUpstreamRevision) {
  auto feed = Adopt();
  ASSERT_OK(feed);
  EXPECT_THAT(feed->Apply({Set("a", 1), Set("b", 2)}, 10), testing::IsOkAndHolds(1u));
  EXPECT_THAT(feed->Apply({Set("a", 3)}, 12), testing::IsOkAndHolds(2u));
  EXPECT_THAT(feed->Apply({Change{.op = ChangeOp::kErase, .key = "b"}}, 12),
              testing::IsOkAndHolds(3u));
  EXPECT_EQ(feed->upstream_revision(), 12u);
  EXPECT_EQ(Status().upstream_revision, std::optional<uint64_t>(12));
  // Progress without data: the revision stays, the upstream revision moves.
  EXPECT_THAT(feed->Apply({}, 20), testing::IsOkAndHolds(3u));
  EXPECT_THAT(feed->Apply({Change{.op = ChangeOp::kErase, .key = "missing"}}, 21),
              testing::IsOkAndHolds(3u));
  EXPECT_EQ(feed->upstream_revision(), 21u);
  EXPECT_EQ(Status().upstream_revision, std::optional<uint64_t>(21));
  EXPECT_EQ(dict_->revision(), 3u);
  const std::map<std::string, Value> expected = {{"a", Value::Int(3)}};
  EXPECT_TRUE(dict_->Export() == expected);
  // A clear and sets in one batch: one revision.
  EXPECT_THAT(feed->Apply({Change{.op = ChangeOp::kClear}, Set("c", 4)}, 30),
              testing::IsOkAndHolds(4u));
  const std::map<std::string, Value> replaced = {{"c", Value::Int(4)}};
  EXPECT_TRUE(dict_->Export() == replaced);
}

TEST_F(ReplicaFeedTest, ApplyBehindTheRecordedUpstreamRevisionIsRefusedAndChangesNothing) {
  auto feed = Adopt();
  ASSERT_OK(feed);
  ASSERT_OK(feed->Apply({Set("a", 1)}, 10));
  EXPECT_THAT(feed->Apply({Set("a", 2)}, 9),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr("behind")));
  EXPECT_THAT(feed->Apply({}, 9), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_EQ(dict_->revision(), 1u);
  EXPECT_EQ(dict_->Get("a")->value().AsInt(), 1);
  EXPECT_EQ(feed->upstream_revision(), 10u);
  EXPECT_EQ(Status().upstream_revision, std::optional<uint64_t>(10));
}

TEST_F(ReplicaFeedTest, AReplacementAfterARestartedUpstreamHistoryMayGoBackInRevision) {
  {
    auto feed = Adopt();
    ASSERT_OK(feed);
    ASSERT_OK(feed->Apply({Set("a", 1)}, 10));
    ASSERT_OK_AND_ASSIGN(uint64_t local, feed->ApplyRestartedHistory({Set("a", 2)}, 3));
    EXPECT_EQ(local, 2u);
    EXPECT_EQ(feed->upstream_revision(), 3u);
    ASSERT_OK(feed->Apply({Set("a", 3)}, 4));  // the new history goes on from there
  }
  ReplicaResumePoint point;
  auto feed = Adopt(kUpstream, &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 4u);
  EXPECT_EQ(dict_->Get("a")->value().AsInt(), 3);
}

TEST_F(ReplicaFeedTest, ALiveOwnerIsNotDisplacedAndIsNamedByItsPid) {
  auto feed = Adopt();
  ASSERT_OK(feed);
  auto other = Dict::Open(AttachOptions(name_));
  ASSERT_OK(other);
  EXPECT_THAT(ReplicaFeed::Adopt(*other, ReplicaMarker{.description = kUpstream}, nullptr),
              StatusIs(StatusCode::kAlreadyExists, HasSubstr("pid " + std::to_string(getpid()))));
  EXPECT_THAT(Adopt("bridge:unix:/x dict=y"), StatusIs(StatusCode::kAlreadyExists));
  ASSERT_OK(feed->Apply({Set("a", 1)}, 3));  // still the owner
}

TEST_F(ReplicaFeedTest, AFeedDestroyedIsTakenOverAtItsUpstreamRevisionForTheSameUpstream) {
  {
    auto feed = Adopt();
    ASSERT_OK(feed);
    ASSERT_OK(feed->Apply({Set("a", 1)}, 41));
    ASSERT_OK(feed->SetUpstreamIdentity(77));
  }
  EXPECT_EQ(Status().replica_of, std::optional<std::string>(kUpstream)) << "still a replica";
  EXPECT_THAT(dict_->Set("b", Value::Int(2)), StatusIs(StatusCode::kFailedPrecondition));
  ReplicaResumePoint point;
  auto feed = Adopt(kUpstream, &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 41u);
  EXPECT_EQ(point.upstream_identity, 77u);
  EXPECT_EQ(point.local_revision, 1u);
}

TEST_F(ReplicaFeedTest, AnotherUpstreamStartsFromNothing) {
  {
    auto feed = Adopt();
    ASSERT_OK(feed);
    ASSERT_OK(feed->Apply({Set("a", 1)}, 41));
    ASSERT_OK(feed->SetUpstreamIdentity(77));
  }
  ReplicaResumePoint point;
  auto feed = Adopt("bridge:unix:/run/p.sock dict=orders", &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 0u);
  EXPECT_EQ(point.upstream_identity, 0u);
  EXPECT_EQ(point.local_revision, 1u);
  EXPECT_EQ(Status().replica_of, std::optional<std::string>("bridge:unix:/run/p.sock dict=orders"));
  // Starting from nothing, any upstream revision is ahead.
  ASSERT_OK(feed->Apply({Change{.op = ChangeOp::kClear}}, 5));
}

TEST_F(ReplicaFeedTest, ADescriptionTooLongOrNotPrintableIsInvalid) {
  EXPECT_THAT(Adopt(std::string(ReplicaMarker::kMaxUpstreamBytes + 1, 'x')),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(Adopt("etcd:\nx"), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_EQ(Status().replica_of, std::optional<std::string>(""))
      << "a refused adoption marks nothing";
  ASSERT_OK(Adopt(std::string(ReplicaMarker::kMaxUpstreamBytes, 'x')));
  auto feed = Adopt();
  ASSERT_OK(feed);
  EXPECT_THAT(feed->SetListen(std::string(256, 'x')), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(feed->SetListen("a\tb"), StatusIs(StatusCode::kInvalidArgument));
  ASSERT_OK(feed->SetListen(std::string(255, 'x')));
  EXPECT_EQ(Status().replica_listen, std::optional<std::string>(std::string(255, 'x')));
}

// Every write through the core, from any handle (the feed's own caller's too, and under a user
// Lock()), is refused naming where to write; nothing changes.
TEST_F(ReplicaFeedTest, EveryLocalWritePathIsRefusedNamingTheListenAddress) {
  auto feed = Adopt();
  ASSERT_OK(feed);
  ASSERT_OK(feed->Apply({Set("a", 1), Set("n", 2)}, 10));
  ASSERT_OK(feed->SetListen(kListen));
  auto other = Dict::Open(AttachOptions(name_));
  ASSERT_OK(other);
  const std::map<std::string, Value> before = dict_->Export();
  const std::string expected = "dict '" + name_ + "' is a replica of " + kUpstream +
                               " (kept by shmdict-replica): write through " + kListen +
                               ", the replica's --listen";
  auto refused = StatusIs(StatusCode::kFailedPrecondition, ::testing::Eq(expected));
  for (Dict* d : {dict_.get(), &*other}) {
    EXPECT_THAT(d->Set("a", Value::Int(5)), refused);
    EXPECT_THAT(d->Update(std::vector<std::pair<std::string, Value>>{{"x", Value::Int(1)}}),
                refused);
    EXPECT_THAT(d->Update(std::map<std::string, Value>{{"x", Value::Int(1)}}), refused);
    EXPECT_THAT(d->Apply({Set("x", 1)}), refused);
    EXPECT_THAT(d->Apply({}), refused);
    EXPECT_THAT(d->Erase("a"), refused);
    EXPECT_THAT(d->Erase("missing"), refused);
    EXPECT_THAT(d->Pop("a"), refused);
    EXPECT_THAT(d->PopItem(), refused);
    EXPECT_THAT(d->SetDefault("y", Value::Int(1)), refused);
    EXPECT_THAT(d->Clear(), refused);
    EXPECT_THAT(d->CompareAndSet("a", Value::Int(1), Value::Int(2)), refused);
    EXPECT_THAT(d->Increment("a", 1), refused);
    EXPECT_THAT(d->OpenNested("child"), refused);
    {
      auto guard = d->Lock();
      ASSERT_OK(guard);
      EXPECT_THAT(d->Set("a", Value::Int(6)), refused);
      EXPECT_THAT(d->Clear(), refused);
    }
  }
  EXPECT_EQ(dict_->revision(), 1u);
  EXPECT_EQ(other->revision(), 1u);
  EXPECT_TRUE(dict_->Export() == before);
  EXPECT_TRUE(testing::ShmEntriesWithPrefix(name_ + "@").empty()) << "a nested child was created";
  EXPECT_EQ(feed->upstream_revision(), 10u);
  // The feed still writes; unlinking still works.
  EXPECT_THAT(feed->Apply({Set("a", 2)}, 11), testing::IsOkAndHolds(2u));
  ASSERT_OK(other->Unlink());
  EXPECT_TRUE(testing::ShmEntriesWithPrefix(name_).empty());
}

TEST_F(ReplicaFeedTest, WithoutAListenAddressTheRefusalSaysToWriteUpstream) {
  auto feed = Adopt();
  ASSERT_OK(feed);
  EXPECT_THAT(dict_->Set("a", Value::Int(5)),
              StatusIs(StatusCode::kFailedPrecondition,
                       ::testing::EndsWith(std::string(kUpstream) +
                                           " (kept by shmdict-replica): write to its upstream")));
}

TEST_F(ReplicaFeedTest, StatusReportsContactAndConnectionWhileTheFeedLives) {
  LocalCatalog catalog;
  {
    auto feed = Adopt();
    ASSERT_OK(feed);
    ASSERT_OK(feed->SetListen(kListen));
    ASSERT_OK(feed->Apply({Set("a", 1)}, 8));
    const uint64_t before =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
    feed->SetContact(true);
    for (const DictStatus& st : {Status(), *catalog.Inspect(name_)}) {
      EXPECT_EQ(st.replica_of, std::optional<std::string>(kUpstream));
      EXPECT_EQ(st.replica_listen, std::optional<std::string>(kListen));
      EXPECT_EQ(st.upstream_revision, std::optional<uint64_t>(8));
      EXPECT_EQ(st.upstream_connected, std::optional<bool>(true));
      EXPECT_GE(st.last_upstream_contact.value_or(0), before);
    }
    feed->SetContact(false);
    EXPECT_EQ(Status().upstream_connected, std::optional<bool>(false));
    EXPECT_GE(Status().last_upstream_contact.value_or(0), before) << "the last contact stays";
    feed->SetContact(true);
  }
  // The feed is gone: not connected, whatever its flag said.
  EXPECT_EQ(Status().upstream_connected, std::optional<bool>(false));
  EXPECT_EQ(catalog.Inspect(name_)->upstream_connected, std::optional<bool>(false));
  EXPECT_EQ(Status().upstream_revision, std::optional<uint64_t>(8));
}

// A feed in another process, SIGKILLed while connected: status stops saying connected at once,
// and the next Adopt takes the dict over at the dead feed's upstream revision.
TEST_F(ReplicaFeedTest, AFeedWhoseProcessWasKilledIsTakenOverAndNotReportedConnected) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    Options attach = AttachOptions(name_);
    attach.background_compaction = false;
    auto d = Dict::Open(attach);
    if (!d.ok()) _exit(2);
    auto feed = ReplicaFeed::Adopt(*d, ReplicaMarker{.description = kUpstream}, nullptr);
    if (!feed.ok() || !feed->Apply({Set("k", 7)}, 70).ok() || !feed->SetListen(kListen).ok()) {
      _exit(3);
    }
    feed->SetContact(true);
    const char byte = 'r';
    if (write(ready[1], &byte, 1) != 1) _exit(4);
    while (true) pause();
  }
  close(ready[1]);
  char byte = 0;
  const ssize_t got = read(ready[0], &byte, 1);
  close(ready[0]);
  ASSERT_EQ(got, 1) << "the feed process failed";
  EXPECT_EQ(Status().upstream_connected, std::optional<bool>(true));
  EXPECT_THAT(Adopt(), StatusIs(StatusCode::kAlreadyExists));
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wstatus));

  EXPECT_EQ(Status().upstream_connected, std::optional<bool>(false));
  EXPECT_EQ(Status().replica_listen, std::optional<std::string>(kListen));
  EXPECT_THAT(dict_->Set("a", Value::Int(1)),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr(kListen)));
  ReplicaResumePoint point;
  auto feed = Adopt(kUpstream, &point);
  ASSERT_OK(feed);
  EXPECT_EQ(point.upstream_revision, 70u);
  EXPECT_EQ(point.local_revision, 1u);
  EXPECT_EQ(Status().replica_listen, std::optional<std::string>("")) << "the dead feed's address";
  EXPECT_THAT(feed->Apply({Set("k", 8)}, 71), testing::IsOkAndHolds(2u));
}

// The resume rule (replica_block.h) at every step of a feed's commit: whatever store a feed dies
// after, the next reader derives the upstream revision of the last committed data. A store
// sequence is replayed one store at a time on a copy of the block and the derivation checked
// after each; the states inside StorePending / StoreApplied / RecordWithoutCommit are built from
// their documented order.
class ResumeRuleTest : public ::testing::Test {
 protected:
  // The block after a clean history: revision c committed holding upstream u.
  void Settle(uint64_t u, uint64_t c) {
    block_ = std::make_unique<internal::ReplicaBlock>();
    block_->pending_upstream.store(u);
    block_->pending_local.store(c);
    block_->applied_upstream.store(u);
    block_->applied_local.store(c);
  }
  uint64_t Derive(uint64_t committed) const {
    return internal::UpstreamOfCommitted(*block_, committed);
  }
  std::unique_ptr<internal::ReplicaBlock> block_;
};

TEST_F(ResumeRuleTest, EveryPrefixOfACommitYieldsTheUpstreamRevisionOfTheCommittedData) {
  Settle(10, 5);
  internal::NormalizePairs(block_.get(), 5);
  EXPECT_EQ(Derive(5), 10u);
  // StorePending: pending_local first ...
  block_->pending_local.store(6);
  EXPECT_EQ(Derive(5), 10u) << "died between pending's two stores";
  // ... then pending_upstream (the whole of StorePending).
  Settle(10, 5);
  internal::StorePending(block_.get(), 20, 6);
  EXPECT_EQ(Derive(5), 10u) << "died after pending, before the commit store";
  // The commit store: revision 6 is now committed.
  EXPECT_EQ(Derive(6), 20u) << "died after the commit store, before applied";
  // StoreApplied: applied_local first, then applied_upstream.
  block_->applied_local.store(6);
  EXPECT_EQ(Derive(6), 20u) << "died between applied's two stores";
  block_->applied_upstream.store(20);
  EXPECT_EQ(Derive(6), 20u);
}

TEST_F(ResumeRuleTest, ADeathInsideTheAppliedStoresIsNormalizedBeforeTheNextCommit) {
  // Died between applied_local and applied_upstream of revision 6: applied reads (10, 6).
  Settle(10, 5);
  internal::StorePending(block_.get(), 20, 6);
  block_->applied_local.store(6);
  // The next feed: step 0, then it dies after its own pending store of revision 7.
  internal::NormalizePairs(block_.get(), 6);
  internal::StorePending(block_.get(), 30, 7);
  EXPECT_EQ(Derive(6), 20u) << "revision 6 holds upstream 20, not the stale applied 10";
  EXPECT_EQ(Derive(7), 30u);
}

TEST_F(ResumeRuleTest, ProgressWithoutACommitYieldsTheOldOrTheNewRevisionAtEveryStep) {
  Settle(10, 5);
  internal::NormalizePairs(block_.get(), 5);
  // RecordWithoutCommit's stores, one at a time.
  const std::vector<std::function<void()>> steps = {
      [&] { block_->pending_local.store(6); },     [&] { block_->applied_local.store(5); },
      [&] { block_->applied_upstream.store(15); }, [&] { block_->pending_upstream.store(15); },
      [&] { block_->pending_local.store(5); },
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    steps[i]();
    const uint64_t u = Derive(5);
    EXPECT_TRUE(u == 10 || u == 15) << "after store " << i << ": " << u;
    if (i >= 2) {
      EXPECT_EQ(u, 15u) << "after store " << i;
    }
  }
  // The function itself ends in the same state.
  Settle(10, 5);
  internal::RecordWithoutCommit(block_.get(), 15, 5);
  EXPECT_EQ(Derive(5), 15u);
  EXPECT_EQ(block_->applied_upstream.load(), 15u);
  EXPECT_EQ(block_->pending_local.load(), 5u);
}

TEST_F(ResumeRuleTest, ABlockNamingNeitherRevisionResumesFromNothing) {
  Settle(10, 5);
  EXPECT_EQ(Derive(9), 0u);
}

}  // namespace
}  // namespace shmdict
