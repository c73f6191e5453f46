// The pump's fan-out as clients see it (issue 20), against a BridgeServer in this process: many
// streams of one dict while a local writer commits all receive the same gap-free changes, whether
// they started before the writes, in the middle of them, or fell behind a tiny window; and the
// shared buffers are released once the last stream is done.
#include "watch_pump.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "in_process_bridge.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using Stream = grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>;

// Polls `done` until it holds or 30 s pass (a deadline for what must happen, never a measured
// time).
template <typename Fn>
bool Eventually(Fn&& done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A change as a client applies it.
struct Seen {
  uint64_t revision;
  std::string key;
  int64_t value;
  bool operator==(const Seen&) const = default;
};

class WatchPumpTest : public InProcessBridge {
 protected:
  void SetUp() override {
    InProcessBridge::SetUp();
    // A log that holds every revision a test writes: a stream that falls behind the window then
    // reads on its own from the log, and a resync snapshot would mean the test wrote too much.
    Options options = CreateOptions(name_);
    options.buffer_size = uint64_t{64} << 20;
    auto created = Dict::Open(options);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    dict_.emplace(std::move(*created));
  }
  void TearDown() override {
    StopBridge();
    dict_.reset();
    InProcessBridge::TearDown();
  }

  struct OpenStream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<Stream> stream;
    uint64_t after = 0;
  };

  // Opens a stream after `after`. With `await_start`, waits for the answer to a progress request
  // (only when nothing after `after` is committed yet): the stream, and the dict's pump, are then
  // started before the test writes.
  OpenStream Open(uint64_t after, bool await_start = false) {
    OpenStream open;
    open.context = Context();
    open.stream = stub_->Watch(open.context.get());
    open.after = after;
    v1::WatchRequest request;
    request.mutable_start()->set_dict(name_);
    request.mutable_start()->set_after_revision(after);
    EXPECT_TRUE(open.stream->Write(request));
    if (await_start) {
      request.Clear();
      request.mutable_progress();
      EXPECT_TRUE(open.stream->Write(request));
      v1::WatchResponse response;
      EXPECT_TRUE(open.stream->Read(&response));
      EXPECT_EQ(response.kind(), v1::WatchResponse::KIND_PROGRESS);
      EXPECT_EQ(response.revision(), after);
    }
    return open;
  }

  // Reads `open` until every revision up to `last` was sent (and moves its `after` there); fails
  // the test on a gap, a repeat, a revision field going back, a snapshot (the log is large enough
  // never to lap a stream here) or a progress message ahead of a change.
  static std::vector<Seen> ReadThrough(OpenStream& open, uint64_t last) {
    std::vector<Seen> seen;
    uint64_t complete = open.after;
    v1::WatchResponse response;
    while (complete < last) {
      if (!open.stream->Read(&response)) {
        ADD_FAILURE() << "the stream ended at revision " << complete << " of " << last;
        break;
      }
      EXPECT_GE(response.revision(), complete) << "the revision field went back";
      EXPECT_NE(response.kind(), v1::WatchResponse::KIND_SNAPSHOT)
          << "a snapshot at " << response.snapshot_revision() << " after revision " << complete;
      for (const v1::Change& change : response.changes()) {
        const uint64_t previous = seen.empty() ? open.after : seen.back().revision;
        EXPECT_TRUE(change.revision() == previous || change.revision() == previous + 1)
            << "change at " << change.revision() << " after " << previous;
        EXPECT_GT(change.revision(), complete) << "a revision already complete came again";
        Value value;
        EXPECT_OK(wire::FromProto(change.value(), &value));
        seen.push_back(Seen{change.revision(), change.key(), value.AsInt().value_or(-1)});
      }
      complete = response.revision();
    }
    open.after = complete;
    return seen;
  }

  std::optional<Dict> dict_;

  // Commits the writes numbered `first` to `last` from a thread of its own (the bridge's pump
  // reads them meanwhile), every seventh an atomic batch of three keys; appends their changes to
  // *expected in commit order.
  void Commit(int first, int last, std::vector<Seen>* expected) {
    std::thread writer([&] {
      for (int i = first; i <= last; ++i) {
        if (i % 7 == 0) {
          std::vector<std::pair<std::string, Value>> items;
          for (int k = 0; k < 3; ++k) items.emplace_back("b" + std::to_string(k), Value::Int(i));
          Result<uint64_t> revision = dict_->Update(items);
          ASSERT_OK(revision);
          for (const auto& item : items) expected->push_back({*revision, item.first, i});
        } else {
          const std::string key = "k" + std::to_string(i % 41);
          Result<uint64_t> revision = dict_->Set(key, Value::Int(i));
          ASSERT_OK(revision);
          expected->push_back({*revision, key, i});
        }
      }
    });
    writer.join();
  }

  // The changes of `all` after `revision`.
  static std::vector<Seen> After(const std::vector<Seen>& all, uint64_t revision) {
    std::vector<Seen> tail;
    for (const Seen& change : all) {
      if (change.revision > revision) tail.push_back(change);
    }
    return tail;
  }
};

TEST_F(WatchPumpTest, StreamsOfOneDictWhileALocalWriterCommitsAllGetTheSameGapFreeChanges) {
  StartBridge();
  const uint64_t base = dict_->revision();
  std::vector<OpenStream> early;
  for (int i = 0; i < 8; ++i) early.push_back(Open(base, true));
  // Late streams start a few revisions back from where the writer got to: they join the shared
  // window inside one of its frames, or read on their own until they caught up.
  std::vector<Seen> expected;
  std::vector<OpenStream> late;
  for (int round = 0; round < 6; ++round) {
    Commit(round * 500 + 1, round * 500 + 500, &expected);
    late.push_back(Open(expected.back().revision - 5));
  }
  Commit(3001, 3500, &expected);
  const uint64_t last = expected.back().revision;

  for (OpenStream& open : early) {
    EXPECT_EQ(ReadThrough(open, last), expected);
    open.context->TryCancel();
  }
  for (OpenStream& open : late) {
    const uint64_t after = open.after;
    EXPECT_EQ(ReadThrough(open, last), After(expected, after))
        << "a stream started after " << after;
    open.context->TryCancel();
  }
}

TEST_F(WatchPumpTest, StreamsBehindATinyWindowReadOnTheirOwnAndStayGapFree) {
  // The smallest window the flag allows, and many frames: the writes come in rounds, each read by
  // a fast stream before the next, while the slow streams are not read at all until the end (gRPC's
  // flow control then stops their writes, and the window moves on without them).
  config_.watch_window_bytes = 1024;
  StartBridge();
  const uint64_t base = dict_->revision();
  OpenStream fast = Open(base, true);
  std::vector<OpenStream> slow;
  for (int i = 0; i < 3; ++i) slow.push_back(Open(base, true));
  std::vector<Seen> expected;
  for (int round = 0; round < 60; ++round) {
    const size_t before = expected.size();
    Commit(round * 100 + 1, round * 100 + 100, &expected);
    const std::vector<Seen> added(expected.begin() + static_cast<ptrdiff_t>(before),
                                  expected.end());
    ASSERT_EQ(ReadThrough(fast, expected.back().revision), added);
  }
  const uint64_t last = expected.back().revision;
  for (OpenStream& open : slow) {
    EXPECT_EQ(ReadThrough(open, last), expected);
    open.context->TryCancel();
  }
  fast.context->TryCancel();
}

TEST_F(WatchPumpTest, SharedBuffersAreReleasedWhenTheLastStreamIsDone) {
  // Nothing of an earlier test is alive (their bridges stopped).
  ASSERT_TRUE(Eventually([] { return WatchPump::LiveFrames() == 0; }))
      << WatchPump::LiveFrames() << " frames outlived their bridge";
  StartBridge();
  const uint64_t base = dict_->revision();
  std::vector<OpenStream> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(Open(base, true));
  std::vector<Seen> expected;
  Commit(1, 200, &expected);
  for (OpenStream& open : streams) EXPECT_EQ(ReadThrough(open, expected.back().revision), expected);
  // The window holds the frames the streams were sent.
  EXPECT_GT(WatchPump::LiveFrames(), 0);

  // All but one stream end: the pump and its window stay for the last one.
  for (size_t i = 1; i < streams.size(); ++i) {
    streams[i].context->TryCancel();
    streams[i].stream->Finish().IgnoreError();
  }
  ASSERT_OK(dict_->Set("after", Value::Int(1)));
  EXPECT_EQ(ReadThrough(streams[0], dict_->revision()),
            (std::vector<Seen>{{dict_->revision(), "after", 1}}));
  EXPECT_GT(WatchPump::LiveFrames(), 0);

  streams[0].context->TryCancel();
  streams[0].stream->Finish().IgnoreError();
  EXPECT_TRUE(Eventually([] { return WatchPump::LiveFrames() == 0; }))
      << WatchPump::LiveFrames() << " frames still alive after the last stream ended";
}

}  // namespace
}  // namespace shmdict::bridge
