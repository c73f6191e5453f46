// The pump's fan-out as clients see it (issue 20), against a BridgeServer in this process: many
// streams of one dict while a local writer commits all receive the same gap-free changes, whether
// they started before the writes, in the middle of them, or fell behind a tiny window; and the
// shared buffers are released once the last stream is done, however the streams end. And the
// stream's moves between the window and a watcher of its own, each forced with the notifier held by
// a test subscriber (WatchWindowTest): joining inside a frame, leaving between fragments of one
// revision, and the pump lapped by the log, checked by the exact changes and the registry's
// join/leave/restart counters.
#include "watch_pump.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "authorizer.h"
#include "call_limits.h"
#include "dict_registry.h"
#include "in_process_bridge.h"
#include "service.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {
namespace {

using Stream = grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>;

// A change as a client applies it.
struct Seen {
  uint64_t revision;
  std::string key;
  int64_t value;
  bool operator==(const Seen&) const = default;
};

class WatchPumpTest : public InProcessBridgeWithDict {
 protected:
  // A log that holds every revision a test writes: a stream that falls behind the window then
  // reads on its own from the log, and a resync snapshot would mean the test wrote too much.
  Options DictOptions() override {
    Options options = CreateOptions(name_);
    options.buffer_size = uint64_t{64} << 20;
    return options;
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

TEST_F(WatchPumpTest, SharedBuffersAreReleasedHoweverTheStreamsEnd) {
  // Many streams of one dict, ended each way a stream ends: cancelled after reading everything,
  // cancelled half-way, cancelled without reading at all (gRPC's flow control holds their writes,
  // and the frames those writes hold), and cut off by the bridge stopping. A small window makes
  // the streams that do not read fall out of it and read on their own.
  ASSERT_TRUE(Eventually([] { return WatchPump::LiveFrames() == 0; }))
      << WatchPump::LiveFrames() << " frames outlived their bridge";
  config_.watch_window_bytes = 4096;
  StartBridge();
  const uint64_t base = dict_->revision();
  std::vector<OpenStream> read_all, read_half, unread;
  for (int i = 0; i < 12; ++i) {
    read_all.push_back(Open(base, true));
    read_half.push_back(Open(base, true));
    unread.push_back(Open(base, true));
  }
  OpenStream last_one = Open(base, true);
  std::vector<Seen> expected;
  Commit(1, 2000, &expected);
  const uint64_t last = expected.back().revision;
  const uint64_t half = expected[expected.size() / 2].revision;
  auto end = [](OpenStream& open) {
    open.context->TryCancel();
    open.stream->Finish().IgnoreError();
  };
  for (OpenStream& open : read_all) {
    EXPECT_EQ(ReadThrough(open, last), expected);
    end(open);
  }
  for (OpenStream& open : read_half) {
    EXPECT_FALSE(ReadThrough(open, half).empty());
    end(open);
  }
  for (OpenStream& open : unread) end(open);
  EXPECT_EQ(ReadThrough(last_one, last), expected);
  EXPECT_GT(WatchPump::LiveFrames(), 0) << "the window of the stream still open";
  end(last_one);
  EXPECT_TRUE(Eventually([] { return WatchPump::LiveFrames() == 0; }))
      << WatchPump::LiveFrames() << " frames still alive after the last stream ended";

  // A new crowd starts the pump again; the bridge stops under it.
  const uint64_t again = dict_->revision();
  std::vector<OpenStream> cut;
  for (int i = 0; i < 8; ++i) cut.push_back(Open(again, true));
  std::vector<Seen> more;
  Commit(2001, 2500, &more);
  EXPECT_EQ(ReadThrough(cut[0], more.back().revision), more);
  EXPECT_GT(WatchPump::LiveFrames(), 0);
  StopBridge();
  EXPECT_TRUE(Eventually([] { return WatchPump::LiveFrames() == 0; }))
      << WatchPump::LiveFrames() << " frames still alive after the bridge stopped";
  for (OpenStream& open : cut) end(open);  // the client's side of the streams, unread
}

// A subscriber of the dict beside its streams that lets a test hold the registry's notifier inside
// its poke (the notifier then neither fills the pump nor pokes the streams: the test decides what
// the pump's next Fill finds in the log), and that counts the pokes (a poke begun after a commit
// comes after a Fill that read it).
class NotifierGate final : public Subscriber {
 public:
  void Hold() {
    std::lock_guard lock(mu_);
    held_ = true;
    holding_ = false;
  }
  // True once the notifier is stuck in Pump (false after 30 s).
  bool WaitHolding() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return holding_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    held_ = false;
    cv_.notify_all();
  }
  uint64_t pokes() {
    std::lock_guard lock(mu_);
    return pokes_;
  }
  // Waits for two more pokes: the second began after this call, so its Fill read every revision
  // committed before it.
  bool WaitFilled() {
    std::unique_lock lock(mu_);
    const uint64_t target = pokes_ + 2;
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return pokes_ >= target; });
  }

  void Pump() override {
    std::unique_lock lock(mu_);
    ++pokes_;
    holding_ = held_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !held_; });
  }
  void End(const Status&) override {}
  uint64_t SentRevision() const override { return 0; }
  bool IsWatchStream() const override { return false; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  bool holding_ = false;
  uint64_t pokes_ = 0;
};

// The stream's moves between the pump's window and a watcher of its own, forced through a
// registry, service and server of the test's own (so that it reaches the registry's entry and
// metrics): joining inside a frame, leaving between fragments of one revision, and the pump
// lapped by the log. Each checks the exact changes the client gets and, through the metrics'
// counters, that the move it is about happened.
class WatchWindowTest : public testing::DictTestBase {
 protected:
  virtual uint64_t BufferSize() { return uint64_t{64} << 20; }
  virtual StreamLimits Limits() { return StreamLimits{}; }

  void SetUp() override {
    char pattern[] = "/tmp/shmdict-window-unit-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    Options options = CreateOptions(name_);
    options.buffer_size = BufferSize();
    auto created = Dict::Open(options);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    dict_.emplace(std::move(*created));
    auto authorizer = Authorizer::Create({});
    ASSERT_TRUE(authorizer.ok()) << authorizer.status().ToString();
    authorizer_ = std::move(*authorizer);
    registry_ = std::make_unique<DictRegistry>(DictRegistry::Limits{});
    service_ =
        std::make_unique<DictService>(registry_.get(), Limits(), authorizer_.get(), &waiting_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + dir_ + "/s.sock", grpc::InsecureServerCredentials());
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    // No BDP probing and a small lookahead: a client that does not read stops the bridge's
    // writes after a few hundred KiB, not after the megabytes a grown window would take.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
    args.SetMaxReceiveMessageSize(-1);
    stub_ = v1::Dict::NewStub(grpc::CreateCustomChannel("unix:" + dir_ + "/s.sock",
                                                        grpc::InsecureChannelCredentials(), args));
    Result<DictRegistry::Lease> lease = registry_->Acquire(name_);
    ASSERT_TRUE(lease.ok()) << lease.status().ToString();
    entry_ = lease->entry();
    registry_->Subscribe(entry_, &gate_);
  }
  void TearDown() override {
    gate_.Release();
    for (Open& open : streams_) open.context->TryCancel();
    if (entry_) registry_->Unsubscribe(entry_, &gate_);
    if (registry_) registry_->Shutdown(Status(StatusCode::kUnavailable, "the test ended"));
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    streams_.clear();
    stub_.reset();
    server_.reset();
    service_.reset();
    entry_.reset();
    registry_.reset();
    dict_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
    DictTestBase::TearDown();
  }

  DictStats Stats() {
    for (DictStats& dict : registry_->Stats()) {
      if (dict.name == name_) return dict;
    }
    ADD_FAILURE() << "no metrics for " << name_;
    return {};
  }

  // A change as the client applies it (the value's bytes, whatever its type).
  struct Got {
    uint64_t revision;
    std::string key;
    std::string value;
    bool operator==(const Got&) const = default;
  };
  struct Open {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<Stream> stream;
    uint64_t after = 0;
  };

  // A stream after `after`; with `await_start`, answered a progress request (the stream, and the
  // pump, started before the test goes on).
  Open& Watch(uint64_t after, bool await_start) {
    Open& open = streams_.emplace_back();
    open.context = std::make_unique<grpc::ClientContext>();
    open.context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
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
    }
    return open;
  }

  // Reads until every revision up to `last` went out; a snapshot (when `snapshot` is given) is
  // collected there and counts as the changes up to its revision; a change at or below a complete
  // revision, or a revision going back, fails the test.
  static std::vector<Got> ReadThrough(Open& open, uint64_t last,
                                      std::map<std::string, std::string>* snapshot = nullptr,
                                      uint64_t* snapshot_revision = nullptr) {
    std::vector<Got> got;
    uint64_t complete = open.after;
    v1::WatchResponse response;
    bool in_snapshot = false;
    while (complete < last || in_snapshot) {
      if (!open.stream->Read(&response)) {
        ADD_FAILURE() << "the stream ended at revision " << complete << " of " << last;
        break;
      }
      EXPECT_GE(response.revision(), complete) << "the revision field went back";
      if (response.kind() == v1::WatchResponse::KIND_SNAPSHOT) {
        if (snapshot == nullptr) {
          ADD_FAILURE() << "an unexpected snapshot after revision " << complete;
          break;
        }
        if (response.snapshot_begins()) snapshot->clear();
        for (const v1::Entry& entry : response.snapshot_entries()) {
          Value value;
          EXPECT_OK(wire::FromProto(entry.value(), &value));
          (*snapshot)[entry.key()] = std::string(value.data());
        }
        in_snapshot = !response.snapshot_ends();
        if (!in_snapshot) got.clear();  // it replaces what came before
        if (snapshot_revision != nullptr) *snapshot_revision = response.snapshot_revision();
      }
      for (const v1::Change& change : response.changes()) {
        EXPECT_GT(change.revision(), complete) << "a revision already complete came again";
        Value value;
        EXPECT_OK(wire::FromProto(change.value(), &value));
        got.push_back(Got{change.revision(), change.key(), std::string(value.data())});
      }
      complete = response.revision();
    }
    open.after = complete;
    return got;
  }

  static std::vector<Got> After(const std::vector<Got>& all, uint64_t revision) {
    std::vector<Got> tail;
    for (const Got& change : all) {
      if (change.revision > revision) tail.push_back(change);
    }
    return tail;
  }

  // One revision of `count` keys `prefix`0.. with `bytes`-byte values; its changes appended to
  // *expected.
  void Update(const std::string& prefix, int count, size_t bytes, std::vector<Got>* expected) {
    std::vector<std::pair<std::string, Value>> items;
    for (int i = 0; i < count; ++i) {
      items.emplace_back(prefix + std::to_string(i),
                         Value::Bytes(std::string(bytes, static_cast<char>('a' + i % 26))));
    }
    Result<uint64_t> revision = dict_->Update(items);
    ASSERT_OK(revision);
    for (const auto& [key, value] : items) {
      expected->push_back({*revision, key, std::string(value.data())});
    }
  }
  void Set(const std::string& key, int64_t value, std::vector<Got>* expected) {
    Result<uint64_t> revision = dict_->Set(key, Value::Int(value));
    ASSERT_OK(revision);
    expected->push_back({*revision, key, std::string(Value::Int(value).data())});
  }

  std::string dir_;
  std::optional<Dict> dict_;
  WaitingCalls waiting_{1024};
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<DictRegistry> registry_;
  std::unique_ptr<DictService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::Dict::Stub> stub_;
  std::shared_ptr<DictEntry> entry_;
  NotifierGate gate_;
  std::deque<Open> streams_;  // cancelled before the server stops; Watch's references stay valid
};

TEST_F(WatchWindowTest, AStreamJoiningInsideAFrameGetsOnlyTheChangesAfterItsRevision) {
  const uint64_t base = dict_->revision();
  Open& early = Watch(base, true);
  ASSERT_EQ(Stats().watch_joins, 1u);
  // The notifier held while 100 revisions are committed: the pump's next Fill reads them in one
  // batch, one frame from `base` to `base + 100`.
  gate_.Hold();
  ASSERT_TRUE(gate_.WaitHolding());
  std::vector<Got> expected;
  for (int i = 1; i <= 100; ++i) Set("k" + std::to_string(i % 13), i, &expected);
  const uint64_t last = expected.back().revision;
  gate_.Release();
  // The late stream starts at a revision inside that frame, which the window covers: it joins
  // (its first Pump), and sends that frame's changes after its revision only.
  const uint64_t middle = base + 50;
  Open& late = Watch(middle, false);
  EXPECT_EQ(ReadThrough(late, last), After(expected, middle));
  EXPECT_EQ(ReadThrough(early, last), expected);

  // Both in the window and neither left it: the late stream's changes came from the shared frame
  // (re-encoded from the revision it joined at), not from a watcher of its own.
  const DictStats stats = Stats();
  EXPECT_EQ(stats.watch_joins, 2u);
  EXPECT_EQ(stats.watch_leaves, 0u);
  EXPECT_EQ(stats.pump_restarts, 0u);

  // And the frames after it are the shared ones, for both.
  expected.clear();
  Set("after", 1, &expected);
  EXPECT_EQ(ReadThrough(late, expected.back().revision), expected);
  EXPECT_EQ(ReadThrough(early, expected.back().revision), expected);
}

class WatchWindowFragmentsTest : public WatchWindowTest {
 protected:
  // Values of 100 KB, one per message: a revision of 16 of them is 16 fragments (1.6 MB), and
  // the 2 MB window holds one such revision but not two.
  StreamLimits Limits() override {
    StreamLimits limits;
    limits.max_message_bytes = 128 << 10;
    limits.window_bytes = size_t{2} << 20;
    return limits;
  }
  static constexpr size_t kValueBytes = 100 << 10;
};

TEST_F(WatchWindowFragmentsTest, AStreamLeavingTheWindowBetweenFragmentsSendsTheRestOnce) {
  const uint64_t base = dict_->revision();
  Open& open = Watch(base, true);
  ASSERT_EQ(Stats().watch_joins, 1u);
  std::vector<Got> expected;
  Update("first", 16, kValueBytes, &expected);
  // The stream sent the revision's first fragment from the window; the client reads nothing more
  // for now, so gRPC's flow control stops the stream a few fragments further.
  v1::WatchResponse response;
  ASSERT_TRUE(open.stream->Read(&response));
  ASSERT_EQ(response.kind(), v1::WatchResponse::KIND_CHANGES);
  ASSERT_TRUE(response.more_fragments());
  ASSERT_EQ(response.changes_size(), 1);
  EXPECT_EQ(response.changes(0).key(), "first0");
  // A second revision as large: the pump's window drops the first one's fragments the stream has
  // not taken yet.
  Update("second", 16, kValueBytes, &expected);
  ASSERT_TRUE(gate_.WaitFilled());

  // Reading on, the stream finds its next fragment gone: it leaves the window in the middle of
  // the first revision, reads the rest of it on its own (without the fragments it sent) and
  // rejoins the window once it caught up.
  std::vector<Got> got;
  got.push_back(Got{response.changes(0).revision(), response.changes(0).key(), [&] {
                      Value value;
                      EXPECT_OK(wire::FromProto(response.changes(0).value(), &value));
                      return std::string(value.data());
                    }()});
  for (Got& change : ReadThrough(open, expected.back().revision)) got.push_back(std::move(change));
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].revision, expected[i].revision) << i;
    EXPECT_EQ(got[i].key, expected[i].key) << i;
    EXPECT_TRUE(got[i].value == expected[i].value) << "value of " << expected[i].key;
  }
  EXPECT_EQ(Stats().watch_leaves, 1u);
  EXPECT_TRUE(Eventually([&] { return Stats().watch_joins == 2; }))
      << Stats().watch_joins << " joins: the stream did not rejoin the window";

  // Back in the window: the next change comes once.
  expected.clear();
  Set("after", 1, &expected);
  EXPECT_EQ(ReadThrough(open, expected.back().revision), expected);
  EXPECT_EQ(Stats().pump_restarts, 0u);
}

class WatchWindowLappedTest : public WatchWindowTest {
 protected:
  uint64_t BufferSize() override { return 64 << 10; }  // the smallest log
};

TEST_F(WatchWindowLappedTest, APumpLappedByTheLogRestartsAndItsStreamsResyncOnce) {
  const uint64_t base = dict_->revision();
  Open& open = Watch(base, true);
  ASSERT_EQ(Stats().watch_joins, 1u);
  // The notifier held while the writer laps the log many times over: the pump's next Fill finds
  // its revision gone.
  gate_.Hold();
  ASSERT_TRUE(gate_.WaitHolding());
  std::vector<Got> written;
  for (int i = 1; i <= 20000; ++i) Set("k" + std::to_string(i % 41), i, &written);
  const uint64_t last = written.back().revision;
  gate_.Release();

  // The stream, behind the restarted window, reads on its own: its own watcher was lapped too,
  // so it resyncs from the dict's latest snapshot, then the changes after it, each once.
  std::map<std::string, std::string> snapshot;
  uint64_t snapshot_revision = 0;
  std::vector<Got> got = ReadThrough(open, last, &snapshot, &snapshot_revision);
  ASSERT_GT(snapshot_revision, base) << "no snapshot";
  std::map<std::string, std::string> contents;
  for (const Got& change : written) {
    if (change.revision <= snapshot_revision) contents[change.key] = change.value;
  }
  EXPECT_EQ(snapshot, contents);
  EXPECT_EQ(got, After(written, snapshot_revision));
  DictStats stats = Stats();
  EXPECT_EQ(stats.pump_restarts, 1u);
  EXPECT_EQ(stats.watch_leaves, 1u);
  EXPECT_TRUE(Eventually([&] { return Stats().watch_joins == 2; }))
      << Stats().watch_joins << " joins: the stream did not rejoin the restarted window";

  // From the restarted window: each change once.
  std::vector<Got> expected;
  for (int i = 0; i < 5; ++i) Set("after" + std::to_string(i), i, &expected);
  EXPECT_EQ(ReadThrough(open, expected.back().revision), expected);
  EXPECT_EQ(Stats().pump_restarts, 1u);
}

}  // namespace
}  // namespace shmdict::bridge
