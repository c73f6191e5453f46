// shmdict-replica as a process, against real etcd members (EtcdCluster) and a real shmdict-bridge:
// the issue's fault list. Each test uses its own dict and etcd prefix and leaves /dev/shm clean.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bridge_launcher.h"
#include "bridge_process.h"
#include "dict_test_base.h"
#include "etcd_launcher.h"
#include "key_range.h"
#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"
#include "status_matchers.h"
#include "subprocess.h"
#include "value_codec.h"

namespace shmdict::replica {
namespace {

using internal::BridgeLauncher;
using internal::BridgeLaunchOptions;
using internal::Deadline;
using internal::DeadlineIn;
using internal::EtcdCluster;
using internal::EtcdClusterOptions;
using internal::ExitInfo;
using internal::LineStatus;
using internal::SpawnOptions;
using internal::Subprocess;
using ::shmdict::testing::StatusIs;
using ::testing::HasSubstr;

constexpr auto kPatience = std::chrono::seconds(60);

std::string Joined(const std::vector<std::string>& parts) {
  std::string joined;
  for (const std::string& part : parts) joined += (joined.empty() ? "" : ",") + part;
  return joined;
}

// One shmdict-replica: started, "ready" awaited, its --listen address learned.
struct ReplicaProcess {
  std::unique_ptr<Subprocess> process;
  std::string listen;
};

// `wrapper`: a command line the replica's runs under (unshare ...), empty: none.
std::unique_ptr<ReplicaProcess> StartReplica(const std::vector<std::string>& args,
                                             std::string* error,
                                             const std::vector<std::string>& wrapper = {}) {
  SpawnOptions options;
  options.argv = wrapper;
  options.argv.push_back(SHMDICT_REPLICA_PATH);
  for (const std::string& arg : args) options.argv.push_back(arg);
  options.argv.insert(options.argv.end(), {"--log-level", "warn"});
  options.path = options.argv.front();
  options.pipe_stdout = true;
  options.kill_with_parent = true;
  auto replica = std::make_unique<ReplicaProcess>();
  replica->process = Subprocess::Start(options, error);
  if (!replica->process) return nullptr;
  const Deadline deadline = DeadlineIn(kPatience);
  std::string line;
  while (true) {
    LineStatus status = replica->process->ReadLine(&line, deadline);
    if (status != LineStatus::kLine) {
      *error = "shmdict-replica printed no \"ready\" (" +
               std::string(status == LineStatus::kEof ? "it exited" : "timeout") +
               "): " + replica->process->output();
      replica->process->Kill();
      return nullptr;
    }
    if (line.rfind("listening on ", 0) == 0 && replica->listen.empty()) {
      replica->listen = line.substr(std::string("listening on ").size());
    }
    if (line == "ready") return replica;
  }
}

std::map<std::string, Value> Contents(Dict& dict) {
  std::map<std::string, Value> contents;
  auto items = dict.Items();
  EXPECT_TRUE(items.ok()) << items.status().ToString();
  if (items.ok()) {
    for (auto& [key, value] : *items) contents.emplace(key, std::move(value));
  }
  return contents;
}

class ReplicaProcessTest : public shmdict::testing::DictTestBase {
 protected:
  void StartEtcd(int members) {
    std::string error;
    etcd_ = EtcdCluster::Start(members, EtcdClusterOptions{}, &error);
    ASSERT_NE(etcd_, nullptr) << error;
  }

  // The prefix's contents in etcd, decoded as the replica decodes them (a linearizable Range),
  // and the revision of that read.
  std::map<std::string, Value> EtcdContents(const std::string& prefix, int64_t* revision) {
    etcdserverpb::RangeRequest request;
    request.set_key(PrefixRangeKey(prefix));
    request.set_range_end(PrefixRangeEnd(prefix));
    etcdserverpb::RangeResponse response;
    grpc::Status status = etcd_->Range(request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::map<std::string, Value> contents;
    for (const auto& kv : response.kvs()) {
      auto key = LocalKeyOf(kv.key(), prefix);
      if (key) contents.emplace(std::string(*key), DecodeValue(kv.value(), false));
    }
    if (revision != nullptr) *revision = response.header().revision();
    return contents;
  }

  int64_t Put(const std::string& key, const std::string& value, int member = -1) {
    int64_t revision = 0;
    grpc::Status status = etcd_->Put(key, value, &revision, member);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return revision;
  }

  // Waits until the replica dict `name` records upstream revision >= `revision`.
  void AwaitUpstreamRevision(const std::string& name, uint64_t revision) {
    const Deadline deadline = DeadlineIn(kPatience);
    uint64_t seen = 0;
    while (internal::Clock::now() < deadline) {
      auto dict = Dict::Open(AttachOptions(name));
      if (dict.ok()) {
        seen = dict->GetStatus().upstream_revision.value_or(0);
        if (seen >= revision) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL() << "the replica applied upstream revision " << seen << ", not " << revision;
  }

  // The replica's state equals etcd's prefix once it caught up with etcd's current revision.
  void ExpectEqualToEtcd(const std::string& name, const std::string& prefix) {
    int64_t revision = 0;
    std::map<std::string, Value> wanted = EtcdContents(prefix, &revision);
    AwaitUpstreamRevision(name, static_cast<uint64_t>(revision));
    ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
    EXPECT_EQ(Contents(local), wanted);
  }

  std::vector<std::string> EtcdArgs(const std::string& name, const std::string& prefix) {
    return {"--dict",   name,   "--etcd",   Joined(etcd_->client_endpoints()),
            "--prefix", prefix, "--listen", "127.0.0.1:0"};
  }

  std::unique_ptr<EtcdCluster> etcd_;
};

class ReplicaMembersTest : public ReplicaProcessTest, public ::testing::WithParamInterface<int> {};

TEST_P(ReplicaMembersTest, LocalStateEqualsTheEtcdPrefixWhoeverWrites) {
  ASSERT_NO_FATAL_FAILURE(StartEtcd(GetParam()));
  const std::string name = NewDictName();
  const std::string prefix = "/t1/";
  Put(prefix + "before", "listed at start");
  Put("/t1", "beside the prefix: not ours");
  std::string error;
  auto replica = StartReplica(EtcdArgs(name, prefix), &error);
  ASSERT_NE(replica, nullptr) << error;

  // Foreign writers: etcd's own clients.
  Put(prefix + "text", "plain text");
  Put(prefix + "binary", std::string("\xff\x00\x01", 3));
  etcdserverpb::TxnRequest txn;
  for (const char* key : {"t/a", "t/b"}) {
    auto* put = txn.add_success()->mutable_request_put();
    put->set_key(prefix + key);
    put->set_value(key);
  }
  txn.add_success()->mutable_request_delete_range()->set_key(prefix + "text");
  etcdserverpb::TxnResponse txn_response;
  ASSERT_TRUE(etcd_->Txn(txn, &txn_response).ok());

  // Writes through the replica's --listen, with every Store write; each returned revision is
  // already readable here.
  RemoteOptions options;
  options.address = replica->listen;
  options.dict = name;
  options.mirror = false;
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDict::Open(options));
  ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
  auto read_your_write = [&](uint64_t revision) { EXPECT_GE(local.revision(), revision); };
  ASSERT_OK_AND_ASSIGN(uint64_t r, remote->Set("int", Value::Int(-7)));
  read_your_write(r);
  ASSERT_OK_AND_ASSIGN(auto got, local.Get("int"));
  EXPECT_EQ(got, Value::Int(-7));
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, Value>>{{"str", Value::Str("héllo")},
                                                  {"json", Value::Json(R"({"a":[1,2]})")},
                                                  {"bytes", Value::Bytes(std::string("\0\xff", 2))},
                                                  {"double", Value::Double(2.5)},
                                                  {"bool", Value::Bool(true)},
                                                  {"null", Value::Null()}}) {
    ASSERT_OK_AND_ASSIGN(r, remote->Set(key, value));
    read_your_write(r);
  }
  EXPECT_THAT(remote->Erase("t/a"), shmdict::testing::IsOkAndHolds(true));
  EXPECT_THAT(remote->Erase("missing"), shmdict::testing::IsOkAndHolds(false));
  ASSERT_OK_AND_ASSIGN(auto popped, remote->Pop("t/b"));
  EXPECT_EQ(popped, Value::Str("t/b"));
  ASSERT_OK_AND_ASSIGN(auto kept, remote->SetDefault("str", Value::Str("other")));
  EXPECT_EQ(kept, Value::Str("héllo"));
  ASSERT_OK_AND_ASSIGN(auto added, remote->SetDefault("fresh", Value::Int(1)));
  EXPECT_EQ(added, Value::Int(1));
  EXPECT_THAT(remote->CompareAndSet("int", Value::Int(-7), Value::Int(8)),
              shmdict::testing::IsOkAndHolds(true));
  EXPECT_THAT(remote->CompareAndSet("int", Value::Int(-7), Value::Int(9)),
              shmdict::testing::IsOkAndHolds(false));
  EXPECT_THAT(remote->Increment("counter", 5), shmdict::testing::IsOkAndHolds(5));
  EXPECT_THAT(remote->Increment("counter", -2), shmdict::testing::IsOkAndHolds(3));
  EXPECT_THAT(remote->Increment("str", 1), StatusIs(StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(r, remote->Update({{"u1", Value::Int(1)}, {"u2", Value::Int(2)}}));
  read_your_write(r);
  ExpectEqualToEtcd(name, prefix);

  // A batch with a clear in the middle, then a clear.
  Change clear;
  clear.op = ChangeOp::kClear;
  Change set;
  set.op = ChangeOp::kSet;
  set.key = "after-clear";
  set.value = Value::Int(1);
  ASSERT_OK_AND_ASSIGN(r, remote->Apply({clear, set}));
  read_your_write(r);
  ExpectEqualToEtcd(name, prefix);
  EXPECT_EQ(Contents(local).size(), 1u);
  ASSERT_OK_AND_ASSIGN(r, remote->Clear());
  ExpectEqualToEtcd(name, prefix);
  EXPECT_TRUE(Contents(local).empty());

  // etcdctl's view (the tool users check with) agrees with etcd's and the replica's.
  Put(prefix + "last", R"({"seen":"by etcdctl"})");
  std::string printed;
  ExitInfo shown = etcd_->Etcdctl({"get", "--print-value-only", prefix + "last"}, &printed);
  ASSERT_TRUE(shown.Succeeded()) << shown.ToString();
  EXPECT_THAT(printed, HasSubstr(R"({"seen":"by etcdctl"})"));
  ExpectEqualToEtcd(name, prefix);

  replica->process->Signal(SIGTERM);
  ExitInfo stopped = replica->process->Wait(DeadlineIn(kPatience));
  EXPECT_TRUE(stopped.Succeeded()) << stopped.ToString() << "\n" << replica->process->output();
}

INSTANTIATE_TEST_SUITE_P(Members, ReplicaMembersTest, ::testing::Values(1, 3),
                         [](const auto& info) { return std::to_string(info.param) + "Members"; });

TEST_F(ReplicaProcessTest, KillingTheConnectedMemberLosesAndRepeatsNothing) {
  ASSERT_NO_FATAL_FAILURE(StartEtcd(3));
  const std::string name = NewDictName();
  const std::string prefix = "/t2/";
  std::string error;
  auto replica = StartReplica(EtcdArgs(name, prefix), &error);  // connects to member 0 first
  ASSERT_NE(replica, nullptr) << error;
  ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
  ASSERT_OK_AND_ASSIGN(auto watcher, local.Watch(local.revision()));

  constexpr int kWrites = 600;
  int64_t last = 0;
  for (int i = 0; i < kWrites; ++i) {
    if (i == kWrites / 3) {
      etcd_->Kill(0);
      ASSERT_TRUE(etcd_->WaitUntilReady(&error)) << error;
    }
    if (i == 2 * kWrites / 3) {
      ASSERT_TRUE(etcd_->Restart(0, &error)) << error;
    }
    last = Put(prefix + "k" + std::to_string(i), std::to_string(i), 1 + i % 2);
  }
  AwaitUpstreamRevision(name, static_cast<uint64_t>(last));

  std::vector<int> seen;
  while (seen.size() < kWrites) {
    ASSERT_OK_AND_ASSIGN(ChangeBatch batch, watcher->Next(WatchLimits{}, kPatience));
    ASSERT_FALSE(batch.is_snapshot) << "the watcher fell back to a snapshot";
    ASSERT_FALSE(batch.changes.empty()) << "no change within the patience";
    for (const Change& change : batch.changes) {
      ASSERT_EQ(change.op, ChangeOp::kSet);
      seen.push_back(std::stoi(change.value.data()));
    }
  }
  std::vector<int> expected(kWrites);
  for (int i = 0; i < kWrites; ++i) expected[i] = i;
  EXPECT_EQ(seen, expected);  // each write once, in order
  ASSERT_OK_AND_ASSIGN(Dict status_handle, Dict::Open(AttachOptions(name)));
  EXPECT_EQ(status_handle.GetStatus().upstream_revision.value_or(0), static_cast<uint64_t>(last));
}

TEST_F(ReplicaProcessTest, RelistsAfterEtcdCompactedPastItsRevision) {
  ASSERT_NO_FATAL_FAILURE(StartEtcd(1));
  const std::string name = NewDictName();
  const std::string prefix = "/t3/";
  for (int i = 0; i < 20; ++i) Put(prefix + "k" + std::to_string(i), "v" + std::to_string(i));
  std::string error;
  auto replica = StartReplica(EtcdArgs(name, prefix), &error);
  ASSERT_NE(replica, nullptr) << error;
  ExpectEqualToEtcd(name, prefix);
  ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
  const uint64_t before = local.revision();
  ASSERT_OK_AND_ASSIGN(auto watcher, local.Watch(before));
  replica->process->Signal(SIGTERM);
  ASSERT_TRUE(replica->process->Wait(DeadlineIn(kPatience)).Succeeded());

  Put(prefix + "k0", "changed");
  Put(prefix + "new", "added");
  etcdserverpb::DeleteRangeRequest erase;
  erase.set_key(prefix + "k1");
  etcdserverpb::DeleteRangeResponse erased;
  ASSERT_TRUE(etcd_->DeleteRange(erase, &erased).ok());
  const int64_t now = Put("/elsewhere", "moves the revision on");
  ASSERT_TRUE(etcd_->Compact(now).ok());

  replica = StartReplica(EtcdArgs(name, prefix), &error);
  ASSERT_NE(replica, nullptr) << error;
  ExpectEqualToEtcd(name, prefix);
  // The replacement is one batch of exactly the differences, right after what the watcher had.
  ASSERT_OK_AND_ASSIGN(ChangeBatch batch, watcher->Next(WatchLimits{}, kPatience));
  EXPECT_FALSE(batch.is_snapshot);
  EXPECT_EQ(batch.revision, before + 1);
  std::map<std::string, ChangeOp> ops;
  for (const Change& change : batch.changes) ops[change.key] = change.op;
  EXPECT_EQ(ops, (std::map<std::string, ChangeOp>{
                     {"k0", ChangeOp::kSet}, {"k1", ChangeOp::kErase}, {"new", ChangeOp::kSet}}));
}

// 20 rounds of 500 upstream writes (every 10th a Txn of 5 puts and a delete); in each round the
// replica is SIGKILLed at a random moment and started again at once, and once the round's writes
// are done its state must equal etcd's.
TEST_F(ReplicaProcessTest, SurvivesTwentySigkillsDuringTenThousandWrites) {
  ASSERT_NO_FATAL_FAILURE(StartEtcd(1));
  const std::string name = NewDictName();
  const std::string prefix = "/t4/";
  SCOPED_TRACE(SeedTrace());
  std::string error;
  auto replica = StartReplica(EtcdArgs(name, prefix), &error);
  ASSERT_NE(replica, nullptr) << error;
  // One watcher across every kill: each upstream revision must arrive once, whole, in order.
  ASSERT_OK_AND_ASSIGN(Dict watched, Dict::Open(AttachOptions(name)));
  ASSERT_OK_AND_ASSIGN(auto watcher, watched.Watch(watched.revision()));

  constexpr int kRounds = 20;
  const int per_round = shmdict::testing::Scaled(500);
  std::uniform_int_distribution<int> kill_after_ms(0, 400);
  int written = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<bool> failed{false};
    std::thread writer([&, first = written] {
      for (int i = first; i < first + per_round; ++i) {
        grpc::Status status;
        if (i % 10 == 9) {
          etcdserverpb::TxnRequest txn;
          for (int j = 0; j < 5; ++j) {
            auto* put = txn.add_success()->mutable_request_put();
            put->set_key(prefix + "batch" + std::to_string(j));
            put->set_value(std::to_string(i));
          }
          txn.add_success()->mutable_request_delete_range()->set_key(prefix + "k" +
                                                                     std::to_string(i % 97));
          etcdserverpb::TxnResponse response;
          status = etcd_->Txn(txn, &response);
        } else {
          status = etcd_->Put(prefix + "k" + std::to_string(i % 97), std::to_string(i));
        }
        if (!status.ok()) failed = true;
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(kill_after_ms(rng_)));
    replica->process->Kill();
    replica = StartReplica(EtcdArgs(name, prefix), &error);
    writer.join();
    ASSERT_NE(replica, nullptr) << error;
    ASSERT_FALSE(failed.load());
    written += per_round;
    SCOPED_TRACE("after kill " + std::to_string(round + 1));
    ASSERT_NO_FATAL_FAILURE(ExpectEqualToEtcd(name, prefix));
  }

  // Every write i is one local revision: a Put of k(i%97) = i, or (every 10th) the Txn's five
  // batch puts of i and one delete, together. Values only grow per key: a duplicate or a lost
  // revision would show as a repeat, a step back or a Txn split across revisions.
  std::map<uint64_t, std::vector<Change>> by_revision;
  const uint64_t last = watched.revision();
  uint64_t delivered = 0;
  while (delivered < last) {
    ASSERT_OK_AND_ASSIGN(ChangeBatch batch, watcher->Next(WatchLimits{}, kPatience));
    ASSERT_FALSE(batch.is_snapshot) << "the watcher fell back to a snapshot";
    for (Change& change : batch.changes) by_revision[change.revision].push_back(change);
    ASSERT_GT(batch.revision, delivered) << "no progress within the patience";
    delivered = batch.revision;
  }
  std::map<std::string, int> latest;
  int puts = 0;
  int txns = 0;
  for (const auto& [revision, changes] : by_revision) {
    int sets = 0;
    int erases = 0;
    for (const Change& change : changes) {
      if (change.op == ChangeOp::kErase) {
        ++erases;
        continue;
      }
      ++sets;
      const int value = std::stoi(change.value.data());
      auto previous = latest.find(change.key);
      if (previous != latest.end()) {
        EXPECT_GT(value, previous->second) << change.key << " at local revision " << revision;
      }
      latest[change.key] = value;
    }
    if (sets == 1 && erases == 0) {
      ++puts;
    } else {
      EXPECT_EQ(sets, 5) << "local revision " << revision;
      EXPECT_LE(erases, 1) << "local revision " << revision;
      ++txns;
    }
  }
  EXPECT_EQ(puts + txns, written) << "every upstream write is one local revision";
}

TEST_F(ReplicaProcessTest, TwoHostsShareOneEtcdPrefix) {
  if (geteuid() != 0) GTEST_SKIP() << "mount namespaces need root";
  ASSERT_NO_FATAL_FAILURE(StartEtcd(1));
  const std::string name = NewDictName();
  const std::string prefix = "/t5/";
  // Each "host": its own mount namespace with its own empty /dev/shm.
  const std::vector<std::string> host = {"/usr/bin/unshare",
                                         "-m",
                                         "--propagation",
                                         "private",
                                         "/bin/sh",
                                         "-c",
                                         "mount -t tmpfs none /dev/shm && exec \"$0\" \"$@\""};
  std::string error;
  auto a = StartReplica(EtcdArgs(name, prefix), &error, host);
  ASSERT_NE(a, nullptr) << error;
  auto b = StartReplica(EtcdArgs(name, prefix), &error, host);
  ASSERT_NE(b, nullptr) << error;
  EXPECT_TRUE(shmdict::testing::ShmEntriesWithPrefix(name).empty())
      << "a replica's dict is in this host's /dev/shm";

  RemoteOptions options;
  options.address = a->listen;
  options.dict = name;
  options.mirror = false;
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDict::Open(options));
  ASSERT_OK(remote->Set("greeting", Value::Str("from host A")).status());

  // Read from host B's shared memory, with the CLI inside B's mount namespace.
  std::string output;
  for (int attempt = 0; attempt < 200; ++attempt) {
    SpawnOptions get;
    get.argv = {"/usr/bin/nsenter",
                "-t",
                std::to_string(b->process->pid()),
                "-m",
                SHMDICT_CLI_PATH,
                "get",
                name,
                "greeting"};
    get.path = get.argv.front();
    get.pipe_stdout = true;
    auto cli = Subprocess::Start(get, &error);
    ASSERT_NE(cli, nullptr) << error;
    ExitInfo exit = cli->Wait(DeadlineIn(kPatience));
    output = cli->output();
    if (exit.Succeeded() && output.find("from host A") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  EXPECT_THAT(output, HasSubstr("from host A"));
  EXPECT_TRUE(shmdict::testing::ShmEntriesWithPrefix(name).empty());
}

TEST_F(ReplicaProcessTest, FollowsABridgeKilledAndRestartedMidStream) {
  const std::string primary_name = NewDictName();
  const std::string name = NewDictName();
  Options primary_options = CreateOptions(primary_name);
  primary_options.buffer_size = 64 << 10;  // its log wraps: resumes need snapshots
  ASSERT_OK_AND_ASSIGN(Dict primary, Dict::Open(primary_options));
  const shmdict::testing::TempDir dir;  // removed whatever the test's outcome
  const std::string socket = "unix:" + dir.path() + "/bridge.sock";
  BridgeLaunchOptions bridge_options;
  bridge_options.program = SHMDICT_BRIDGE_PATH;
  bridge_options.listen = {socket};
  bridge_options.extra_args = {"--dict", primary_name};
  std::string error;
  auto bridge = BridgeLauncher::Start(bridge_options, &error);
  ASSERT_NE(bridge, nullptr) << error;
  auto replica = StartReplica(
      {"--dict", name, "--bridge", socket, "--source", primary_name, "--listen", "127.0.0.1:0"},
      &error);
  ASSERT_NE(replica, nullptr) << error;

  std::string big(2000, 'x');
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 300; ++i) {
      ASSERT_OK(
          primary.Set("k" + std::to_string(i % 50), Value::Str(big + std::to_string(i))).status());
    }
    if (round < 2) {
      bridge->Kill();
      for (int i = 0; i < 200; ++i) {  // written while the bridge is down: the log wraps
        ASSERT_OK(primary.Set("down" + std::to_string(i % 20), Value::Int(i)).status());
      }
      bridge = BridgeLauncher::Start(bridge_options, &error);
      ASSERT_NE(bridge, nullptr) << error;
    }
  }
  ASSERT_OK(primary.Erase("k0").status());
  const uint64_t target = primary.revision();
  AwaitUpstreamRevision(name, target);
  ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
  EXPECT_EQ(Contents(local), Contents(primary));

  // A write through the replica's --listen reaches the primary and is applied here on return.
  RemoteOptions options;
  options.address = replica->listen;
  options.dict = name;
  options.mirror = false;
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDict::Open(options));
  ASSERT_OK_AND_ASSIGN(uint64_t r, remote->Set("via-replica", Value::Int(1)));
  EXPECT_GE(local.revision(), r);
  ASSERT_OK_AND_ASSIGN(auto at_primary, primary.Get("via-replica"));
  EXPECT_EQ(at_primary, Value::Int(1));

  replica->process->Kill();
  bridge->Kill();
}

TEST_F(ReplicaProcessTest, LocalWritesAreRefusedNamingTheListenAddress) {
  ASSERT_NO_FATAL_FAILURE(StartEtcd(1));
  const std::string name = NewDictName();
  const std::string prefix = "/t7/";
  Put(prefix + "a", "1");
  std::string error;
  auto replica = StartReplica(EtcdArgs(name, prefix), &error);
  ASSERT_NE(replica, nullptr) << error;
  ExpectEqualToEtcd(name, prefix);
  ASSERT_OK_AND_ASSIGN(Dict local, Dict::Open(AttachOptions(name)));
  const uint64_t before = local.revision();
  const auto contents = Contents(local);

  EXPECT_THAT(local.Set("a", Value::Str("2")),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr(replica->listen)));
  EXPECT_THAT(local.Clear(), StatusIs(StatusCode::kFailedPrecondition));

  const shmdict::testing::CliRun refused = shmdict::testing::RunCli({"set", name, "a", "2"});
  EXPECT_EQ(refused.code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr(replica->listen));

  // A plain bridge on this host refuses too, passing the reason on.
  BridgeLaunchOptions bridge_options;
  bridge_options.program = SHMDICT_BRIDGE_PATH;
  bridge_options.listen = {"127.0.0.1:0"};
  auto bridge = BridgeLauncher::Start(bridge_options, &error);
  ASSERT_NE(bridge, nullptr) << error;
  RemoteOptions options;
  options.address = bridge->address();
  options.dict = name;
  options.mirror = false;
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDict::Open(options));
  EXPECT_THAT(remote->Set("a", Value::Str("3")),
              StatusIs(StatusCode::kFailedPrecondition, HasSubstr(replica->listen)));

  EXPECT_EQ(local.revision(), before);
  EXPECT_EQ(Contents(local), contents);
  ASSERT_OK_AND_ASSIGN(Dict status_handle, Dict::Open(AttachOptions(name)));
  const DictStatus status = status_handle.GetStatus();
  EXPECT_THAT(status.replica_of.value_or(""), HasSubstr(prefix));
  EXPECT_EQ(status.replica_listen.value_or(""), replica->listen);
  EXPECT_TRUE(status.upstream_connected.value_or(false));
}

}  // namespace
}  // namespace shmdict::replica
