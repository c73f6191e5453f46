// The bridge end to end: real shmdict-bridge processes, RemoteDict clients, local writers.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/remote_dict.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "shmdict/v1/wire.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;

class BridgeTest : public DictTestBase {
 protected:
  void SetUp() override {
    auto dict = Dict::Open(CreateOptions(name_));
    ASSERT_OK(dict);
    local_.emplace(std::move(*dict));
    ASSERT_TRUE(bridge_.Start());
  }

  RemoteOptions Remote(bool mirror = true) {
    RemoteOptions options{.address = bridge_.address(), .dict = name_, .mirror = mirror};
    options.initial_backoff = 50ms;
    options.max_backoff = 500ms;
    return options;
  }

  std::unique_ptr<v1::Dict::Stub> RawStub() {
    grpc::ChannelArguments arguments;
    arguments.SetMaxSendMessageSize(-1);
    arguments.SetMaxReceiveMessageSize(-1);
    return v1::Dict::NewStub(grpc::CreateCustomChannel(
        bridge_.address(), grpc::InsecureChannelCredentials(), arguments));
  }

  static std::unique_ptr<grpc::ClientContext> Context() {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + 10s);
    return context;
  }

  // Deletes the dict (its creator's handle, local_, unlinks it) and creates it again, empty.
  // Not atomic: the bridge (when running) is stopped meanwhile, so that it never looks in between
  // and finds no dict (AMirrorWaitsForADictDeletedAndSoonCreatedAgain is that case).
  void ReplaceDict() {
    const bool pause = bridge_.running();
    if (pause) {
      ASSERT_EQ(kill(bridge_.process()->pid(), SIGSTOP), 0);
    }
    local_.reset();
    auto again = Dict::Open(CreateOptions(name_));
    if (pause) {
      ASSERT_EQ(kill(bridge_.process()->pid(), SIGCONT), 0);
    }
    ASSERT_OK(again);
    local_.emplace(std::move(*again));
  }
  // Ten writes through `r`, then ReplaceDict: r's last commit (10) is a revision of the old dict.
  void CommitTenThenReplaceDict(RemoteDict& r) {
    for (int i = 0; i < 10; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
    ASSERT_EQ(r.last_commit_revision(), 10u);
    ASSERT_NO_FATAL_FAILURE(ReplaceDict());
  }

  std::optional<Dict> local_;
  BridgeProcess bridge_;
};

TEST_F(BridgeTest, EveryOperationThroughTheBridgeIsSeenLocallyAndBack) {
  for (bool mirror : {true, false}) {
    SCOPED_TRACE(mirror ? "mirror" : "no mirror");
    ASSERT_OK(local_->Clear());
    auto remote = RemoteDict::Open(Remote(mirror));
    ASSERT_OK(remote);
    RemoteDict& r = **remote;

    auto set = r.Set("a", Value::Int(1));
    ASSERT_OK(set);
    EXPECT_EQ(*set, local_->published_revision());
    EXPECT_EQ(*local_->Get("a"), std::optional<Value>(Value::Int(1)));
    // The write returned once the mirror (if any) held it: read-your-writes.
    EXPECT_EQ(*r.Get("a"), std::optional<Value>(Value::Int(1)));
    EXPECT_GE(r.revision(), *set);

    ASSERT_OK(r.Update({{"b", Value::Str("two")}, {"c", Value::Double(3.5)}}));
    EXPECT_EQ(*local_->Get("b"), std::optional<Value>(Value::Str("two")));
    auto applied = r.Apply({Change{.op = ChangeOp::kErase, .key = "b"},
                            Change{.op = ChangeOp::kSet, .key = "d", .value = Value::Bool(true)},
                            Change{.op = ChangeOp::kErase, .key = "never-there"}});
    ASSERT_OK(applied);
    EXPECT_FALSE(*local_->Contains("b"));
    EXPECT_EQ(*r.Get("d"), std::optional<Value>(Value::Bool(true)));

    EXPECT_EQ(*r.Increment("n", 5), 5);
    EXPECT_EQ(*r.Increment("n", -2), 3);
    EXPECT_TRUE(*r.CompareAndSet("n", Value::Int(3), Value::Int(10)));
    EXPECT_FALSE(*r.CompareAndSet("n", Value::Int(3), Value::Int(11)));
    EXPECT_TRUE(*r.CompareAndSet("fresh", std::nullopt, Value::Str("x")));
    EXPECT_EQ(*local_->Get("n"), std::optional<Value>(Value::Int(10)));
    EXPECT_EQ(*r.SetDefault("n", Value::Int(0)), Value::Int(10));
    EXPECT_EQ(*r.SetDefault("m", Value::Int(7)), Value::Int(7));
    EXPECT_EQ(*r.Pop("m"), std::optional<Value>(Value::Int(7)));
    EXPECT_EQ(*r.Pop("m"), std::optional<Value>());
    EXPECT_TRUE(*r.Erase("fresh"));
    EXPECT_FALSE(*r.Erase("fresh"));

    // Local writes reach the remote side.
    ASSERT_OK(local_->Set("from-local", Value::Str("hello")));
    const uint64_t local_revision = local_->published_revision();
    if (mirror) {
      ASSERT_OK(r.WaitForChange(local_revision - 1, 10s));
    }
    EXPECT_EQ(*r.Get("from-local"), std::optional<Value>(Value::Str("hello")));

    auto items = r.Items();
    ASSERT_OK(items);
    std::map<std::string, Value> remote_items(items->begin(), items->end());
    EXPECT_EQ(remote_items, local_->Export());
    EXPECT_EQ(*r.Size(), *local_->Size());

    auto popped = r.PopItem();
    ASSERT_OK(popped);
    ASSERT_TRUE(popped->has_value());
    EXPECT_FALSE(*local_->Contains((*popped)->first));
    ASSERT_OK(r.Clear());
    EXPECT_EQ(*local_->Size(), 0u);
    EXPECT_EQ(r.last_commit_revision(), local_->published_revision());
  }
}

TEST_F(BridgeTest, GetWithMinRevisionWaitsForTheRevision) {
  auto stub = RawStub();
  const uint64_t now = local_->published_revision();
  std::thread writer([&] {
    std::this_thread::sleep_for(100ms);
    local_->Set("late", Value::Str("arrived")).status().IgnoreError();
  });
  v1::GetRequest request;
  request.set_dict(name_);
  request.set_key("late");
  request.set_min_revision(now + 1);
  v1::GetResponse response;
  grpc::Status status = stub->Get(Context().get(), request, &response);
  writer.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.found());
  EXPECT_EQ(response.value().data(), "arrived");
  EXPECT_GE(response.revision(), now + 1);

  request.set_min_revision(now + 1000);
  auto context = Context();
  context->set_deadline(std::chrono::system_clock::now() + 200ms);
  status = stub->Get(context.get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(BridgeTest, BadInputGetsTheRightCodeChangesNothingAndTheBridgeServesOn) {
  // Spawned before this process has gRPC threads (a spawn from a threaded process under TSan is
  // best avoided): a bridge whose message limit is 1 MiB.
  BridgeProcess small({}, {"--max-message-bytes", "1048576"});
  ASSERT_TRUE(small.Start());
  ASSERT_OK(local_->Set("text", Value::Str("not a number")));
  const std::map<std::string, Value> before = local_->Export();
  const uint64_t revision = local_->published_revision();
  auto stub = RawStub();

  v1::SetRequest set;
  v1::WriteResponse written;
  set.set_dict("no-such-dict-" + std::to_string(getpid()));
  set.set_key("k");
  set.mutable_value()->set_type(1);
  grpc::Status status = stub->Set(Context().get(), set, &written);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(status.error_message().find(set.dict()), std::string::npos) << status.error_message();
  EXPECT_THAT(LocalCatalog().Inspect(set.dict()), StatusIs(StatusCode::kNotFound))
      << "the bridge must never create a dict";

  set.set_dict("bad/name");
  EXPECT_EQ(stub->Set(Context().get(), set, &written).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  set.set_dict(name_);
  set.set_key(std::string(kMaxKeyBytes + 1, 'k'));
  status = stub->Set(Context().get(), set, &written);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find(name_), std::string::npos) << status.error_message();

  set.set_key("k");
  set.mutable_value()->set_type(77);  // neither built-in nor an application tag
  EXPECT_EQ(stub->Set(Context().get(), set, &written).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // A value over the bridge's message limit (1 MiB for this test's second bridge).
  grpc::ChannelArguments arguments;
  arguments.SetMaxSendMessageSize(-1);
  auto small_stub = v1::Dict::NewStub(
      grpc::CreateCustomChannel(small.address(), grpc::InsecureChannelCredentials(), arguments));
  set.mutable_value()->set_type(0);
  set.mutable_value()->set_data(std::string(size_t{3} << 20, 'v'));
  EXPECT_EQ(small_stub->Set(Context().get(), set, &written).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  v1::IncrementRequest increment;
  increment.set_dict(name_);
  increment.set_key("text");
  increment.set_delta(1);
  v1::IncrementResponse incremented;
  status = stub->Increment(Context().get(), increment, &incremented);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();

  v1::BatchRequest batch;
  batch.set_dict(name_);
  batch.add_mutations()->set_op(v1::OP_SET);
  batch.mutable_mutations(0)->set_key("half");
  batch.add_mutations()->set_op(v1::OP_UNSPECIFIED);
  EXPECT_EQ(stub->Batch(Context().get(), batch, &written).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // A Watch whose first message is not `start`.
  {
    auto context = Context();
    auto stream = stub->Watch(context.get());
    v1::WatchRequest progress;
    progress.mutable_progress();
    stream->Write(progress);
    stream->WritesDone();
    v1::WatchResponse response;
    while (stream->Read(&response)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  // Garbage bytes on the bridge's socket: the connection is dropped, nothing else happens.
  for (const std::string& garbage :
       {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), std::string(4096, '\xff'),
        std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string(64, '\0')}) {
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", bridge_.socket_path().c_str());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
    char buffer[256];
    timeval timeout{.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    // Until the bridge closes the connection (or 10 s: it may also just wait for more bytes).
    const Deadline give_up = DeadlineIn(std::chrono::seconds(10));
    while (Clock::now() < give_up && read(fd, buffer, sizeof(buffer)) > 0) {
    }
    close(fd);
  }

  EXPECT_EQ(local_->Export(), before);
  EXPECT_EQ(local_->published_revision(), revision);
  EXPECT_TRUE(bridge_.running());
  v1::GetRequest get;
  get.set_dict(name_);
  get.set_key("text");
  v1::GetResponse got;
  status = stub->Get(Context().get(), get, &got);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got.value().data(), "not a number");
}

TEST_F(BridgeTest, ASecondBridgeCannotStealTheSocketOrThePort) {
  WorkerProcess second(BridgeProgram(), {"--listen", bridge_.address()});
  ExitInfo exit = second.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.exited && exit.exit_code == 2) << exit.ToString();
  // The first still serves on its socket.
  auto remote = RemoteDict::Open(Remote(false));
  ASSERT_OK(remote);
  ASSERT_OK((*remote)->Set("still", Value::Int(1)));

  BridgeProcess tcp({"127.0.0.1:0"});
  ASSERT_TRUE(tcp.Start());
  WorkerProcess stealer(BridgeProgram(), {"--listen", tcp.address()});
  exit = stealer.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.exited && exit.exit_code == 2) << exit.ToString() << stealer.output();
  RemoteOptions options = Remote(false);
  options.address = tcp.address();
  auto over_tcp = RemoteDict::Open(options);
  ASSERT_OK(over_tcp);
  EXPECT_EQ(*(*over_tcp)->Get("still"), std::optional<Value>(Value::Int(1)));
}

TEST_F(BridgeTest, TwoBridgesServeOneDict) {
  BridgeProcess other;
  ASSERT_TRUE(other.Start());
  auto through_first = RemoteDict::Open(Remote());
  RemoteOptions options = Remote();
  options.address = other.address();
  auto through_second = RemoteDict::Open(options);
  ASSERT_OK(through_first);
  ASSERT_OK(through_second);
  auto written = (*through_first)->Set("shared", Value::Str("yes"));
  ASSERT_OK(written);
  ASSERT_OK((*through_second)->WaitForChange(*written - 1, 10s));
  EXPECT_EQ(*(*through_second)->Get("shared"), std::optional<Value>(Value::Str("yes")));
}

TEST_F(BridgeTest, EveryWriteAcknowledgedBeforeABridgeKillIsInTheDict) {
  WorkerProcess writer(RemoteWorkerProgram(),
                       {"remote-write", bridge_.address(), name_, "acked", "3000"});
  std::map<std::string, uint64_t> acked;
  auto read_acks = [&](Deadline until) {
    std::string line;
    while (writer.ReadLine(&line, until) == LineStatus::kLine) {
      if (line.rfind("acked ", 0) == 0) {
        const size_t space = line.rfind(' ');
        acked[line.substr(6, space - 6)] = std::stoull(line.substr(space + 1));
      }
      if (line == "done" || line.rfind("error", 0) == 0 || Clock::now() > until) break;
      if (acked.size() % 500 == 250) return;
    }
  };
  for (int kill = 0; kill < 3; ++kill) {
    read_acks(DeadlineIn(kWorkerTimeout));
    bridge_.Kill();
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(bridge_.Start());
  }
  ExitInfo exit = writer.Wait(DeadlineIn(kWorkerTimeout));
  for (const std::string& line : writer.TakeLines()) {
    if (line.rfind("acked ", 0) == 0) {
      const size_t space = line.rfind(' ');
      acked[line.substr(6, space - 6)] = std::stoull(line.substr(space + 1));
    }
  }
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << writer.output();
  EXPECT_EQ(acked.size(), 3000u);
  for (const auto& [key, revision] : acked) {
    auto value = local_->Get(key);
    ASSERT_TRUE(value.ok() && value->has_value())
        << key << " was acknowledged at revision " << revision << " but is missing";
    EXPECT_LE(revision, local_->published_revision());
  }
}

TEST_F(BridgeTest, AClientWithoutDevShmOrNetworkReachesTheDictThroughTheSocket) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for unshare -m -n";
  // The client's world: a mount namespace with an empty /dev/shm and the bridge's socket
  // directory bind-mounted at /mnt, and a network namespace with nothing in it.
  const std::string socket_dir = bridge_.socket_path().substr(0, bridge_.socket_path().rfind('/'));
  const std::string script = "mount -t tmpfs none /dev/shm && mount --bind '" + socket_dir +
                             "' /mnt && exec '" + RemoteWorkerProgram() +
                             "' pingpong unix:/mnt/bridge.sock '" + name_ + "' 50";
  WorkerProcess client("/usr/bin/unshare",
                       {"-m", "-n", "--propagation", "private", "sh", "-c", script});
  auto isolated = client.AwaitLine("isolated", DeadlineIn(kWorkerTimeout));
  ASSERT_TRUE(isolated.has_value()) << client.output();
  EXPECT_EQ(*isolated, "isolated dicts=0") << "the client must not see this host's dicts";
  for (int i = 0; i < 50; ++i) {
    const std::string wanted = "remote-" + std::to_string(i);
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    while (!*local_->Contains(wanted)) {
      ASSERT_LT(Clock::now(), deadline) << wanted << " never arrived: " << client.output();
      local_->WaitForChange(local_->published_revision(), 100ms).status().IgnoreError();
    }
    ASSERT_OK(local_->Set("local-" + std::to_string(i), Value::Int(i)));
  }
  ExitInfo exit = client.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << client.output();
}

TEST_F(BridgeTest, AStalledSubscriberIsResyncedWhileAFastOneKeepsUp) {
  // A small log, so that the stalled stream is lapped quickly.
  const std::string name = NewDictName();
  Options small = CreateOptions(name);
  small.buffer_size = 64 * 1024;
  auto dict = Dict::Open(small);
  ASSERT_OK(dict);
  auto stub = RawStub();
  auto open_stream = [&](grpc::ClientContext* context) {
    auto stream = stub->Watch(context);
    v1::WatchRequest start;
    start.mutable_start()->set_dict(name);
    start.mutable_start()->set_after_revision(0);
    stream->Write(start);
    return stream;
  };
  grpc::ClientContext slow_context;
  auto slow = open_stream(&slow_context);
  RemoteOptions options = Remote();
  options.dict = name;
  auto fast = RemoteDict::Open(options);
  ASSERT_OK(fast);

  std::string big(512, 'x');
  const int writes = Scaled(20000);
  for (int i = 0; i < writes; ++i)
    ASSERT_OK(dict->Set("k" + std::to_string(i % 500), Value::Str(big + std::to_string(i))));
  const uint64_t last = dict->published_revision();
  ASSERT_OK((*fast)->WaitForChange(last - 1, 60s));
  auto fast_items = (*fast)->Items();
  ASSERT_OK(fast_items);
  const std::map<std::string, Value> fast_state(fast_items->begin(), fast_items->end());
  EXPECT_EQ(fast_state, dict->Export());

  // Now the slow one reads: it must have been resynced (a snapshot), and end at the same state.
  std::map<std::string, Value> state;
  std::map<std::string, Value> staging;
  bool saw_snapshot_after_start = false;
  uint64_t revision = 0;
  v1::WatchResponse message;
  while (revision < last && slow->Read(&message)) {
    if (message.kind() == v1::WatchResponse::KIND_SNAPSHOT) {
      if (message.snapshot_begins()) staging.clear();
      for (const auto& entry : message.snapshot_entries()) {
        staging[entry.key()] =
            Value(static_cast<ValueType>(entry.value().type()), entry.value().data());
      }
      if (message.snapshot_ends()) {
        state.swap(staging);
        if (message.snapshot_revision() > 0) saw_snapshot_after_start = true;
      }
    }
    for (const auto& change : message.changes()) {
      if (change.op() == v1::OP_SET) {
        state[change.key()] =
            Value(static_cast<ValueType>(change.value().type()), change.value().data());
      } else if (change.op() == v1::OP_DELETE) {
        state.erase(change.key());
      } else {
        state.clear();
      }
    }
    revision = std::max(revision, message.revision());
  }
  EXPECT_TRUE(saw_snapshot_after_start) << "the stalled stream was never resynced";
  EXPECT_EQ(revision, last);
  EXPECT_EQ(state, dict->Export());
  slow_context.TryCancel();
  slow->Finish().IgnoreError();
}

TEST_F(BridgeTest, SigtermEndsStreamsWithUnavailableAndTheClientResumesOnANewBridge) {
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  auto watcher = (*remote)->Watch(local_->published_revision());
  ASSERT_OK(watcher);
  ExitInfo exit = bridge_.Terminate();
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString();
  EXPECT_FALSE((*remote)->mirror_connected());
  ASSERT_OK(local_->Set("while-down", Value::Int(1)));
  ASSERT_TRUE(bridge_.Start());
  ASSERT_OK((*remote)->WaitForChange(local_->published_revision() - 1, 30s));
  EXPECT_EQ(*(*remote)->Get("while-down"), std::optional<Value>(Value::Int(1)));
  auto batch = (*watcher)->Next(WatchLimits{}, 30s);
  ASSERT_OK(batch);
  ASSERT_EQ(batch->changes.size(), 1u);
  EXPECT_EQ(batch->changes[0].key, "while-down");
}

TEST_F(BridgeTest, ADictDeletedAndCreatedAgainIsServedAnew) {
  auto remote = RemoteDict::Open(Remote(false));
  ASSERT_OK(remote);
  ASSERT_OK((*remote)->Set("old", Value::Int(1)));
  local_.reset();  // the creator's handle unlinks it
  auto again = Dict::Open(CreateOptions(name_));
  ASSERT_OK(again);
  ASSERT_OK(again->Set("new", Value::Int(2)));
  local_.emplace(std::move(*again));
  auto old_value = (*remote)->Get("old");
  ASSERT_OK(old_value);
  EXPECT_FALSE(old_value->has_value());
  EXPECT_EQ(*(*remote)->Get("new"), std::optional<Value>(Value::Int(2)));
}

// The keys a mirror holds, sorted.
std::vector<std::string> SortedKeys(RemoteDict& remote) {
  auto keys = remote.Keys();
  EXPECT_OK(keys);
  if (!keys.ok()) return {};
  std::sort(keys->begin(), keys->end());
  return *keys;
}

TEST_F(BridgeTest, AMirrorStartsOverWhenItsDictIsDeletedAndCreatedAgain) {
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  // More revisions than the new dict will reach: a mirror that kept the old dict's revision would
  // count as holding every write to the new one.
  for (int i = 0; i < 10; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
  ASSERT_EQ(r.revision(), 10u);
  const uint64_t before = r.revision();

  ASSERT_NO_FATAL_FAILURE(ReplaceDict());

  // The first write makes the bridge notice the new dict and end the mirror's stream.
  std::vector<std::string> written;
  for (int i = 0; i < 3; ++i) {
    const std::string key = "new-" + std::to_string(i);
    auto set = r.Set(key, Value::Int(100 + i));
    ASSERT_OK(set);
    EXPECT_EQ(*set, static_cast<uint64_t>(i + 1));
    EXPECT_EQ(r.last_commit_revision(), *set);
    written.push_back(key);
    // The write returned once the mirror held it, and the mirror holds the new dict only.
    EXPECT_EQ(*r.Get(key), std::optional<Value>(Value::Int(100 + i)));
    EXPECT_EQ(r.revision(), *set);
    EXPECT_EQ(SortedKeys(r), written);
  }
  EXPECT_FALSE(*r.Contains("old-0"));

  // A local write to the new dict reaches the mirror at the new dict's revision.
  ASSERT_OK(local_->Set("new-local", Value::Str("here")));
  auto changed = r.WaitForChange(3, 10s);
  ASSERT_OK(changed);
  EXPECT_EQ(*changed, local_->published_revision());
  EXPECT_LT(*changed, before);
  written.push_back("new-local");  // sorts last
  EXPECT_EQ(SortedKeys(r), written);
  EXPECT_TRUE(r.mirror_connected());
}

// A bridge that answers Set and Delete as told, naming the incarnation it is told, and holds
// the call for key "slow" until released: the order of the answers is the test's, not timing's.
class ScriptedBridge final : public v1::Dict::Service {
 public:
  struct Answer {
    uint64_t revision;
    uint64_t incarnation;
  };
  void Script(const std::string& key, Answer answer) {
    std::lock_guard lock(mu_);
    answers_[key] = answer;
  }
  void WaitUntilSlowArrived() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return slow_arrived_; });
  }
  void ReleaseSlow() {
    std::lock_guard lock(mu_);
    slow_released_ = true;
    cv_.notify_all();
  }

  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::StatusResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status Set(grpc::ServerContext* context, const v1::SetRequest* request,
                   v1::WriteResponse* response) override {
    response->set_revision(Reply(context, request->key()));
    return grpc::Status::OK;
  }
  // A Get with a min_revision is held until ReleaseParked, then times out as the bridge's
  // --max-wait-ms does; one without finds the key at revision 0 of the new dict.
  grpc::Status Get(grpc::ServerContext*, const v1::GetRequest* request,
                   v1::GetResponse* response) override {
    std::unique_lock lock(mu_);
    if (request->min_revision() != 0) {
      ++parked_;
      cv_.notify_all();
      const uint64_t turn = parked_;
      cv_.wait(lock, [&] { return released_ >= turn; });
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "min_revision not reached");
    }
    response->set_found(true);
    wire::ToProto(Value::Int(5), response->mutable_value());
    return grpc::Status::OK;
  }
  // "Which dict is this": the new one (incarnation 8), at revision 0.
  grpc::Status Watch(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::WatchResponse, v1::WatchRequest>* stream) override {
    {
      std::lock_guard lock(mu_);
      ++watches_;
    }
    v1::WatchRequest request;
    if (!stream->Read(&request)) return grpc::Status::OK;
    context->AddInitialMetadata(std::string(wire::kIncarnationMetadata), "8");
    v1::WatchResponse message;
    message.set_kind(v1::WatchResponse::KIND_PROGRESS);
    message.set_revision(0);
    stream->Write(message);
    while (stream->Read(&request)) {
    }
    return grpc::Status::OK;
  }
  void WaitUntilParked(uint64_t count) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return parked_ >= count; });
  }
  // Lets the parked Gets time out, the first one first, when it was parked first.
  void ReleaseParked(uint64_t count) {
    std::lock_guard lock(mu_);
    released_ = count;
    cv_.notify_all();
  }
  int watches() {
    std::lock_guard lock(mu_);
    return watches_;
  }

  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override {
    response->set_revision(Reply(context, request->key()));
    response->set_existed(false);
    return grpc::Status::OK;
  }

 private:
  uint64_t Reply(grpc::ServerContext* context, const std::string& key) {
    std::unique_lock lock(mu_);
    if (key == "slow") {
      slow_arrived_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return slow_released_; });
    }
    const auto& answer = answers_.at(key);
    context->AddTrailingMetadata(std::string(wire::kIncarnationMetadata),
                                 std::to_string(answer.incarnation));
    return answer.revision;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, ScriptedBridge::Answer> answers_;
  bool slow_arrived_ = false;
  bool slow_released_ = false;
  uint64_t parked_ = 0;
  uint64_t released_ = 0;
  int watches_ = 0;
};

// A scripted bridge served on a loopback port, and the options of a RemoteDict without mirror
// that reaches it (the server stops with the object).
struct LoopbackServer {
  explicit LoopbackServer(grpc::Service* service) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
  }
  RemoteOptions Options() const {
    return RemoteOptions{
        .address = "127.0.0.1:" + std::to_string(port), .dict = "d", .mirror = false};
  }
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// A write's answer from the old dict (incarnation 7, revision 100) that arrives after another
// write reached the new dict (8) neither moves the handle back to the old dict's revisions nor
// makes it drop its later writes to the new one; a late Delete answer from the old dict does not
// push revision() up either.
TEST(ScriptedBridgeTest, ALateAnswerFromTheOldDictNeverMovesTheHandleBack) {
  for (bool erase : {false, true}) {
    SCOPED_TRACE(erase ? "late Delete" : "late Set");
    ScriptedBridge service;
    service.Script("slow", {100, 7});
    service.Script("new-1", {1, 8});
    service.Script("new-2", {2, 8});
    LoopbackServer server(&service);
    ASSERT_NE(server.server, nullptr);
    auto remote = RemoteDict::Open(server.Options());
    ASSERT_OK(remote);
    RemoteDict& r = **remote;

    auto late = std::async(std::launch::async, [&] {
      return erase ? r.Erase("slow").status() : r.Set("slow", Value::Int(0)).status();
    });
    service.WaitUntilSlowArrived();
    ASSERT_OK(r.Set("new-1", Value::Int(1)));
    EXPECT_EQ(r.last_commit_revision(), 1u);
    service.ReleaseSlow();
    ASSERT_OK(late.get());
    EXPECT_EQ(r.last_commit_revision(), 1u);
    EXPECT_EQ(r.revision(), 1u);
    ASSERT_OK(r.Set("new-2", Value::Int(2)));
    EXPECT_EQ(r.last_commit_revision(), 2u);
    EXPECT_EQ(r.revision(), 2u);
    remote->reset();
    server.server->Shutdown();
  }
}

// Two Gets wait for revision 10 of the old dict (7); the first to time out asks which dict the
// name holds (8), starts the commits over and reads again. The second, timing out after that,
// reads again at once, without asking (it used to ask, hear 8 again and fail).
TEST(ScriptedBridgeTest, GetsThatTimedOutOnTheOldDictReadTheNewOneAskingOnce) {
  ScriptedBridge service;
  service.Script("old", {10, 7});
  LoopbackServer server(&service);
  ASSERT_NE(server.server, nullptr);
  auto remote = RemoteDict::Open(server.Options());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  ASSERT_OK(r.Set("old", Value::Int(0)));
  ASSERT_EQ(r.last_commit_revision(), 10u);

  auto first = std::async(std::launch::async, [&] { return r.Get("k"); });
  service.WaitUntilParked(1);
  auto second = std::async(std::launch::async, [&] { return r.Get("k"); });
  service.WaitUntilParked(2);
  service.ReleaseParked(1);
  Result<std::optional<Value>> got = first.get();
  ASSERT_OK(got);
  EXPECT_EQ(*got, std::optional<Value>(Value::Int(5)));
  EXPECT_EQ(r.last_commit_revision(), 0u);
  service.ReleaseParked(2);
  got = second.get();
  ASSERT_OK(got);
  EXPECT_EQ(*got, std::optional<Value>(Value::Int(5)));
  EXPECT_EQ(service.watches(), 1);
  remote->reset();
  server.server->Shutdown();
}

// A bridge whose first Watch stream ends with `first_end` (ABORTED although the dict, 7, was not
// replaced, as the bridge does when it fails to open its own handle); the next stream serves
// `then_incarnation`.
class AbortOnceBridge final : public v1::Dict::Service {
 public:
  AbortOnceBridge(grpc::StatusCode first_end, std::string then_incarnation)
      : first_end_(first_end), then_incarnation_(std::move(then_incarnation)) {}
  grpc::Status Status(grpc::ServerContext*, const v1::StatusRequest*,
                      v1::StatusResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status Watch(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::WatchResponse, v1::WatchRequest>* stream) override {
    const int call = ++watches_;
    v1::WatchRequest request;
    if (!stream->Read(&request)) return grpc::Status::OK;
    context->AddInitialMetadata(std::string(wire::kIncarnationMetadata),
                                call == 1 ? "7" : then_incarnation_);
    v1::WatchResponse message;
    message.set_kind(v1::WatchResponse::KIND_PROGRESS);
    message.set_revision(call == 1 ? 0 : 1);
    stream->Write(message);
    if (call == 1) return grpc::Status(first_end_, "dict 'd' was deleted or replaced");
    while (stream->Read(&request)) {
    }
    return grpc::Status::OK;
  }
  std::atomic<int> watches_{0};

 private:
  const grpc::StatusCode first_end_;
  const std::string then_incarnation_;
};

TEST(ScriptedBridgeTest, AWatcherGoesOnAfterAnAbortedThatTheSameDictFollows) {
  AbortOnceBridge service(grpc::StatusCode::ABORTED, "7");
  LoopbackServer server(&service);
  ASSERT_NE(server.server, nullptr);
  auto remote = RemoteDict::Open(server.Options());
  ASSERT_OK(remote);
  auto watcher = (*remote)->Watch(0);
  ASSERT_OK(watcher);
  Result<ChangeBatch> batch = (*watcher)->Next(WatchLimits{}, 30s);
  ASSERT_OK(batch);
  EXPECT_EQ(batch->revision, 1u);
  EXPECT_EQ(service.watches_.load(), 2);
  watcher->reset();
  remote->reset();
  server.server->Shutdown();
}

// A caller's watcher that was given no revision yet still ends when the stream it resumes on
// (the first one ended: a bridge restart) names another dict: it was watching the old one.
TEST(ScriptedBridgeTest, AWatcherFromRevisionZeroEndsWhenItResumesOnAnotherDict) {
  AbortOnceBridge service(grpc::StatusCode::UNAVAILABLE, "8");
  LoopbackServer server(&service);
  ASSERT_NE(server.server, nullptr);
  RemoteOptions options = server.Options();
  options.initial_backoff = 10ms;
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  auto watcher = (*remote)->Watch(0);
  ASSERT_OK(watcher);
  Result<ChangeBatch> batch = (*watcher)->Next(WatchLimits{}, 30s);
  ASSERT_FALSE(batch.ok()) << "a revision of another dict: " << batch->revision;
  EXPECT_EQ(batch.status().code(), StatusCode::kAborted) << batch.status().ToString();
  EXPECT_NE(batch.status().message().find("(incarnation 7 -> 8)"), std::string::npos)
      << batch.status().ToString();
  watcher->reset();
  remote->reset();
  server.server->Shutdown();
}

// Deleting a dict and creating it again leaves a moment with no dict under the name; a mirror
// whose resubscription lands in it finds none (NOT_FOUND), and must not stop for good for that.
TEST_F(BridgeTest, AMirrorWaitsForADictDeletedAndSoonCreatedAgain) {
  RemoteOptions options = Remote();
  options.initial_backoff = 2s;  // the tries at NOT_FOUND last this long each: room to re-create
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  ASSERT_OK(r.Set("old", Value::Int(1)));

  local_.reset();  // unlinks it; nothing under the name until created again below
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  // Disconnected: its stream ended (ABORTED) and the resubscription found no dict.
  while (r.mirror_connected()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the mirror never noticed";
    std::this_thread::sleep_for(10ms);  // polling the condition, with the deadline above
  }
  auto again = Dict::Open(CreateOptions(name_));
  ASSERT_OK(again);
  local_.emplace(std::move(*again));
  ASSERT_OK(local_->Set("new", Value::Int(2)));

  Result<std::optional<Value>> got = std::optional<Value>();
  while (!(got = r.Get("new")).ok() || !got->has_value()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline + 30s)
        << "the mirror stopped: " << got.status().ToString();
    std::this_thread::sleep_for(10ms);  // polling the condition, with the deadline above
  }
  EXPECT_EQ(*got, std::optional<Value>(Value::Int(2)));
  EXPECT_FALSE(*r.Contains("old"));
  EXPECT_TRUE(r.mirror_connected());
}

TEST_F(BridgeTest, AMirrorStartsOverWhenItsDictWasReplacedWhileTheBridgeWasDown) {
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  for (int i = 0; i < 10; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
  const uint64_t old_revision = r.revision();
  ASSERT_EQ(old_revision, 10u);

  bridge_.Kill();
  local_.reset();
  auto again = Dict::Open(CreateOptions(name_));
  ASSERT_OK(again);
  local_.emplace(std::move(*again));
  const std::vector<std::pair<std::string, Value>> items = {{"new-a", Value::Int(1)},
                                                            {"new-b", Value::Int(2)}};
  ASSERT_OK(local_->Update(items));
  ASSERT_OK(local_->Set("new-c", Value::Int(3)));
  ASSERT_TRUE(bridge_.Start());

  // The mirror resumes after revision 10, which the new dict has not reached: the bridge names
  // the new dict's incarnation, and the mirror watches it from its start instead.
  auto changed = r.WaitForChange(old_revision, 30s);
  ASSERT_OK(changed);
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (r.revision() < local_->published_revision() &&
         std::chrono::steady_clock::now() < deadline) {
    r.WaitForChange(r.revision(), 1s).status().IgnoreError();
  }
  EXPECT_EQ(r.revision(), local_->published_revision());
  EXPECT_EQ(SortedKeys(r), (std::vector<std::string>{"new-a", "new-b", "new-c"}));

  // And a write through it is read back from the mirror.
  auto set = r.Set("new-d", Value::Int(4));
  ASSERT_OK(set);
  EXPECT_EQ(*set, 3u);
  EXPECT_EQ(*r.Get("new-d"), std::optional<Value>(Value::Int(4)));
}

TEST_F(BridgeTest, AGetWithoutMirrorDoesNotWaitForARevisionOfTheDictThatWasReplaced) {
  RemoteOptions options = Remote(/*mirror=*/false);
  // The Get waits this long for the old dict's revision before it asks which dict the name holds.
  options.call_timeout = 2s;
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  ASSERT_NO_FATAL_FAILURE(CommitTenThenReplaceDict(r));
  ASSERT_OK(local_->Set("new", Value::Int(1)));  // the new dict stops at revision 1 of 10

  // Read before any write of this object reached the new dict.
  auto got = r.Get("new");
  ASSERT_OK(got);
  EXPECT_EQ(*got, std::optional<Value>(Value::Int(1)));
  EXPECT_EQ(r.last_commit_revision(), 0u);
  auto old = r.Get("old-0");
  ASSERT_OK(old);
  EXPECT_FALSE(old->has_value());

  auto set = r.Set("mine", Value::Int(2));
  ASSERT_OK(set);
  EXPECT_EQ(*set, 2u);
  EXPECT_EQ(r.last_commit_revision(), 2u);
  EXPECT_EQ(*r.Get("mine"), std::optional<Value>(Value::Int(2)));
}

TEST_F(BridgeTest, AMirrorsLastCommitStartsOverWithTheNewDictBeforeAnyWriteToIt) {
  // A mirror reads values too large for the bridge's messages with a Get at min_revision =
  // last_commit_revision(): after a replacement it must not name the old dict's revision.
  BridgeProcess small({}, {"--max-message-bytes", "65536"});
  ASSERT_TRUE(small.Start());
  RemoteOptions options = Remote();
  options.address = small.address();
  options.call_timeout = 2s;
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  ASSERT_NO_FATAL_FAILURE(CommitTenThenReplaceDict(r));
  const Value large = Value::Str(std::string(size_t{256} << 10, 'v'));
  ASSERT_OK(local_->Set("large", large));
  // The mirror starts over (a change, whatever the revision) and then reaches the new dict's 1.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!(r.revision() == 1 && *r.Contains("large")) &&
         std::chrono::steady_clock::now() < deadline) {
    r.WaitForChange(r.revision(), 1s).status().IgnoreError();
  }
  ASSERT_EQ(r.revision(), 1u);
  EXPECT_EQ(r.last_commit_revision(), 0u);
  auto got = r.Get("large");  // too large for the mirror: from the bridge
  ASSERT_OK(got);
  EXPECT_EQ(*got, std::optional<Value>(large));
}

TEST_F(BridgeTest, ARemoteWatcherEndsWithAbortedWhenItsDictIsDeletedAndCreatedAgain) {
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  for (int i = 0; i < 3; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
  auto watcher = r.Watch(0);
  ASSERT_OK(watcher);
  std::set<std::string> keys;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while ((*watcher)->revision() < 3 && std::chrono::steady_clock::now() < deadline) {
    auto batch = (*watcher)->Next(WatchLimits{}, 1s);
    ASSERT_OK(batch);
    for (const auto& [key, value] : batch->snapshot_items) keys.insert(key);
    for (const Change& change : batch->changes) keys.insert(change.key);
  }
  ASSERT_EQ((*watcher)->revision(), 3u);
  EXPECT_EQ(keys, (std::set<std::string>{"old-0", "old-1", "old-2"}));

  ASSERT_NO_FATAL_FAILURE(ReplaceDict());
  ASSERT_OK(local_->Set("new", Value::Int(1)));
  ASSERT_OK(r.Set("new-remote", Value::Int(2)));  // the bridge certainly serves the new dict now

  // Told once it has everything of the old dict; never a change of the new one.
  Result<ChangeBatch> batch = ChangeBatch();
  while (batch.ok() && std::chrono::steady_clock::now() < deadline + 30s) {
    batch = (*watcher)->Next(WatchLimits{}, 1s);
    if (batch.ok()) {
      EXPECT_TRUE(batch->changes.empty() && !batch->is_snapshot)
          << "a change of the new dict reached the old dict's watcher, at revision "
          << batch->revision;
    }
  }
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), StatusCode::kAborted) << batch.status().ToString();
  EXPECT_NE(batch.status().message().find("deleted or replaced (incarnation "), std::string::npos)
      << batch.status().ToString();
  EXPECT_NE(batch.status().message().find(name_), std::string::npos) << batch.status().ToString();
  EXPECT_EQ((*watcher)->revision(), 3u);
  auto again = (*watcher)->Next(WatchLimits{}, 1s);
  EXPECT_EQ(again.status().code(), StatusCode::kAborted) << again.status().ToString();

  // Watching again from 0 follows the new dict.
  auto fresh = r.Watch(0);
  ASSERT_OK(fresh);
  keys.clear();
  while ((*fresh)->revision() < 2 && std::chrono::steady_clock::now() < deadline + 60s) {
    auto next = (*fresh)->Next(WatchLimits{}, 1s);
    ASSERT_OK(next);
    for (const auto& [key, value] : next->snapshot_items) keys.insert(key);
    for (const Change& change : next->changes) keys.insert(change.key);
  }
  EXPECT_EQ(keys, (std::set<std::string>{"new", "new-remote"}));
}

TEST_F(BridgeTest, ARemoteWatcherEndsWithAbortedWhenItsDictWasReplacedWhileTheBridgeWasDown) {
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  for (int i = 0; i < 5; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
  auto watcher = r.Watch(0);
  ASSERT_OK(watcher);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while ((*watcher)->revision() < 5 && std::chrono::steady_clock::now() < deadline) {
    ASSERT_OK((*watcher)->Next(WatchLimits{}, 1s));
  }
  ASSERT_EQ((*watcher)->revision(), 5u);

  bridge_.Kill();
  ASSERT_NO_FATAL_FAILURE(ReplaceDict());
  for (int i = 0; i < 2; ++i) ASSERT_OK(local_->Set("new-" + std::to_string(i), Value::Int(i)));
  ASSERT_TRUE(bridge_.Start());

  // It resumes after revision 5, which the new dict has not reached: the bridge names another
  // incarnation than before.
  Result<ChangeBatch> batch = ChangeBatch();
  while (batch.ok() && std::chrono::steady_clock::now() < deadline) {
    batch = (*watcher)->Next(WatchLimits{}, 1s);
    if (batch.ok()) {
      EXPECT_TRUE(batch->changes.empty() && !batch->is_snapshot);
    }
  }
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), StatusCode::kAborted) << batch.status().ToString();
  EXPECT_NE(batch.status().message().find("deleted or replaced (incarnation "), std::string::npos)
      << batch.status().ToString();
  EXPECT_NE(batch.status().message().find(" -> "), std::string::npos) << batch.status().ToString();
  EXPECT_EQ((*watcher)->revision(), 5u);
}

TEST_F(BridgeTest, ProgressComesAfterEveryChangeSentAndOnRequest) {
  for (int i = 0; i < 3; ++i) ASSERT_OK(local_->Set("k" + std::to_string(i), Value::Int(i)));
  auto stub = RawStub();
  grpc::ClientContext context;
  auto stream = stub->Watch(&context);
  v1::WatchRequest request;
  request.mutable_start()->set_dict(name_);
  request.mutable_start()->set_progress_interval_ms(600000);  // only on request
  ASSERT_TRUE(stream->Write(request));
  v1::WatchResponse message;
  uint64_t received = 0;
  while (received < 3 && stream->Read(&message)) {
    ASSERT_EQ(message.kind(), v1::WatchResponse::KIND_CHANGES);
    for (const auto& change : message.changes()) received = change.revision();
  }
  ASSERT_EQ(received, 3u);
  request.Clear();
  request.mutable_progress();
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&message));
  EXPECT_EQ(message.kind(), v1::WatchResponse::KIND_PROGRESS);
  EXPECT_EQ(message.revision(), 3u);
  ASSERT_OK(local_->Set("k3", Value::Int(3)));
  ASSERT_TRUE(stream->Read(&message));
  ASSERT_EQ(message.kind(), v1::WatchResponse::KIND_CHANGES);
  ASSERT_EQ(message.changes_size(), 1);
  EXPECT_EQ(message.changes(0).revision(), 4u);
  context.TryCancel();
  stream->Finish().IgnoreError();
}

TEST_F(BridgeTest, ManyStreamsOfOneDictWhileALocalWriterCommitsAreGapFreeAndIdentical) {
  // Issue 20's fan-out at a small scale: one pump encodes each batch once for all the streams.
  auto stub = RawStub();
  const uint64_t base = local_->published_revision();
  struct Open {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::WatchRequest, v1::WatchResponse>> stream;
  };
  std::vector<std::unique_ptr<Open>> streams;
  for (int i = 0; i < 16; ++i) {
    auto open = std::make_unique<Open>();
    open->context.set_deadline(std::chrono::system_clock::now() + 60s);
    open->stream = stub->Watch(&open->context);
    v1::WatchRequest request;
    request.mutable_start()->set_dict(name_);
    request.mutable_start()->set_after_revision(base);
    ASSERT_TRUE(open->stream->Write(request));
    // Started before the first write (the answer to a progress request says so): a stream the
    // bridge started only after the writes would begin behind the snapshot the dict publishes
    // once writes pause, and the core starts such a watcher with that snapshot (Dict::Watch).
    request.Clear();
    request.mutable_progress();
    ASSERT_TRUE(open->stream->Write(request));
    v1::WatchResponse started;
    ASSERT_TRUE(open->stream->Read(&started));
    ASSERT_EQ(started.kind(), v1::WatchResponse::KIND_PROGRESS);
    ASSERT_EQ(started.revision(), base);
    streams.push_back(std::move(open));
  }
  const int writes = Scaled(5000);
  std::thread writer([&] {
    for (int i = 0; i < writes; ++i) {
      if (i % 10 == 0) {
        ASSERT_OK(local_->Update(std::vector<std::pair<std::string, Value>>{{"a", Value::Int(i)},
                                                                            {"b", Value::Int(i)}}));
      } else {
        ASSERT_OK(local_->Set("k" + std::to_string(i % 100), Value::Int(i)));
      }
    }
  });
  writer.join();
  const uint64_t last = local_->published_revision();
  std::vector<std::string> first;
  for (auto& open : streams) {
    std::vector<std::string> seen;  // "revision key value", in the order received
    uint64_t complete = base;
    v1::WatchResponse message;
    while (complete < last && open->stream->Read(&message)) {
      ASSERT_NE(message.kind(), v1::WatchResponse::KIND_SNAPSHOT)
          << "every stream started at the last revision and the log never lapped";
      ASSERT_GE(message.revision(), complete);
      for (const auto& change : message.changes()) {
        ASSERT_GT(change.revision(), complete);
        seen.push_back(std::to_string(change.revision()) + " " + change.key() + " " +
                       change.value().data());
      }
      complete = message.revision();
    }
    ASSERT_EQ(complete, last);
    ASSERT_EQ(seen.size(), static_cast<size_t>(writes + (writes + 9) / 10));
    if (first.empty()) {
      first = seen;
    } else {
      EXPECT_EQ(seen, first);
    }
    open->context.TryCancel();
    open->stream->Finish().IgnoreError();
  }
  // Every revision from base + 1 to last, each once (an atomic batch's two changes share one).
  std::set<uint64_t> revisions;
  for (const std::string& change : first) revisions.insert(std::stoull(change));
  EXPECT_EQ(revisions.size(), last - base);
  EXPECT_EQ(*revisions.begin(), base + 1);
  EXPECT_EQ(*revisions.rbegin(), last);
}

TEST_F(BridgeTest, ABatchLargerThanAMessageComesInFragmentsAndAHugeValueAsAMarker) {
  BridgeProcess small({}, {"--max-message-bytes", "65536"});
  ASSERT_TRUE(small.Start());
  const uint64_t before = local_->published_revision();
  // One revision of 120 KB: more than a message, so it must be fragmented.
  std::vector<std::pair<std::string, Value>> batch;
  for (int i = 0; i < 3; ++i) {
    batch.emplace_back("part" + std::to_string(i), Value::Bytes(std::string(40000, 'a' + i)));
  }
  ASSERT_OK(local_->Update(batch));
  // One value larger than a message: announced, not sent.
  ASSERT_OK(local_->Set("huge", Value::Bytes(std::string(100000, 'h'))));

  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(-1);
  auto stub = v1::Dict::NewStub(
      grpc::CreateCustomChannel(small.address(), grpc::InsecureChannelCredentials(), arguments));
  grpc::ClientContext context;
  auto stream = stub->Watch(&context);
  v1::WatchRequest request;
  request.mutable_start()->set_dict(name_);
  request.mutable_start()->set_after_revision(before);
  ASSERT_TRUE(stream->Write(request));
  v1::WatchResponse message;
  int fragments = 0;
  int parts = 0;
  bool marker = false;
  while (!marker && stream->Read(&message)) {
    if (message.kind() != v1::WatchResponse::KIND_CHANGES) continue;
    if (message.more_fragments()) {
      ++fragments;
      EXPECT_EQ(message.revision(), before) << "a fragmented revision is not complete yet";
    }
    for (const auto& change : message.changes()) {
      if (change.key().rfind("part", 0) == 0) ++parts;
      if (change.key() == "huge") {
        marker = true;
        EXPECT_TRUE(change.value_too_large());
        EXPECT_EQ(change.value_size(), 100000u);
        EXPECT_FALSE(change.has_value());
      }
    }
  }
  EXPECT_GE(fragments, 1);
  EXPECT_EQ(parts, 3);
  EXPECT_TRUE(marker);
  context.TryCancel();
  stream->Finish().IgnoreError();

  // RemoteWatcher puts the fragments back together: the batch arrives whole, as one revision.
  RemoteOptions options = Remote();
  options.address = small.address();
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  auto watcher = (*remote)->Watch(before);
  ASSERT_OK(watcher);
  std::vector<Change> seen;
  while (seen.size() < 4) {
    auto next = (*watcher)->Next(WatchLimits{}, std::chrono::seconds(30));
    ASSERT_OK(next);
    seen.insert(seen.end(), next->changes.begin(), next->changes.end());
    if (next->changes.empty()) break;
  }
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].revision, before + 1);
  EXPECT_EQ(seen[2].revision, before + 1);
  EXPECT_EQ(seen[2].value, batch[2].second);
  EXPECT_TRUE(seen[3].value_too_large);
  // The mirror knows the key exists and reads it from the bridge when asked.
  EXPECT_TRUE(*(*remote)->Contains("huge"));
}

// grpc.health.v1.Health/Check by hand (Debian has no generated health stubs): the request is
// field 1 (service, a string), the response field 1 (status: 1 SERVING, 2 NOT_SERVING).
std::pair<grpc::StatusCode, int> CheckHealth(const std::string& address,
                                             const std::string& service) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  std::string request = "\x0a" + std::string(1, static_cast<char>(service.size())) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return {status.error_code(), 0};
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(response_buffer.Dump(&slices).ok());
  std::string response;
  for (const grpc::Slice& s : slices)
    response.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return {grpc::StatusCode::OK, response.size() == 2 && response[0] == 0x08 ? response[1] : -1};
}

TEST_F(BridgeTest, HealthIsReportedForTheBridgeAndPerDict) {
  EXPECT_EQ(CheckHealth(bridge_.address(), ""), std::make_pair(grpc::StatusCode::OK, 1));
  EXPECT_EQ(CheckHealth(bridge_.address(), "shmdict.v1.Dict"),
            std::make_pair(grpc::StatusCode::OK, 1));
  const std::string per_dict = "shmdict.v1.Dict/" + name_;
  // Not attached yet: unknown to the health service.
  EXPECT_EQ(CheckHealth(bridge_.address(), per_dict).first, grpc::StatusCode::NOT_FOUND);
  auto remote = RemoteDict::Open(Remote(false));
  ASSERT_OK(remote);
  ASSERT_OK((*remote)->Set("k", Value::Int(1)));
  EXPECT_EQ(CheckHealth(bridge_.address(), per_dict), std::make_pair(grpc::StatusCode::OK, 1));
  // Gone: NOT_SERVING once the bridge notices (its next call, or its notifier's check).
  local_.reset();
  EXPECT_FALSE((*remote)->Get("k").ok());
  EXPECT_EQ(CheckHealth(bridge_.address(), per_dict), std::make_pair(grpc::StatusCode::OK, 2));
}

TEST_F(BridgeTest, ANestedDictIsReachableByTheNameItsValueHolds) {
  auto child = local_->OpenNested("settings");
  ASSERT_OK(child);
  ASSERT_OK(child->Set("theme", Value::Str("dark")));
  auto remote = RemoteDict::Open(Remote());
  ASSERT_OK(remote);
  auto reference = (*remote)->Get("settings");
  ASSERT_OK(reference);
  ASSERT_TRUE(reference->has_value());
  ASSERT_EQ((*reference)->type(), ValueType::kNestedDict);
  RemoteOptions options = Remote();
  options.dict = (*reference)->data();
  auto remote_child = RemoteDict::Open(options);
  ASSERT_OK(remote_child);
  EXPECT_EQ(*(*remote_child)->Get("theme"), std::optional<Value>(Value::Str("dark")));
  ASSERT_OK((*remote_child)->Set("font", Value::Str("mono")));
  EXPECT_EQ(*child->Get("font"), std::optional<Value>(Value::Str("mono")));
}

}  // namespace
}  // namespace shmdict::testing
