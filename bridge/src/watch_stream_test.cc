// The Watch stream as a client sees it, against a BridgeServer in this process: revision order,
// resume after a revision, a snapshot for a revision the log no longer holds, progress, and the
// end of a stream at shutdown.
#include "watch_stream.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "in_process_bridge.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using Stream = grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>;

class WatchStreamTest : public InProcessBridge {
 protected:
  void SetUp() override {
    InProcessBridge::SetUp();
    Options options = CreateOptions(name_);
    // A small log, built inline: a few hundred writes push early revisions out of it.
    options.buffer_size = 64 << 10;
    options.background_compaction = false;
    auto created = Dict::Open(options);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    dict_.emplace(std::move(*created));
    StartBridge();
  }
  void TearDown() override {
    StopBridge();
    dict_.reset();
    InProcessBridge::TearDown();
  }

  // Opens a Watch of the test's dict with `start` (its dict filled in).
  std::unique_ptr<Stream> Watch(v1::WatchRequest::Start start) {
    context_ = Context();
    std::unique_ptr<Stream> stream = stub_->Watch(context_.get());
    start.set_dict(name_);
    v1::WatchRequest request;
    *request.mutable_start() = start;
    EXPECT_TRUE(stream->Write(request));
    return stream;
  }
  static v1::WatchRequest::Start After(uint64_t revision) {
    v1::WatchRequest::Start start;
    start.set_after_revision(revision);
    return start;
  }

  // Sets key "kN" to N for N in [first, last]; one revision each.
  void Write(int first, int last) {
    for (int i = first; i <= last; ++i) {
      ASSERT_OK(dict_->Set("k" + std::to_string(i), Value::Int(i)));
    }
  }

  // Reads until the stream has sent every revision up to `revision`; returns the changes. Fails
  // the test if a message breaks the stream's contract on the way (a change out of order or
  // repeated, a revision field going back, a progress message ahead of a change).
  std::vector<v1::Change> ReadChangesThrough(Stream* stream, uint64_t after, uint64_t revision) {
    std::vector<v1::Change> changes;
    uint64_t complete = after;
    v1::WatchResponse response;
    while (complete < revision) {
      if (!stream->Read(&response)) {
        ADD_FAILURE() << "the stream ended at revision " << complete << " of " << revision;
        break;
      }
      EXPECT_GE(response.revision(), complete) << "the revision field went back";
      if (response.kind() == v1::WatchResponse::KIND_CHANGES) {
        for (const v1::Change& change : response.changes()) {
          const uint64_t last = changes.empty() ? after : changes.back().revision();
          EXPECT_TRUE(change.revision() == last || change.revision() == last + 1)
              << "change at " << change.revision() << " after " << last;
          EXPECT_GT(change.revision(), complete) << "a revision already complete came again";
          changes.push_back(change);
        }
      } else {
        EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS) << response.DebugString();
      }
      complete = response.revision();
    }
    return changes;
  }

  std::optional<Dict> dict_;
  std::unique_ptr<grpc::ClientContext> context_;
};

TEST_F(WatchStreamTest, ChangesArriveOnceEachInRevisionOrder) {
  const uint64_t base = dict_->revision();
  Write(1, 150);
  // One atomic batch: its three changes share one revision.
  ASSERT_OK(dict_->Update(std::vector<std::pair<std::string, Value>>{
      {"a", Value::Int(1)}, {"b", Value::Int(2)}, {"c", Value::Int(3)}}));
  Write(151, 160);
  const uint64_t last = dict_->revision();

  v1::WatchRequest::Start start = After(base);
  start.set_max_changes_per_message(7);  // many messages, one batch split across two
  auto stream = Watch(start);
  std::vector<v1::Change> changes = ReadChangesThrough(stream.get(), base, last);
  ASSERT_EQ(changes.size(), 163u);
  EXPECT_EQ(changes.front().revision(), base + 1);
  EXPECT_EQ(changes.back().revision(), last);
  EXPECT_EQ(changes[0].key(), "k1");
  EXPECT_EQ(changes[150].key(), "a");
  EXPECT_EQ(changes[152].key(), "c");
  EXPECT_EQ(changes[150].revision(), changes[152].revision());
  Value value;
  ASSERT_OK(wire::FromProto(changes[149].value(), &value));
  EXPECT_EQ(value, Value::Int(150));
  context_->TryCancel();
}

TEST_F(WatchStreamTest, ResumingAfterARevisionSendsExactlyTheRevisionsAfterIt) {
  Write(1, 40);
  const uint64_t resume_after = dict_->revision();
  Write(41, 60);
  const uint64_t last = dict_->revision();

  auto stream = Watch(After(resume_after));
  std::vector<v1::Change> changes = ReadChangesThrough(stream.get(), resume_after, last);
  ASSERT_EQ(changes.size(), 20u);
  EXPECT_EQ(changes.front().revision(), resume_after + 1);
  EXPECT_EQ(changes.front().key(), "k41");
  // Live changes follow on the same stream.
  Write(61, 61);
  changes = ReadChangesThrough(stream.get(), last, last + 1);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].key(), "k61");
  context_->TryCancel();
}

TEST_F(WatchStreamTest, RevisionNoLongerInTheLogIsAnsweredWithASnapshot) {
  const std::string filler(200, 'x');
  for (int i = 0; i < 1000; ++i) {
    ASSERT_OK(dict_->Set("k" + std::to_string(i % 50), Value::Str(filler + std::to_string(i))));
  }
  const uint64_t last = dict_->revision();

  auto stream = Watch(After(1));
  std::map<std::string, Value> copy;
  v1::WatchResponse response;
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.kind(), v1::WatchResponse::KIND_SNAPSHOT) << "revision 1 was still in the log";
  EXPECT_TRUE(response.snapshot_begins());
  uint64_t snapshot_revision = 0;
  for (;;) {
    ASSERT_EQ(response.kind(), v1::WatchResponse::KIND_SNAPSHOT);
    for (const v1::Entry& entry : response.snapshot_entries()) {
      ASSERT_OK(wire::FromProto(entry.value(), &copy[entry.key()]));
    }
    if (response.snapshot_ends()) {
      snapshot_revision = response.snapshot_revision();
      EXPECT_EQ(response.revision(), snapshot_revision);
      break;
    }
    ASSERT_TRUE(stream->Read(&response));
  }
  EXPECT_GT(snapshot_revision, 1u);
  // What the log still holds after the snapshot follows as changes.
  for (const v1::Change& change : ReadChangesThrough(stream.get(), snapshot_revision, last)) {
    ASSERT_EQ(change.op(), v1::OP_SET);
    ASSERT_OK(wire::FromProto(change.value(), &copy[change.key()]));
  }
  EXPECT_EQ(copy, dict_->Export()) << "the client's copy differs from the dict";
  context_->TryCancel();
}

TEST_F(WatchStreamTest, FromCurrentStartsWithProgressAndProgressIsSentWhenAsked) {
  Write(1, 5);
  const uint64_t current = dict_->revision();
  v1::WatchRequest::Start start;
  start.set_from_current(true);
  start.set_progress_interval_ms(3600 * 1000);  // only asked-for progress
  auto stream = Watch(start);
  v1::WatchResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
  EXPECT_EQ(response.revision(), current);

  Write(6, 6);
  ASSERT_TRUE(stream->Read(&response));
  ASSERT_EQ(response.kind(), v1::WatchResponse::KIND_CHANGES);
  EXPECT_EQ(response.revision(), current + 1);

  v1::WatchRequest ask;
  ask.mutable_progress();
  ASSERT_TRUE(stream->Write(ask));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
  EXPECT_EQ(response.revision(), current + 1);
  context_->TryCancel();
}

TEST_F(WatchStreamTest, IdleStreamIsSentProgressAtItsInterval) {
  Write(1, 3);
  const uint64_t current = dict_->revision();
  v1::WatchRequest::Start start = After(current);
  start.set_progress_interval_ms(50);
  auto stream = Watch(start);
  v1::WatchResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
  EXPECT_EQ(response.revision(), current);
  context_->TryCancel();
}

TEST_F(WatchStreamTest, MisusedStreamIsEndedWithInvalidArgument) {
  auto stream = Watch(After(0));
  v1::WatchRequest again;
  again.mutable_start()->set_dict(name_);
  ASSERT_TRUE(stream->Write(again));
  v1::WatchResponse response;
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
}

TEST_F(WatchStreamTest, WatchOfAMissingDictEndsWithNotFound) {
  context_ = Context();
  auto stream = stub_->Watch(context_.get());
  v1::WatchRequest request;
  request.mutable_start()->set_dict(NewDictName());
  ASSERT_TRUE(stream->Write(request));
  v1::WatchResponse response;
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(WatchStreamTest, ShutdownEndsOpenStreamsWithUnavailable) {
  Write(1, 1);
  auto stream = Watch(After(dict_->revision()));
  v1::WatchRequest ask;
  ask.mutable_progress();
  ASSERT_TRUE(stream->Write(ask));
  v1::WatchResponse response;
  ASSERT_TRUE(stream->Read(&response));  // the stream is open and attached

  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

}  // namespace
}  // namespace shmdict::bridge
