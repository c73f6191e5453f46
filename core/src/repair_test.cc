// Repair after a writer lock holder died: the dead holder is simulated by a holder identity that
// is dropped while holding the lock (its liveness lock goes, exactly as at its process's death),
// after the shared bookkeeping has been put in the state a writer killed at that instant leaves.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "blob_segment.h"
#include "change_record.h"
#include "dict_test_base.h"
#include "layout.h"
#include "log_ring.h"
#include "robust_lock.h"
#include "segment.h"
#include "shmdict/dict.h"

namespace shmdict {
namespace {

class RepairTest : public testing::DictTestBase {
 protected:
  void SetUp() override {
    Options o;
    o.name = name_;
    o.lock_timeout = std::chrono::milliseconds(5000);
    auto d = Dict::Open(o);
    ASSERT_OK(d);
    dict_ = std::make_unique<Dict>(std::move(*d));
    auto fd = internal::OpenSegment(name_, O_RDWR, 0);
    ASSERT_OK(fd);
    auto map = internal::MapSegment(fd->get(), internal::kHeaderSize, true);
    ASSERT_OK(map);
    fd_ = std::move(*fd);
    map_ = std::move(*map);
    header_ = reinterpret_cast<internal::MainHeader*>(map_.data());
  }
  void TearDown() override {
    dict_.reset();
    map_ = internal::Mapping();
    fd_ = internal::Fd();
    DictTestBase::TearDown();
  }
  Result<Dict> AttachAnotherHandle() {
    Options attach;
    attach.name = name_;
    attach.create_mode = CreateMode::kMustAttach;
    return Dict::Open(attach);
  }
  // Leaves the writer lock held by a handle that no longer exists: its liveness lock is dropped
  // with its identity, as when its process dies. (On a thread of its own, whose record of held
  // locks ends with it.)
  void DieHoldingTheLock() {
    std::thread([this] {
      internal::HolderIdentity doomed;
      ASSERT_OK(doomed.Claim(name_, fd_.get(), header_));
      ASSERT_EQ(internal::AcquireRobustLock(&header_->writer.write_lock, doomed,
                                            std::chrono::nanoseconds(-1)),
                internal::LockResult::kAcquired);
    }).join();
  }

  std::unique_ptr<Dict> dict_;
  internal::Fd fd_;
  internal::Mapping map_;
  internal::MainHeader* header_ = nullptr;
};

TEST_F(RepairTest, WriterKilledBetweenCommitAndTailUpdateIsRepairedByTheNextWriter) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  const uint64_t tail_before = header_->writer.writer_tail.load();
  ASSERT_OK(dict_->Set("b", Value::Int(2)));
  // The state of a writer killed right after its commit store: revision 2 is committed, the
  // tail bookkeeping still describes revision 1.
  header_->writer.writer_tail.store(tail_before);
  header_->writer.writer_tail_revision.store(1);
  DieHoldingTheLock();

  Result<Dict> other = AttachAnotherHandle();
  ASSERT_OK(other);
  auto rev = other->Set("c", Value::Int(3));
  ASSERT_OK(rev);
  EXPECT_EQ(*rev, 3u);
  EXPECT_EQ(other->GetStatus().lock_recoveries, 1u);
  ASSERT_OK(dict_->Set("d", Value::Int(4))) << "the repaired tail is right";
  auto items = other->Export();
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items.at("b").AsInt(), 2);
  EXPECT_EQ(items.at("d").AsInt(), 4);
}

// The tail and its revision are two stores: a writer killed between them leaves the tail
// already past its record while the revision still names the one before. Found by the crash
// test at scale 4 ("the record of revision N left by a dead writer is invalid").
TEST_F(RepairTest, WriterKilledBetweenTheTailAndItsRevisionIsRepairedByTheNextWriter) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  ASSERT_OK(dict_->Set("b", Value::Int(2)));
  header_->writer.writer_tail_revision.store(1);  // the tail store of revision 2 was made
  DieHoldingTheLock();

  Result<Dict> other = AttachAnotherHandle();
  ASSERT_OK(other);
  auto rev = other->Set("c", Value::Int(3));
  ASSERT_OK(rev);
  EXPECT_EQ(*rev, 3u);
  ASSERT_OK(dict_->Set("d", Value::Int(4))) << "the repaired tail is right";
  auto items = other->Export();
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items.at("c").AsInt(), 3);
  EXPECT_EQ(items.at("d").AsInt(), 4);
}

TEST_F(RepairTest, UncommittedBytesOfADeadWriterStayInvisible) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  // A writer killed after writing its record's bytes but before the commit store.
  auto fd = internal::OpenSegment(name_, O_RDWR, 0);
  ASSERT_OK(fd);
  auto full =
      internal::MapSegment(fd->get(), internal::kHeaderSize + header_->identity.log_capacity, true);
  ASSERT_OK(full);
  const uint64_t tail = header_->writer.writer_tail.load();
  std::memset(full->data() + internal::kHeaderSize + tail, 0xAB, 256);
  DieHoldingTheLock();

  Result<Dict> other = AttachAnotherHandle();
  ASSERT_OK(other);
  EXPECT_EQ(*other->Size(), 1u);
  ASSERT_OK(other->Set("b", Value::Int(2)));
  EXPECT_EQ(other->GetStatus().lock_recoveries, 1u);
  EXPECT_EQ(dict_->Export().size(), 2u);
  EXPECT_EQ(dict_->revision(), 2u);
}

// A writer killed between committing the change that retired a nested child and unlinking it:
// the next lock holder's repair finds the retirement in the log and unlinks the child.
TEST_F(RepairTest, AChildRetiredByADeadWriterIsUnlinkedByTheNextLockHolder) {
  auto child = dict_->OpenNested("settings");
  ASSERT_OK(child);
  const std::string child_name = child->name();
  ASSERT_OK(child->Close());  // closed: only its segment is left
  ASSERT_OK(dict_->Set("settings", Value::Int(1)));
  // The state of a writer killed right after that commit: the child's segment is still there.
  ASSERT_OK(internal::CreateSegment(child_name, 4096, 0600, /*replace_existing=*/false));
  ASSERT_TRUE(std::filesystem::exists("/dev/shm/shmdict." + child_name));
  DieHoldingTheLock();

  Result<Dict> other = AttachAnotherHandle();
  ASSERT_OK(other);
  ASSERT_OK(other->Set("b", Value::Int(2)));
  EXPECT_EQ(other->GetStatus().lock_recoveries, 1u);
  EXPECT_FALSE(std::filesystem::exists("/dev/shm/shmdict." + child_name));
}

// A retire marker naming another dict (left in the log by an older build that retired any
// reference, or written by hand): the next lock holder's repair replays the markers of the dead
// writer's records, and must apply the rule the commit applies, unlinking only its own children.
TEST_F(RepairTest, ARepairUnlinksOnlyThisDictsOwnChildren) {
  const std::string victim = NewDictName();
  Options victim_options = CreateOptions(victim);
  auto other = Dict::Open(victim_options);
  ASSERT_OK(other);
  auto own_child = dict_->OpenNested("settings");
  ASSERT_OK(own_child);
  const std::string own_child_name = own_child->name();
  ASSERT_OK(own_child->Close());
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  // A committed record with retire markers for another dict and for this dict's own child, by a
  // writer killed right after its commit store.
  auto fd = internal::OpenSegment(name_, O_RDWR, 0);
  ASSERT_OK(fd);
  const uint64_t capacity = header_->identity.log_capacity;
  auto full = internal::MapSegment(fd->get(), internal::kHeaderSize + capacity, true);
  ASSERT_OK(full);
  std::string payload;
  const std::string one = Value::Int(1).data();
  internal::AppendOp({ChangeOp::kSet, ValueType::kInt64, "b", one}, &payload);
  internal::AppendRetireChild(victim, &payload);
  internal::AppendRetireChild(own_child_name, &payload);
  internal::LogRing ring(header_, full->data() + internal::kHeaderSize, capacity);
  const uint64_t revision = header_->commit.commit_revision.load() + 1;
  ring.Write(header_->writer.writer_tail.load(), revision, internal::RecordKind::kChange, payload);
  header_->commit.commit_revision.store(revision);
  DieHoldingTheLock();

  Result<Dict> attached = AttachAnotherHandle();
  ASSERT_OK(attached);
  ASSERT_OK(attached->Set("c", Value::Int(3)));
  EXPECT_EQ(attached->GetStatus().lock_recoveries, 1u);
  EXPECT_EQ((*attached->Get("b"))->AsInt(), 1) << "the dead writer's record was committed";
  EXPECT_TRUE(std::filesystem::exists(testing::ShmPath(victim))) << "another dict was unlinked";
  EXPECT_FALSE(std::filesystem::exists(testing::ShmPath(own_child_name)));
}

// A writer killed after storing a large value in its own segment but before its commit: the next
// change takes the same revision, and when it is small nothing replaces that segment. The next
// lock holder's repair unlinks it (found by the crash test as a "@b" segment left in /dev/shm).
TEST_F(RepairTest, ALargeValueADeadWriterNeverCommittedIsUnlinkedByTheNextLockHolder) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  const std::string blob = "/dev/shm/shmdict." + internal::BlobSegment(name_, 2);
  ASSERT_OK(internal::WriteBlobSegment(name_, 2, std::string(1 << 16, 'x'), 0600));
  DieHoldingTheLock();

  Result<Dict> other = AttachAnotherHandle();
  ASSERT_OK(other);
  auto rev = other->Set("b", Value::Int(2));
  ASSERT_OK(rev);
  EXPECT_EQ(*rev, 2u);
  EXPECT_EQ(other->GetStatus().lock_recoveries, 1u);
  EXPECT_FALSE(std::filesystem::exists(blob)) << "the dead writer's large value was kept";
  EXPECT_EQ((*other->Get("b"))->AsInt(), 2);
}

// A process SIGKILLed while asleep in WaitForChange leaves the "someone may be waiting" flag set.
// The next commit clears it with one wake; later commits make no system call for it.
TEST_F(RepairTest, AWaiterKilledInItsSleepCostsWritersOneWakeAtMost) {
  header_->wait.maybe_waiting.store(1);  // what the dead waiter left
  const uint32_t futex_before = header_->wait.change_futex.load();
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  EXPECT_EQ(header_->wait.maybe_waiting.load(), 0u);
  EXPECT_EQ(header_->wait.change_futex.load(), futex_before + 1) << "one wake";
  ASSERT_OK(dict_->Set("b", Value::Int(2)));
  EXPECT_EQ(header_->wait.change_futex.load(), futex_before + 1) << "and no more";
}

// Random corruption can leave an owner word that no handle was ever given: held by nobody, never
// to be released. That is a clear DATA_LOSS naming the fix, not a wait for the lock timeout.
TEST_F(RepairTest, ADamagedLockWordIsDataLossNotATimeout) {
  const uint64_t never_issued = header_->writer.next_holder_token.load() + 1000;
  header_->writer.write_lock.owner.store(never_issued);
  Options attach;
  attach.name = name_;
  attach.create_mode = CreateMode::kMustAttach;
  attach.lock_timeout = std::chrono::hours(1);  // a timeout instead of the error hangs the test
  Result<Dict> other = Dict::Open(attach);
  ASSERT_OK(other);
  auto write = other->Set("b", Value::Int(2));
  EXPECT_EQ(write.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(write.status().message().find("held by no live process and cannot be recovered"),
            std::string::npos)
      << write.status().message();
  EXPECT_NE(write.status().message().find("unlink"), std::string::npos);
  header_->writer.write_lock.owner.store(0);  // so that TearDown's handles close normally
}

// A repair that fails (here: the published snapshot is gone) is owed to every later acquirer,
// each of which reports it, rather than being forgotten after the first.
TEST_F(RepairTest, AFailedRepairIsRetriedByTheNextAcquirer) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  ASSERT_OK(dict_->Dump());
  const uint64_t generation = header_->commit.snapshot_generation.load();
  ASSERT_GT(generation, 0u);
  const std::string snapshot = internal::SnapshotSegment(name_, generation);
  const std::string hidden = snapshot + "-hidden";
  ASSERT_OK(internal::RenameSegment(snapshot, hidden));
  DieHoldingTheLock();
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto write = dict_->Set("b", Value::Int(2));
    EXPECT_FALSE(write.ok()) << "attempt " << attempt << ": a write over an unrepaired log";
  }
  ASSERT_OK(internal::RenameSegment(hidden, snapshot));
  auto write = dict_->Set("b", Value::Int(2));
  ASSERT_OK(write);
  EXPECT_EQ(dict_->GetStatus().lock_recoveries, 1u);
  EXPECT_EQ((*dict_->Get("a"))->AsInt(), 1);
}

// A commit point that goes back (damaged: nothing lowers it) would make committed changes
// silently disappear: an attacher compares it with the writer's record of its last commit, and an
// attached handle with its own revision. Both report kDataLoss.
TEST_F(RepairTest, ACommitPointThatWentBackIsDataLoss) {
  ASSERT_OK(dict_->Set("a", Value::Int(1)));
  ASSERT_OK(dict_->Set("b", Value::Int(2)));
  ASSERT_OK(dict_->Set("c", Value::Int(3)));
  Result<Dict> attached = AttachAnotherHandle();
  ASSERT_OK(attached);
  header_->commit.commit_revision.store(1);

  Status refreshed = attached->Refresh();
  EXPECT_EQ(refreshed.code(), StatusCode::kDataLoss) << refreshed.ToString();
  EXPECT_NE(refreshed.message().find(name_), std::string::npos) << refreshed.ToString();
  Result<Dict> attacher = AttachAnotherHandle();
  EXPECT_EQ(attacher.status().code(), StatusCode::kDataLoss) << attacher.status().ToString();

  header_->commit.commit_revision.store(3);  // undamaged again: both work
  EXPECT_OK(attached->Refresh());
  EXPECT_OK(AttachAnotherHandle());
}

}  // namespace
}  // namespace shmdict
