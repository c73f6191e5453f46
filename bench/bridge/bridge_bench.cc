// shmdict_bridge_bench: what shmdict-bridge costs and delivers, against Redis over loopback (and
// etcd 3.4 as a second peer), in one run with the same keys ("key-%08d") and 100-byte values for
// every system:
//   1. Watch fan-out: a local Dict writer commits N single-key Sets as fast as it can while 1,
//      then 8 raw gRPC Watch streams (one thread each) follow; changes/s per subscriber.
//   2. Unary Set and Get through the bridge (RemoteDict without a mirror, sequential), over TCP
//      and over a Unix socket, against unpipelined hiredis SET and GET: ops/s, p50/p99.
//   3. Batched writes: Batch RPCs of 100 mutations against pipelined MSETs of 100 keys.
//   4. Propagation: a local Dict Set until a mirroring RemoteDict's revision() reaches it (TCP and
//      Unix), against a SET until its keyspace notification arrives on a psubscribed connection.
//   5. Mirror reads: RemoteDict::Get(key, &out) against a std::unordered_map lookup and copy.
//   6. A crowd: --streams Watch streams of one dict (callback API, a few connections) on a bridge
//      of their own while a local writer commits --stream-changes Sets: every stream checked
//      gap-free and equal to the writer's sequence (a failure fails the run), the bridge's peak
//      RSS, and its memory per idle stream.
//   7. etcd (1 member, fsync on): sequential Put and Range, a prefix watcher's rate with Txns of
//      100 Puts, a Put until its watch event; n/a when etcd is not installed.
//
//   shmdict_bridge_bench [--quick] [--out DIR] [--json FILE] [--changes N] [--samples N] [--ops N]
//   [--keys N] [--streams N] [--stream-changes N] [--stream-channels N] [--etcd-ops N]
//   [--etcd-changes N] [--etcd-samples N]
//   shmdict_bridge_bench --check-json FILE     (the smoke test's check of a report)
//
// It starts its own shmdict-bridges (127.0.0.1:0 and a Unix socket in /tmp), redis-server
// (127.0.0.1, a free port, no persistence) and etcd (EtcdCluster, etcd_launcher.h) and kills them
// at the end, on failure too (bridge_launcher.h, redis_launcher.h). Its dicts are named
// "<RunPrefix()>..." and unlink themselves; a final sweep reports leftovers as a failure.
//
// Timing is reported, never asserted: the ratios compare systems measured in the same run.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bridge_launcher.h"
#include "harness.h"
#include "redis_launcher.h"
#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"
#include "shmdict/v1/dict.grpc.pb.h"

#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif
#if SHMDICT_BRIDGE_BENCH_HAVE_ETCD
#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd_launcher.h"
#endif

namespace {

using nlohmann::json;
using peers::BenchError;
using peers::Fail;
using peers::MonotonicNs;

constexpr size_t kValueBytes = 100;
constexpr size_t kBatchSize = 100;  // mutations per Batch RPC, keys per MSET
constexpr int kMsetWindow = 16;     // MSETs in flight
constexpr int kBatchWindow = 1;     // Batch RPCs in flight (a sequential client)
constexpr int64_t kStartTimeoutNs = 30'000'000'000;

struct Config {
  bool quick = false;
  std::string out_dir;
  std::string json_path;
  uint64_t changes = 500'000;  // fan-out writes
  uint64_t samples = 2'000;    // propagation samples
  uint64_t ops = 20'000;       // unary ops per kind
  uint64_t batch_changes = 200'000;
  uint64_t keys = 100'000;            // mirror reads
  uint64_t streams = 2'000;           // Watch streams of one dict
  uint64_t stream_changes = 100'000;  // Sets while they watch
  uint64_t stream_channels = 8;       // connections they share
  uint64_t etcd_ops = 2'000;          // etcd Puts and Ranges
  uint64_t etcd_changes = 20'000;     // Puts of etcd's watch fan-out
  uint64_t etcd_samples = 500;        // etcd propagation samples
  int64_t pause_ns = 300'000;
};

std::string Key(uint64_t i) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "key-%08" PRIu64, i);
  return buffer;
}

// 100 bytes that differ per key: "value-<i>-" padded with letters.
std::string ValueFor(uint64_t i) {
  std::string v = "value-";
  v += std::to_string(i);
  v += '-';
  while (v.size() < kValueBytes) v += static_cast<char>('a' + v.size() % 26);
  return v;
}

// ------------------------------------------------------------------------------- statistics

struct Latencies {
  std::vector<int64_t> ns;
  double Percentile(double p) {
    if (ns.empty()) return NAN;
    std::sort(ns.begin(), ns.end());
    const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(ns.size())));
    return static_cast<double>(ns[std::clamp<size_t>(rank, 1, ns.size()) - 1]);
  }
};

using shmdict::bench::Figure;
using shmdict::bench::NotAvailable;

// ------------------------------------------------------------------------------ the servers

// A shmdict-bridge on 127.0.0.1:0 and on a Unix socket in a fresh /tmp directory (removed on
// destruction); `extra_args`: more flags.
class Bridge {
 public:
  explicit Bridge(std::vector<std::string> extra_args = {}) {
    char pattern[] = "/tmp/shmdict-bench-bridge-XXXXXX";
    if (mkdtemp(pattern) == nullptr) Fail("mkdtemp: " + std::string(std::strerror(errno)));
    dir_ = pattern;
    unix_address_ = "unix:" + dir_ + "/bridge.sock";
    shmdict::internal::BridgeLaunchOptions options;
    options.program = SHMDICT_BRIDGE_PATH;
    options.listen = {"127.0.0.1:0", unix_address_};
    options.extra_args = std::move(extra_args);
    options.ready_timeout = std::chrono::nanoseconds(kStartTimeoutNs);
    std::string error;
    launcher_ = shmdict::internal::BridgeLauncher::Start(options, &error);
    if (launcher_ == nullptr) {
      RemoveDir();
      Fail(error);
    }
  }
  // SIGTERM, not SIGKILL: a killed bridge would leave its record in the registry of live bridges
  // (/dev/shm/shmdict-bridges) until the next `shmdict ls`.
  ~Bridge() {
    launcher_->Terminate(shmdict::internal::DeadlineIn(std::chrono::seconds(10)));
    RemoveDir();
  }
  // The TCP address, "127.0.0.1:PORT".
  const std::string& address() const { return launcher_->address(); }
  // "unix:/tmp/shmdict-bench-bridge-XXXXXX/bridge.sock".
  const std::string& unix_address() const { return unix_address_; }
  pid_t pid() const { return launcher_->process().pid(); }

  // A channel of its own (not shared with other channels to the same address), so that each
  // subscriber is a separate HTTP/2 connection, as separate clients would be.
  std::shared_ptr<grpc::Channel> NewChannel(int id) const {
    grpc::ChannelArguments args;
    args.SetInt("shmdict.bench.channel", id);
    args.SetMaxReceiveMessageSize(-1);
    return grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
  }

 private:
  void RemoveDir() {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string dir_;
  std::string unix_address_;
  std::unique_ptr<shmdict::internal::BridgeLauncher> launcher_;
};

// A field of /proc/PID/status in KiB ("VmRSS", "VmHWM"); NAN if unreadable.
double ProcStatusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0) {
      return std::strtod(line.c_str() + field.size() + 1, nullptr);
    }
  }
  return NAN;
}

// A log that holds `changes` changes of these sizes without reaching half full: no snapshot is
// built during a measurement (subscribers that fall behind get changes, not a resync), and none
// is being built by the bridge's handle when the dict is unlinked (a snapshot segment created
// after the unlink would be left behind in /dev/shm).
uint64_t LogBytesFor(uint64_t changes) {
  uint64_t bytes = uint64_t{1} << 20;
  while (bytes < changes * 512) bytes <<= 1;
  return bytes;
}

shmdict::Dict OpenDict(const std::string& tag, uint64_t buffer_size) {
  shmdict::Options options;
  options.name = peers::NewName(tag);
  options.create_mode = shmdict::CreateMode::kMustCreate;
  options.buffer_size = buffer_size;
  shmdict::Result<shmdict::Dict> dict = shmdict::Dict::Open(options);
  if (!dict.ok()) Fail("open dict " + options.name + ": " + dict.status().ToString());
  return std::move(*dict);
}

// `address`: the bridge's TCP or Unix address.
std::unique_ptr<shmdict::RemoteDict> OpenRemote(const std::string& address,
                                                const shmdict::Dict& dict, bool mirror) {
  shmdict::RemoteOptions options;
  options.address = address;
  options.dict = dict.name();
  options.mirror = mirror;
  options.open_timeout = std::chrono::seconds(60);
  auto remote = shmdict::RemoteDict::Open(options);
  if (!remote.ok()) Fail("RemoteDict " + dict.name() + ": " + remote.status().ToString());
  return std::move(*remote);
}

template <typename T>
T Check(shmdict::Result<T> result, const char* what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.status().ToString());
  return std::move(*result);
}

#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Connection = std::unique_ptr<redisContext, ContextDeleter>;

Reply Command(redisContext* c, const char* format, ...) {
  va_list args;
  va_start(args, format);
  Reply r(static_cast<redisReply*>(redisvCommand(c, format, args)));
  va_end(args);
  if (!r) Fail(std::string("redis: ") + c->errstr);
  if (r->type == REDIS_REPLY_ERROR) Fail("redis: " + std::string(r->str, r->len));
  return r;
}

Reply GetReply(redisContext* c) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK) Fail(std::string("redis: ") + c->errstr);
  Reply r(static_cast<redisReply*>(raw));
  if (r->type == REDIS_REPLY_ERROR) Fail("redis: " + std::string(r->str, r->len));
  return r;
}

// redis-server on 127.0.0.1 at a free port (RedisLauncher), in a /dev/shm directory of the run,
// killed on destruction.
class Redis {
 public:
  Redis() : dir_(peers::NewName("redis")) {
    shmdict::internal::RedisLaunchOptions options;
    options.dir = "/dev/shm/" + dir_;
    std::filesystem::create_directory(options.dir);
    std::string error;
    server_ = shmdict::internal::RedisLauncher::Start(options, &error);
    if (server_ == nullptr) {
      peers::RemoveShmEntry(dir_);
      Fail(error);
    }
  }
  ~Redis() {
    server_->Kill();
    peers::RemoveShmEntry(dir_);
  }
  Connection Connect() const {
    Connection c(redisConnect("127.0.0.1", server_->port()));
    if (!c || c->err != 0) Fail("redis connect: " + std::string(c ? c->errstr : "no memory"));
    return c;
  }

 private:
  std::string dir_;
  std::unique_ptr<shmdict::internal::RedisLauncher> server_;
};
#endif  // SHMDICT_BRIDGE_BENCH_HAVE_REDIS

// ------------------------------------------------------------------------------- workloads

struct Fanout {
  Figure min, mean;
  double writer_rate = NAN;
  double max_lag_ns = 0;  // the slowest subscriber's delay after the writer's last Set
  bool snapshot_seen = false;
};

// The messages of a stream, each parsed on an arena that is reset before the next one, as a
// client that keeps no message would read them: a change's strings and value cost a pointer bump
// instead of a malloc and a free each. Reusing one message object alone does not avoid those:
// protobuf's Clear deletes a message's submessages (every Change's Value) when it is not on an
// arena. Perf showed malloc, free and ArenaStringPtr::Destroy at a third of the fan-out
// subscribers' samples before.
template <typename Message>
class ArenaMessages {
 public:
  ArenaMessages() : block_(kBlockBytes), arena_(Options(&block_)) {}
  // An empty message for the next Read; the one returned before is gone.
  Message* Next() {
    arena_.Reset();  // keeps the first block: no allocation for a message that fits it
    return google::protobuf::Arena::CreateMessage<Message>(&arena_);
  }

 private:
  static constexpr size_t kBlockBytes = size_t{4} << 20;  // a full message of 4,096 changes
  static google::protobuf::ArenaOptions Options(std::vector<char>* block) {
    google::protobuf::ArenaOptions options;
    options.initial_block = block->data();
    options.initial_block_size = block->size();
    return options;
  }
  std::vector<char> block_;
  google::protobuf::Arena arena_;
};

// One raw Watch stream from the dict's current revision: counts changes until it has `final`.
class Subscriber {
 public:
  Subscriber(const Bridge& bridge, int id, const std::string& dict)
      : stub_(shmdict::v1::Dict::NewStub(bridge.NewChannel(id))) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    stream_ = stub_->Watch(&context_);
    shmdict::v1::WatchRequest request;
    request.mutable_start()->set_dict(dict);
    request.mutable_start()->set_from_current(true);
    if (!stream_->Write(request)) Fail("Watch: the bridge closed the stream");
    shmdict::v1::WatchResponse first;  // from_current: a progress message at the current revision
    if (!stream_->Read(&first)) Fail("Watch: " + context_.debug_error_string());
  }
  ~Subscriber() {
    if (thread_.joinable()) thread_.join();
  }

  void Start(uint64_t final_revision, const std::atomic<int64_t>* first_write_ns) {
    thread_ = std::thread([this, final_revision, first_write_ns] {
      ArenaMessages<shmdict::v1::WatchResponse> messages;
      for (;;) {
        shmdict::v1::WatchResponse& message = *messages.Next();
        if (!stream_->Read(&message)) break;
        if (message.kind() == shmdict::v1::WatchResponse::KIND_CHANGES) {
          changes_ += static_cast<uint64_t>(message.changes_size());
        } else if (message.kind() == shmdict::v1::WatchResponse::KIND_SNAPSHOT) {
          snapshot_seen_ = true;
        }
        if (message.revision() >= final_revision && !message.more_fragments()) {
          done_ns_ = MonotonicNs() - first_write_ns->load();
          break;
        }
      }
      context_.TryCancel();
      stream_->Finish().ok();  // CANCELLED, as asked
    });
  }
  void Join() { thread_.join(); }
  int64_t done_ns() const { return done_ns_; }
  uint64_t changes() const { return changes_; }
  bool snapshot_seen() const { return snapshot_seen_; }

 private:
  std::unique_ptr<shmdict::v1::Dict::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<shmdict::v1::WatchRequest, shmdict::v1::WatchResponse>>
      stream_;
  std::thread thread_;
  int64_t done_ns_ = -1;
  uint64_t changes_ = 0;
  bool snapshot_seen_ = false;
};

// `batch`: changes per commit (1: single Sets; more: Update of that many keys), so that with
// batch > 1 the subscriber, not the local writer, sets the pace.
Fanout MeasureFanout(const Bridge& bridge, const Config& c, int subscribers, int run,
                     uint64_t batch = 1) {
  shmdict::Dict dict = OpenDict("fanout" + std::to_string(run), LogBytesFor(c.changes));
  std::vector<std::unique_ptr<Subscriber>> subs;
  for (int i = 0; i < subscribers; ++i) {
    subs.push_back(std::make_unique<Subscriber>(bridge, run * 100 + i, dict.name()));
  }
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < c.changes; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  const uint64_t final_revision = dict.revision() + (c.changes + batch - 1) / batch;
  std::atomic<int64_t> first_write_ns{0};
  for (auto& s : subs) s->Start(final_revision, &first_write_ns);
  shmdict::Value value;
  std::vector<std::pair<std::string, shmdict::Value>> items;
  const int64_t begin = MonotonicNs();
  first_write_ns.store(begin);
  for (uint64_t i = 0; i < c.changes; i += batch) {
    if (batch == 1) {
      value.assign(shmdict::ValueType::kBytes, values[i]);
      Check(dict.Set(keys[i], value), "fan-out Set");
      continue;
    }
    items.clear();
    for (uint64_t j = i; j < std::min(c.changes, i + batch); ++j) {
      items.emplace_back(keys[j], shmdict::Value(shmdict::ValueType::kBytes, values[j]));
    }
    Check(dict.Update(items), "fan-out Update");
  }
  const int64_t written = MonotonicNs() - begin;
  Fanout f;
  f.writer_rate = static_cast<double>(c.changes) / (static_cast<double>(written) * 1e-9);
  double sum = 0, min = INFINITY;
  for (auto& s : subs) {
    s->Join();
    if (s->done_ns() <= 0) Fail("a Watch subscriber ended before the final revision");
    const double rate = static_cast<double>(c.changes) / (static_cast<double>(s->done_ns()) * 1e-9);
    sum += rate;
    min = std::min(min, rate);
    f.max_lag_ns = std::max(f.max_lag_ns, static_cast<double>(s->done_ns() - written));
    f.snapshot_seen = f.snapshot_seen || s->snapshot_seen();
  }
  f.min.value = min;
  f.mean.value = sum / subscribers;
  return f;
}

// Stage breakdown: the local writer alone (no subscriber, no bridge attached), N Sets.
double MeasureWriterAlone(const Config& c) {
  shmdict::Dict dict = OpenDict("writer", LogBytesFor(c.changes));
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < c.changes; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  shmdict::Value value;
  const int64_t begin = MonotonicNs();
  for (uint64_t i = 0; i < c.changes; ++i) {
    value.assign(shmdict::ValueType::kBytes, values[i]);
    Check(dict.Set(keys[i], value), "writer Set");
  }
  return static_cast<double>(c.changes) / (static_cast<double>(MonotonicNs() - begin) * 1e-9);
}

// ------------------------------------------------------------------- many streams of one dict

// 64-bit FNV-1a over a change as a stream delivered it: streams that fold the same changes in the
// same order end with the same value as the writer's fold of what it committed.
uint64_t Fold(uint64_t hash, uint64_t revision, std::string_view key, std::string_view value) {
  auto mix = [&hash](const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
  };
  mix(&revision, sizeof revision);
  mix(key.data(), key.size());
  mix(value.data(), value.size());
  return hash;
}
constexpr uint64_t kFoldSeed = 0xcbf29ce484222325ULL;

class Crowd;

// One Watch stream of a Crowd as a callback reactor (gRPC's threads run it; no thread of its
// own): starts from the dict's current revision, checks every message for gaps, repeats and
// resyncs, folds the changes, and cancels itself once its final revision is complete.
class CrowdStream final
    : public grpc::ClientBidiReactor<shmdict::v1::WatchRequest, shmdict::v1::WatchResponse> {
 public:
  CrowdStream(Crowd* crowd, shmdict::v1::Dict::Stub* stub, const std::string& dict);
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;
  void Cancel() { context_.TryCancel(); }

  // Read only after the Crowd saw every stream done.
  uint64_t after() const { return after_; }
  uint64_t complete() const { return complete_; }
  uint64_t changes() const { return changes_; }
  uint64_t fold() const { return fold_; }
  bool snapshot_seen() const { return snapshot_seen_; }
  const std::string& problem() const { return problem_; }

 private:
  void Problem(std::string what) {
    if (problem_.empty()) problem_ = std::move(what);
  }

  Crowd* const crowd_;
  grpc::ClientContext context_;
  shmdict::v1::WatchRequest request_;
  shmdict::v1::WatchResponse response_;
  bool started_ = false;
  uint64_t after_ = 0, complete_ = 0, last_ = 0, changes_ = 0, fold_ = kFoldSeed;
  bool snapshot_seen_ = false;
  std::string problem_;  // the first gap, repeat or error seen; empty: none
};

// `count` Watch streams of one dict over `channels` connections to the bridge, opened with gRPC's
// callback API. Start, wait until every stream is started (its first message, a progress message
// at the current revision, came), commit, then wait until every stream is done.
class Crowd {
 public:
  Crowd(const Bridge& bridge, const std::string& dict, uint64_t count, uint64_t channels) {
    for (uint64_t i = 0; i < channels; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("shmdict.bench.channel", 10'000 + static_cast<int>(i));  // a connection each
      args.SetMaxReceiveMessageSize(-1);
      // Without BDP probing each stream's receive window stays at HTTP/2's 64 KiB. With it, the
      // windows of thousands of streams grew until gigabytes waited in this process for the
      // callbacks, and the bridge's keepalive ping (10 s to answer) queued behind them: the
      // bridge then reset the connection.
      args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
      stubs_.push_back(shmdict::v1::Dict::NewStub(
          grpc::CreateCustomChannel(bridge.address(), grpc::InsecureChannelCredentials(), args)));
    }
    for (uint64_t i = 0; i < count; ++i) {
      streams_.push_back(std::make_unique<CrowdStream>(this, stubs_[i % channels].get(), dict));
    }
  }
  // Cancels what still runs (a measurement that failed half-way) and waits for every stream's
  // OnDone: gRPC uses a reactor until then. Streams still not done after a minute are leaked
  // rather than freed under gRPC's feet.
  ~Crowd() {
    for (auto& s : streams_) s->Cancel();
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return done_ == streams_.size(); })) {
      for (auto& s : streams_) static_cast<void>(s.release());
    }
  }

  void Await(const char* what, uint64_t Crowd::*counter, int64_t timeout_ns) {
    std::unique_lock lock(mu_);
    const bool reached = cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
                                      [&] { return this->*counter == streams_.size(); });
    if (!reached) {
      Fail(shmdict::bench::Format("%.0f", static_cast<double>(this->*counter)) + " of " +
           std::to_string(streams_.size()) + " Watch streams " + what + " in time");
    }
  }
  void AwaitStarted() { Await("started", &Crowd::started_, 600 * int64_t{1'000'000'000}); }
  void AwaitDone() { Await("ended", &Crowd::done_, 1800 * int64_t{1'000'000'000}); }

  void set_final(uint64_t revision) { final_.store(revision, std::memory_order_release); }
  uint64_t final_revision() const { return final_.load(std::memory_order_acquire); }
  const std::vector<std::unique_ptr<CrowdStream>>& streams() const { return streams_; }

  void Started() { Count(&Crowd::started_); }
  void Done() { Count(&Crowd::done_); }

 private:
  void Count(uint64_t Crowd::*counter) {
    std::lock_guard lock(mu_);
    if (++(this->*counter) == streams_.size()) cv_.notify_all();
  }

  std::vector<std::unique_ptr<shmdict::v1::Dict::Stub>> stubs_;
  std::vector<std::unique_ptr<CrowdStream>> streams_;
  std::atomic<uint64_t> final_{UINT64_MAX};
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t started_ = 0;  // guarded by mu_
  uint64_t done_ = 0;     // guarded by mu_
};

CrowdStream::CrowdStream(Crowd* crowd, shmdict::v1::Dict::Stub* stub, const std::string& dict)
    : crowd_(crowd) {
  context_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(40));
  request_.mutable_start()->set_dict(dict);
  request_.mutable_start()->set_from_current(true);
  stub->async()->Watch(&context_, this);
  StartWrite(&request_);
  StartRead(&response_);
  StartCall();
}

void CrowdStream::OnReadDone(bool ok) {
  if (!ok) {  // the bridge ended the stream: OnDone says why
    if (!started_) crowd_->Started();
    return;
  }
  using shmdict::v1::WatchResponse;
  if (!started_) {
    started_ = true;
    if (response_.kind() != WatchResponse::KIND_PROGRESS)
      Problem("the first message is no progress");
    after_ = complete_ = last_ = response_.revision();
    crowd_->Started();
  } else {
    if (response_.kind() == WatchResponse::KIND_SNAPSHOT) {
      snapshot_seen_ = true;
      Problem("a resync snapshot at " + std::to_string(response_.snapshot_revision()));
    }
    if (response_.revision() < complete_) Problem("the revision field went back");
    for (const shmdict::v1::Change& change : response_.changes()) {
      if (change.revision() <= complete_ ||
          (change.revision() != last_ && change.revision() != last_ + 1)) {
        Problem("change at revision " + std::to_string(change.revision()) + " after " +
                std::to_string(last_));
      }
      last_ = change.revision();
      fold_ = Fold(fold_, change.revision(), change.key(), change.value().data());
      ++changes_;
    }
    if (!response_.more_fragments()) complete_ = std::max(complete_, response_.revision());
  }
  if (complete_ >= crowd_->final_revision()) {
    context_.TryCancel();  // done: OnDone follows with CANCELLED
    return;
  }
  StartRead(&response_);
}

void CrowdStream::OnDone(const grpc::Status& status) {
  if (complete_ < crowd_->final_revision()) {
    Problem("the stream ended at revision " + std::to_string(complete_) + ": " +
            status.error_message());
  }
  crowd_->Done();
}

struct ManyStreams {
  uint64_t streams = 0;
  Figure gap_free;      // streams that got every change, in order, as the writer committed them
  Figure peak_rss_kib;  // the bridge's VmHWM
  Figure idle_kib;      // (VmRSS with the idle streams - VmRSS before) / streams
  double rss_before_kib = NAN, rss_idle_kib = NAN;
  double seconds = NAN;  // from the first write until every stream was done
  std::string first_problem;
};

// The crowd: `streams` Watch streams of one dict on a bridge of their own (its VmHWM is
// this workload's alone) while a local writer commits `stream_changes` single-key Sets. One more
// stream is opened first, so that the dict's handle and pump exist before the "before" reading.
ManyStreams MeasureManyStreams(const Config& c) {
  ManyStreams m;
  m.streams = c.streams;
  Bridge bridge({"--max-waiting-calls", std::to_string(c.streams + 64)});
  shmdict::Dict dict = OpenDict("crowd", LogBytesFor(c.stream_changes));
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < c.stream_changes; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  const uint64_t base = dict.revision();
  const uint64_t final_revision = base + c.stream_changes;
  {
    Crowd first(bridge, dict.name(), 1, 1);
    first.set_final(final_revision);
    first.AwaitStarted();
    peers::SleepNs(200'000'000);  // the bridge's allocations settle
    m.rss_before_kib = ProcStatusKiB(bridge.pid(), "VmRSS");
    Crowd crowd(bridge, dict.name(), c.streams, c.stream_channels);
    crowd.set_final(final_revision);
    crowd.AwaitStarted();
    peers::SleepNs(200'000'000);
    m.rss_idle_kib = ProcStatusKiB(bridge.pid(), "VmRSS");

    uint64_t expected = kFoldSeed;
    shmdict::Value value;
    const int64_t begin = MonotonicNs();
    for (uint64_t i = 0; i < c.stream_changes; ++i) {
      value.assign(shmdict::ValueType::kBytes, values[i]);
      const uint64_t revision = Check(dict.Set(keys[i], value), "crowd Set");
      if (revision != base + i + 1) Fail("crowd Set: another writer committed to the dict");
      expected = Fold(expected, revision, keys[i], values[i]);
    }
    crowd.AwaitDone();
    first.AwaitDone();
    m.seconds = static_cast<double>(MonotonicNs() - begin) * 1e-9;
    uint64_t gap_free = 0;
    for (const auto& s : crowd.streams()) {
      std::string problem = s->problem();
      if (problem.empty() && s->after() != base) {
        problem =
            "started at revision " + std::to_string(s->after()) + ", not " + std::to_string(base);
      }
      if (problem.empty() && (s->changes() != c.stream_changes || s->fold() != expected)) {
        problem = std::to_string(s->changes()) + " changes that differ from the writer's";
      }
      if (problem.empty()) {
        ++gap_free;
      } else if (m.first_problem.empty()) {
        m.first_problem = problem;
      }
    }
    m.gap_free.value = static_cast<double>(gap_free);
  }
  m.peak_rss_kib.value = ProcStatusKiB(bridge.pid(), "VmHWM");
  // Clamped at 0: with few streams the bridge may reuse memory it freed before the reading.
  m.idle_kib.value =
      std::max(0.0, (m.rss_idle_kib - m.rss_before_kib) / static_cast<double>(c.streams));
  return m;
}

struct OpStats {
  Figure rate, p50, p99;
};

template <typename Op>
OpStats TimeOps(uint64_t n, Op&& op) {
  Latencies lat;
  lat.ns.reserve(n);
  const int64_t begin = MonotonicNs();
  int64_t last = begin;
  for (uint64_t i = 0; i < n; ++i) {
    op(i);
    const int64_t now = MonotonicNs();
    lat.ns.push_back(now - last);
    last = now;
  }
  OpStats s;
  s.rate.value = static_cast<double>(n) / (static_cast<double>(last - begin) * 1e-9);
  s.p50.value = lat.Percentile(50);
  s.p99.value = lat.Percentile(99);
  return s;
}

struct Unary {
  OpStats set, get;
};

Unary MeasureBridgeUnary(const std::string& address, const Config& c) {
  shmdict::Dict dict = OpenDict("unary", LogBytesFor(c.ops));
  auto remote = OpenRemote(address, dict, /*mirror=*/false);
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < c.ops; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  Unary u;
  shmdict::Value value;
  u.set = TimeOps(c.ops, [&](uint64_t i) {
    value.assign(shmdict::ValueType::kBytes, values[i]);
    Check(remote->Set(keys[i], value), "RemoteDict::Set");
  });
  u.get = TimeOps(c.ops, [&](uint64_t i) {
    if (!Check(remote->Get(keys[i], &value), "RemoteDict::Get") || value.data() != values[i]) {
      Fail("RemoteDict::Get " + keys[i] + ": wrong value");
    }
  });
  return u;
}

Figure MeasureBridgeBatch(const Bridge& bridge, const Config& c) {
  shmdict::Dict dict = OpenDict("batch", LogBytesFor(c.batch_changes));
  auto stub = shmdict::v1::Dict::NewStub(bridge.NewChannel(-1));
  const uint64_t calls = std::max<uint64_t>(1, c.batch_changes / kBatchSize);
  std::vector<shmdict::v1::BatchRequest> requests(calls);
  for (uint64_t call = 0; call < calls; ++call) {
    requests[call].set_dict(dict.name());
    for (uint64_t j = 0; j < kBatchSize; ++j) {
      const uint64_t i = call * kBatchSize + j;
      shmdict::v1::Mutation* m = requests[call].add_mutations();
      m->set_op(shmdict::v1::OP_SET);
      m->set_key(Key(i));
      m->mutable_value()->set_type(static_cast<uint32_t>(shmdict::ValueType::kBytes));
      m->mutable_value()->set_data(ValueFor(i));
    }
  }
  static_assert(kBatchWindow == 1, "one call at a time: a sequential client");
  const int64_t begin = MonotonicNs();
  for (const shmdict::v1::BatchRequest& request : requests) {
    grpc::ClientContext context;
    shmdict::v1::WriteResponse response;
    const grpc::Status status = stub->Batch(&context, request, &response);
    if (!status.ok()) Fail("Batch: " + status.error_message());
  }
  const int64_t elapsed = MonotonicNs() - begin;
  if (Check(dict.Size(), "Size") != calls * kBatchSize) Fail("Batch: entries missing");
  return Figure{static_cast<double>(calls * kBatchSize) / (static_cast<double>(elapsed) * 1e-9)};
}

struct Propagation {
  Figure from_call_p50, from_call_p99, from_return_p50, from_return_p99;
  double set_alone_p50 = NAN, set_alone_p99 = NAN;  // the same Sets on a dict nobody watches
};

Propagation Summarize(Latencies& from_call, Latencies& from_return) {
  return {Figure{from_call.Percentile(50)}, Figure{from_call.Percentile(99)},
          Figure{from_return.Percentile(50)}, Figure{from_return.Percentile(99)}};
}

// `baseline`: also time the same Sets on a dict nobody watches (set_alone_*).
Propagation MeasureMirrorLatency(const std::string& address, const Config& c, bool baseline) {
  Latencies alone;
  if (baseline) {
    shmdict::Dict quiet = OpenDict("unwatched", LogBytesFor(c.samples));
    shmdict::Value value;
    for (uint64_t i = 0; i < c.samples; ++i) {
      value.assign(shmdict::ValueType::kBytes, ValueFor(i));
      const int64_t call = MonotonicNs();
      Check(quiet.Set(Key(i), value), "unwatched Set");
      alone.ns.push_back(MonotonicNs() - call);
      peers::SleepNs(c.pause_ns);
    }
  }
  shmdict::Dict dict = OpenDict("mirror", LogBytesFor(c.samples));
  auto remote = OpenRemote(address, dict, /*mirror=*/true);
  Latencies from_call, from_return;
  shmdict::Value value;
  for (uint64_t i = 0; i < c.samples; ++i) {
    value.assign(shmdict::ValueType::kBytes, ValueFor(i));
    const std::string key = Key(i);
    const int64_t call = MonotonicNs();
    const uint64_t revision = Check(dict.Set(key, value), "mirror Set");
    const int64_t returned = MonotonicNs();
    // Blocks (RemoteDict::WaitForChange, a condition variable the mirror's reader signals), as
    // the Redis row blocks in its reply read: a waiter spinning on revision() took one of the two
    // vCPUs from the bridge and the mirror's reader, and put a scheduler time slice (~3.5 ms) into
    // the p99.
    const int64_t deadline = returned + 10'000'000'000;
    while (remote->revision() < revision) {
      const int64_t left = deadline - MonotonicNs();
      if (left <= 0) Fail("the mirror did not reach a revision within 10 s");
      remote->WaitForChange(remote->revision(), std::chrono::nanoseconds(left)).ok();
    }
    const int64_t seen = MonotonicNs();
    from_call.ns.push_back(seen - call);
    from_return.ns.push_back(seen - returned);
    peers::SleepNs(c.pause_ns);
  }
  Propagation p = Summarize(from_call, from_return);
  p.set_alone_p50 = alone.Percentile(50);
  p.set_alone_p99 = alone.Percentile(99);
  return p;
}

struct MirrorReads {
  Figure remote, map;
};

// Best of three passes over all keys in a random order.
template <typename Op>
double BestRate(const std::vector<uint32_t>& order, Op&& op) {
  double best = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const int64_t begin = MonotonicNs();
    for (uint32_t i : order) op(i);
    const double elapsed = static_cast<double>(MonotonicNs() - begin) * 1e-9;
    best = std::max(best, static_cast<double>(order.size()) / elapsed);
  }
  return best;
}

MirrorReads MeasureMirrorReads(const Bridge& bridge, const Config& c) {
  shmdict::Dict dict = OpenDict("reads", LogBytesFor(c.keys));
  std::vector<std::string> keys, values;
  std::unordered_map<std::string, std::string> map;
  std::vector<shmdict::Change> batch;
  for (uint64_t i = 0; i < c.keys; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
    map.emplace(keys.back(), values.back());
    shmdict::Change change;
    change.key = keys.back();
    change.value = shmdict::Value::Bytes(values.back());
    batch.push_back(std::move(change));
    if (batch.size() == 1000 || i + 1 == c.keys) {
      Check(dict.Apply(batch), "Apply");
      batch.clear();
    }
  }
  auto remote = OpenRemote(bridge.address(), dict, /*mirror=*/true);
  if (remote->revision() < dict.revision()) Fail("the mirror opened behind the dict");
  const std::vector<uint32_t> order = shmdict::bench::MakeAccessOrder(c.keys).order;
  MirrorReads r;
  shmdict::Value value;
  r.remote.value = BestRate(order, [&](uint32_t i) {
    if (!Check(remote->Get(keys[i], &value), "mirror Get") || value.data().size() != kValueBytes) {
      Fail("mirror Get " + keys[i] + ": wrong value");
    }
  });
  std::string out;
  r.map.value = BestRate(order, [&](uint32_t i) {
    auto it = map.find(keys[i]);
    if (it == map.end()) Fail("map lookup " + keys[i] + ": missing");
    out.assign(it->second);
    if (out.size() != kValueBytes) Fail("map lookup: wrong value");
  });
  return r;
}

#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
Unary MeasureRedisUnary(const Redis& redis, const Config& c) {
  Connection ctx = redis.Connect();
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < c.ops; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  Unary u;
  u.set = TimeOps(c.ops, [&](uint64_t i) {
    Reply r = Command(ctx.get(), "SET %b %b", keys[i].data(), keys[i].size(), values[i].data(),
                      values[i].size());
    if (r->type != REDIS_REPLY_STATUS) Fail("redis SET: unexpected reply");
  });
  u.get = TimeOps(c.ops, [&](uint64_t i) {
    Reply r = Command(ctx.get(), "GET %b", keys[i].data(), keys[i].size());
    if (r->type != REDIS_REPLY_STRING || std::string_view(r->str, r->len) != values[i]) {
      Fail("redis GET " + keys[i] + ": wrong value");
    }
  });
  Command(ctx.get(), "FLUSHALL");
  return u;
}

Figure MeasureRedisMset(const Redis& redis, const Config& c) {
  Connection ctx = redis.Connect();
  const uint64_t calls = std::max<uint64_t>(1, c.batch_changes / kBatchSize);
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < calls * kBatchSize; ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  int in_flight = 0;
  auto take_reply = [&] {
    if (GetReply(ctx.get())->type != REDIS_REPLY_STATUS) Fail("redis MSET: unexpected reply");
    --in_flight;
  };
  const int64_t begin = MonotonicNs();
  for (uint64_t call = 0; call < calls; ++call) {
    argv.assign(1, "MSET");
    lengths.assign(1, 4);
    for (uint64_t i = call * kBatchSize; i < (call + 1) * kBatchSize; ++i) {
      argv.push_back(keys[i].data());
      lengths.push_back(keys[i].size());
      argv.push_back(values[i].data());
      lengths.push_back(values[i].size());
    }
    if (redisAppendCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(),
                               lengths.data()) != REDIS_OK) {
      Fail(std::string("redis MSET: ") + ctx->errstr);
    }
    if (++in_flight >= kMsetWindow) take_reply();
  }
  while (in_flight > 0) take_reply();
  const int64_t elapsed = MonotonicNs() - begin;
  Reply size = Command(ctx.get(), "DBSIZE");
  if (static_cast<uint64_t>(size->integer) != calls * kBatchSize) Fail("MSET: keys missing");
  Command(ctx.get(), "FLUSHALL");
  return Figure{static_cast<double>(calls * kBatchSize) / (static_cast<double>(elapsed) * 1e-9)};
}

Propagation MeasureRedisNotify(const Redis& redis, const Config& c) {
  Connection ctx = redis.Connect();
  Connection sub = redis.Connect();
  Command(ctx.get(), "CONFIG SET notify-keyspace-events KA");
  Reply subscribed = Command(sub.get(), "PSUBSCRIBE __keyspace@0__:key-*");
  Latencies from_call, from_return;
  for (uint64_t i = 0; i < c.samples; ++i) {
    const std::string key = Key(i), value = ValueFor(i);
    const int64_t call = MonotonicNs();
    Reply r = Command(ctx.get(), "SET %b %b", key.data(), key.size(), value.data(), value.size());
    const int64_t returned = MonotonicNs();
    Reply note = GetReply(sub.get());  // ["pmessage", pattern, channel, "set"]
    const int64_t seen = MonotonicNs();
    if (note->type != REDIS_REPLY_ARRAY || note->elements != 4 ||
        std::string_view(note->element[2]->str, note->element[2]->len) != "__keyspace@0__:" + key) {
      Fail("redis keyspace notification: unexpected message for " + key);
    }
    from_call.ns.push_back(seen - call);
    from_return.ns.push_back(seen - returned);
    peers::SleepNs(c.pause_ns);
  }
  Command(ctx.get(), "CONFIG SET notify-keyspace-events %s", "");
  Command(ctx.get(), "FLUSHALL");
  return Summarize(from_call, from_return);
}
#endif  // SHMDICT_BRIDGE_BENCH_HAVE_REDIS

// --------------------------------------------------------------------------------- etcd 3.4

struct EtcdFigures {
  OpStats put, range;
  Figure fanout;           // changes/s to one watcher, a writer committing kBatchSize Puts per Txn
  Figure propagation_p50;  // a Put until its watch event, from the call
};

EtcdFigures EtcdNotAvailable(const std::string& why) {
  const Figure na = NotAvailable(why);
  return {{na, na, na}, {na, na, na}, na, na};
}

#if SHMDICT_BRIDGE_BENCH_HAVE_ETCD
void CheckGrpc(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) Fail(what + ": " + status.error_message());
}

// A raw etcd Watch stream on every key that starts with `prefix`, from now on.
class EtcdWatch {
 public:
  EtcdWatch(const std::shared_ptr<grpc::Channel>& channel, const std::string& prefix)
      : stub_(etcdserverpb::Watch::NewStub(channel)) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
    stream_ = stub_->Watch(&context_);
    std::string end = prefix;
    ++end.back();  // the range of a prefix ends where its last byte is one higher
    etcdserverpb::WatchRequest request;
    request.mutable_create_request()->set_key(prefix);
    request.mutable_create_request()->set_range_end(end);
    if (!stream_->Write(request)) Fail("etcd Watch: the stream closed");
    etcdserverpb::WatchResponse created;
    if (!stream_->Read(&created) || !created.created()) Fail("etcd Watch: not created");
  }
  ~EtcdWatch() {
    context_.TryCancel();
    stream_->Finish().ok();  // CANCELLED, as asked
  }
  // The next response with events; fails at the stream's end.
  // Valid until the next call.
  const etcdserverpb::WatchResponse& Next() {
    // On an arena, as the shmdict subscribers read theirs.
    etcdserverpb::WatchResponse* response = nullptr;
    do {
      response = responses_.Next();
      if (!stream_->Read(response)) Fail("etcd Watch ended: " + context_.debug_error_string());
    } while (response->events_size() == 0);
    return *response;
  }

 private:
  std::unique_ptr<etcdserverpb::Watch::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<etcdserverpb::WatchRequest, etcdserverpb::WatchResponse>>
      stream_;
  ArenaMessages<etcdserverpb::WatchResponse> responses_;
};

// A private 1-member etcd with fsync on (etcd's default, what a production member pays per
// commit): sequential Put and (linearizable) Range, a watcher's rate, a Put's propagation.
EtcdFigures MeasureEtcd(const Config& c) {
  shmdict::internal::EtcdClusterOptions options;
  options.fsync = true;
  options.request_timeout = std::chrono::seconds(60);
  std::string error;
  auto cluster = shmdict::internal::EtcdCluster::Start(1, options, &error);
  if (cluster == nullptr) Fail(error);
  auto kv = etcdserverpb::KV::NewStub(cluster->Channel(0));
  EtcdFigures e;
  std::vector<std::string> keys, values;
  for (uint64_t i = 0; i < std::max(c.etcd_ops, c.etcd_changes); ++i) {
    keys.push_back(Key(i));
    values.push_back(ValueFor(i));
  }
  etcdserverpb::PutRequest put;
  etcdserverpb::PutResponse put_response;
  e.put = TimeOps(c.etcd_ops, [&](uint64_t i) {
    grpc::ClientContext context;
    put.set_key("/unary/" + keys[i]);
    put.set_value(values[i]);
    CheckGrpc(kv->Put(&context, put, &put_response), "etcd Put");
  });
  etcdserverpb::RangeRequest range;
  etcdserverpb::RangeResponse range_response;
  e.range = TimeOps(c.etcd_ops, [&](uint64_t i) {
    grpc::ClientContext context;
    range.set_key("/unary/" + keys[i]);
    CheckGrpc(kv->Range(&context, range, &range_response), "etcd Range");
    if (range_response.kvs_size() != 1 || range_response.kvs(0).value() != values[i]) {
      Fail("etcd Range " + keys[i] + ": wrong value");
    }
  });

  {  // fan-out: the watcher on a thread of its own, the writer here
    EtcdWatch watch(cluster->Channel(0), "/fan/");
    std::atomic<int64_t> first_write_ns{0}, done_ns{0};
    std::string failure;  // the watcher's; a throw on its thread would end the process
    std::thread watcher([&] {
      try {
        uint64_t seen = 0;
        while (seen < c.etcd_changes) seen += static_cast<uint64_t>(watch.Next().events_size());
        done_ns.store(MonotonicNs());
      } catch (const BenchError& e) {
        failure = e.what();
      }
    });
    first_write_ns.store(MonotonicNs());
    for (uint64_t first = 0; first < c.etcd_changes; first += kBatchSize) {
      etcdserverpb::TxnRequest txn;
      for (uint64_t i = first; i < std::min(c.etcd_changes, first + kBatchSize); ++i) {
        auto* request = txn.add_success()->mutable_request_put();
        request->set_key("/fan/" + keys[i]);
        request->set_value(values[i]);
      }
      etcdserverpb::TxnResponse response;
      CheckGrpc(cluster->Txn(txn, &response), "etcd Txn");
    }
    watcher.join();
    if (!failure.empty()) Fail(failure);
    e.fanout.value = static_cast<double>(c.etcd_changes) /
                     (static_cast<double>(done_ns.load() - first_write_ns.load()) * 1e-9);
  }

  EtcdWatch watch(cluster->Channel(0), "/lat/");
  Latencies from_call;
  for (uint64_t i = 0; i < c.etcd_samples; ++i) {
    const std::string key = "/lat/" + Key(i);
    grpc::ClientContext context;
    put.set_key(key);
    put.set_value(ValueFor(i));
    const int64_t call = MonotonicNs();
    CheckGrpc(kv->Put(&context, put, &put_response), "etcd Put");
    const etcdserverpb::WatchResponse& events = watch.Next();
    from_call.ns.push_back(MonotonicNs() - call);
    if (events.events_size() != 1 || events.events(0).kv().key() != key) {
      Fail("etcd Watch: unexpected event for " + key);
    }
    peers::SleepNs(c.pause_ns);
  }
  e.propagation_p50.value = from_call.Percentile(50);
  return e;
}
#endif  // SHMDICT_BRIDGE_BENCH_HAVE_ETCD

// ---------------------------------------------------------------------------------- report

enum class Better { kHigher, kLower };

struct Row {
  std::string id;
  std::string workload;
  std::string unit;  // "changes/s", "ops/s", "ns"
  Better better = Better::kHigher;
  Figure shmdict;
  std::string peer_name;  // "redis", "unordered_map", "" (no peer)
  Figure peer;
  // The target, if any: on the shmdict figure (target_value) or on the ratio (target_ratio).
  std::string target;
  std::optional<double> target_value, target_ratio;
  // A correctness check, not a timing target: PASS or FAIL on target_value (and a FAIL fails the
  // run).
  bool check = false;

  // shmdict's advantage: > 1 means shmdict is faster (higher rate or lower latency).
  double Ratio() const {
    if (!shmdict.ok() || !peer.ok()) return NAN;
    return better == Better::kHigher ? shmdict.value / peer.value : peer.value / shmdict.value;
  }
  std::string Result() const {
    if (target.empty()) return "-";
    if (target_ratio)
      return std::isfinite(Ratio()) ? (Ratio() >= *target_ratio ? "PASS" : "MISS") : "n/a";
    if (!shmdict.ok()) return check ? "FAIL" : "n/a";
    const bool pass =
        better == Better::kHigher ? shmdict.value >= *target_value : shmdict.value <= *target_value;
    return pass ? "PASS" : (check ? "FAIL" : "MISS");
  }
};

// The ids every report has (the smoke test's check).
const std::vector<std::string>& RowIds() {
  static const std::vector<std::string> ids = {"watch_fanout_1",
                                               "watch_fanout_1_batched",
                                               "watch_fanout_8_min",
                                               "watch_fanout_8_mean",
                                               "unary_set_rate",
                                               "unary_set_p50",
                                               "unary_set_p99",
                                               "unary_get_rate",
                                               "unary_get_p50",
                                               "unary_get_p99",
                                               "batch_write_rate",
                                               "propagation_call_p50",
                                               "propagation_call_p99",
                                               "propagation_return_p50",
                                               "propagation_return_p99",
                                               "mirror_read_rate",
                                               "unary_set_p50_unix",
                                               "unary_get_p50_unix",
                                               "propagation_call_p50_unix",
                                               "watch_crowd_gap_free",
                                               "watch_crowd_peak_rss",
                                               "watch_crowd_idle_stream",
                                               "etcd_put_p50",
                                               "etcd_range_p50",
                                               "etcd_watch_fanout",
                                               "etcd_propagation_p50"};
  return ids;
}

// The shared format, and a count of streams as a count.
std::string FigureText(const Figure& f, const std::string& unit) {
  if (unit == "streams" && f.ok()) return shmdict::bench::Format("%.0f", f.value) + " " + unit;
  return shmdict::bench::FormatFigure(f, unit);
}

std::string Markdown(const std::vector<Row>& rows) {
  std::string md =
      "| workload | shmdict / bridge | peer | ratio | target | result |\n"
      "|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    const double ratio = r.Ratio();
    md += "| " + r.workload + " | " + FigureText(r.shmdict, r.unit) + " | " +
          (r.peer_name.empty() ? "-" : r.peer_name + ": " + FigureText(r.peer, r.unit)) + " | " +
          (std::isfinite(ratio) ? shmdict::bench::Format("%.2f", ratio) : "-") + " | " +
          (r.target.empty() ? "-" : r.target) + " | " + r.Result() + " |\n";
  }
  return md;
}

using shmdict::bench::FigureJson;

json ReportJson(const std::vector<Row>& rows, const json& meta) {
  json out{{"meta", meta}, {"rows", json::array()}};
  for (const Row& r : rows) {
    const double ratio = r.Ratio();
    out["rows"].push_back(json{{"id", r.id},
                               {"workload", r.workload},
                               {"unit", r.unit},
                               {"shmdict", FigureJson(r.shmdict)},
                               {"peer_name", r.peer_name},
                               {"peer", FigureJson(r.peer)},
                               {"ratio", std::isfinite(ratio) ? json(ratio) : json(nullptr)},
                               {"target", r.target},
                               {"result", r.Result()}});
  }
  return out;
}

// Problems of a report: missing rows, figures that are neither > 0 nor n/a with a reason.
std::vector<std::string> CheckJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {"cannot read " + path};
  json report = json::parse(in, nullptr, false);
  if (report.is_discarded() || !report.contains("rows")) return {path + ": not a report"};
  std::vector<std::string> problems;
  // Memory per idle stream may be 0 KiB (the bridge reused memory it had freed); nothing else.
  auto figure_ok = [](const json& f, bool zero_ok = false) {
    return shmdict::bench::FigureJsonOk(f, zero_ok);
  };
  for (const std::string& id : RowIds()) {
    auto it = std::find_if(report["rows"].begin(), report["rows"].end(),
                           [&](const json& row) { return row.value("id", "") == id; });
    if (it == report["rows"].end()) {
      problems.push_back("row " + id + " missing");
      continue;
    }
    if (!it->contains("shmdict") || !figure_ok((*it)["shmdict"], it->value("unit", "") == "KiB") ||
        !(*it)["shmdict"].contains("value") || (*it)["shmdict"]["value"].is_null()) {
      problems.push_back("row " + id + ": no shmdict figure");
    }
    if (!(*it)["peer_name"].get<std::string>().empty() && !figure_ok((*it)["peer"])) {
      problems.push_back("row " + id + ": peer figure neither > 0 nor n/a with a reason");
    }
  }
  return problems;
}

// --------------------------------------------------------------------------------- driver

std::optional<int> ParseFlags(int argc, char** argv, Config* c) {
  using shmdict::bench::AddCountFlag;
  CLI::App app{
      "Measures shmdict-bridge (Watch fan-out, unary and batched writes, mirror latency and "
      "reads) against Redis on loopback; writes bridge.md (and JSON with --json). "
      "`shmdict_bridge_bench --check-json FILE` checks a report instead.",
      "shmdict_bridge_bench"};
  uint64_t changes = 0, samples = 0, ops = 0, keys = 0, batch_changes = 0, streams = 0,
           stream_changes = 0, stream_channels = 0, etcd_ops = 0, etcd_changes = 0,
           etcd_samples = 0;
  bool changes_given = false, samples_given = false, ops_given = false, keys_given = false,
       batch_given = false, streams_given = false, stream_changes_given = false,
       stream_channels_given = false, etcd_ops_given = false, etcd_changes_given = false,
       etcd_samples_given = false;
  app.add_flag("--quick", c->quick, "smoke run: small sizes (explicit flags win)");
  app.add_option("--out", c->out_dir, "where bridge.md goes (default: none)");
  app.add_option("--json", c->json_path,
                 "also write the report as JSON to this file (the input of --check-json; not "
                 "committed: e.g. build/bridge.json)");
  AddCountFlag(app, "--changes", &changes, &changes_given,
               "Sets of the Watch fan-out (default 500k)");
  AddCountFlag(app, "--samples", &samples, &samples_given,
               "propagation samples per system (default 2000)");
  AddCountFlag(app, "--ops", &ops, &ops_given, "unary Sets and Gets per system (default 20k)");
  AddCountFlag(app, "--batch-changes", &batch_changes, &batch_given,
               "changes of the batched writes (default 200k)");
  AddCountFlag(app, "--keys", &keys, &keys_given, "keys of the mirror reads (default 100k)");
  AddCountFlag(app, "--streams", &streams, &streams_given,
               "Watch streams of one dict on a bridge of their own (default 2000)");
  AddCountFlag(app, "--stream-changes", &stream_changes, &stream_changes_given,
               "Sets a local writer commits while --streams watch (default 100k)");
  AddCountFlag(app, "--stream-channels", &stream_channels, &stream_channels_given,
               "connections the --streams share (default 8)");
  AddCountFlag(app, "--etcd-ops", &etcd_ops, &etcd_ops_given,
               "etcd Puts and Ranges (default 2000)");
  AddCountFlag(app, "--etcd-changes", &etcd_changes, &etcd_changes_given,
               "Puts of etcd's watch fan-out (default 20k)");
  AddCountFlag(app, "--etcd-samples", &etcd_samples, &etcd_samples_given,
               "etcd propagation samples (default 500)");
  if (auto exit_code = shmdict::bench::ParseCommandLine(app, argc, argv)) return exit_code;
  if (c->quick) {
    c->changes = 5'000;
    c->samples = 50;
    c->ops = 500;
    c->batch_changes = 2'000;
    c->keys = 2'000;
    c->pause_ns = 100'000;
    c->streams = 20;
    c->stream_changes = 1'000;
    c->stream_channels = 2;
    c->etcd_ops = 50;
    c->etcd_changes = 500;
    c->etcd_samples = 20;
  }
  if (changes_given) c->changes = changes;
  if (samples_given) c->samples = samples;
  if (ops_given) c->ops = ops;
  if (batch_given) c->batch_changes = batch_changes;
  if (keys_given) c->keys = keys;
  if (streams_given) c->streams = streams;
  if (stream_changes_given) c->stream_changes = stream_changes;
  if (stream_channels_given) c->stream_channels = stream_channels;
  if (etcd_ops_given) c->etcd_ops = etcd_ops;
  if (etcd_changes_given) c->etcd_changes = etcd_changes;
  if (etcd_samples_given) c->etcd_samples = etcd_samples;
  if (c->keys > UINT32_MAX) {
    std::fprintf(stderr, "shmdict_bridge_bench: --keys is limited to 2^32 - 1\n");
    return 2;
  }
  return std::nullopt;
}

int Run(const Config& c) {
  Bridge bridge;
  std::fprintf(stderr, "bridge on %s\n", bridge.address().c_str());

  std::string redis_na;
#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
  std::unique_ptr<Redis> redis;
  if (shmdict::internal::RedisLauncher::FindServer().empty()) {
    redis_na = "redis-server not found (package redis-server)";
  } else {
    redis = std::make_unique<Redis>();
  }
#else
  redis_na = "not built: libhiredis-dev missing";
#endif

  std::string etcd_na;
#if SHMDICT_BRIDGE_BENCH_HAVE_ETCD
  if (shmdict::internal::FindProgram("etcd").empty())
    etcd_na = "etcd not found (package etcd-server)";
#else
  etcd_na = "not built: the etcd wire stubs (shmdict_etcd_launcher) missing";
#endif

  std::fprintf(stderr, "1/5 Watch fan-out (%" PRIu64 " changes)\n", c.changes);
  const Fanout one = MeasureFanout(bridge, c, 1, 1);
  const Fanout eight = MeasureFanout(bridge, c, 8, 8);
  const Fanout one_batched = MeasureFanout(bridge, c, 1, 2, 100);
  const double writer_alone = MeasureWriterAlone(c);

  std::fprintf(stderr, "2/5 unary Set/Get (%" PRIu64 " each)\n", c.ops);
  const Unary bridge_unary = MeasureBridgeUnary(bridge.address(), c);
  const Unary unix_unary = MeasureBridgeUnary(bridge.unix_address(), c);
  Unary redis_unary{{NotAvailable(redis_na), NotAvailable(redis_na), NotAvailable(redis_na)},
                    {NotAvailable(redis_na), NotAvailable(redis_na), NotAvailable(redis_na)}};
  std::fprintf(stderr, "3/5 batched writes (%" PRIu64 " changes)\n", c.batch_changes);
  const Figure bridge_batch = MeasureBridgeBatch(bridge, c);
  Figure redis_batch = NotAvailable(redis_na);
  std::fprintf(stderr, "4/5 propagation (%" PRIu64 " samples)\n", c.samples);
  const Propagation mirror = MeasureMirrorLatency(bridge.address(), c, /*baseline=*/true);
  const Propagation unix_mirror =
      MeasureMirrorLatency(bridge.unix_address(), c, /*baseline=*/false);
  Propagation notify{NotAvailable(redis_na), NotAvailable(redis_na), NotAvailable(redis_na),
                     NotAvailable(redis_na)};
#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
  if (redis) {
    redis_unary = MeasureRedisUnary(*redis, c);
    redis_batch = MeasureRedisMset(*redis, c);
    notify = MeasureRedisNotify(*redis, c);
  }
#endif
  std::fprintf(stderr, "5/5 mirror reads (%" PRIu64 " keys)\n", c.keys);
  const MirrorReads reads = MeasureMirrorReads(bridge, c);
  std::fprintf(stderr, "6/7 %" PRIu64 " Watch streams of one dict (%" PRIu64 " changes)\n",
               c.streams, c.stream_changes);
  const ManyStreams crowd = MeasureManyStreams(c);
  EtcdFigures etcd = EtcdNotAvailable(etcd_na);
#if SHMDICT_BRIDGE_BENCH_HAVE_ETCD
  if (etcd_na.empty()) {
    std::fprintf(stderr,
                 "7/7 etcd (%" PRIu64 " ops, %" PRIu64 " changes, %" PRIu64 " samples; fsync on)\n",
                 c.etcd_ops, c.etcd_changes, c.etcd_samples);
    etcd = MeasureEtcd(c);
  }
#endif

  const std::string crowd_what = std::to_string(c.streams) +
                                 " concurrent Watch streams of one dict, a local writer " +
                                 "committing " + std::to_string(c.stream_changes) + " Sets";
  const std::string per_sub = " (changes/s per subscriber: N / time from the first write)";
  std::vector<Row> rows = {
      {"watch_fanout_1", "Watch fan-out, 1 subscriber" + per_sub, "changes/s", Better::kHigher,
       one.min, "", Figure{}, ">= 1 M changes/s", 1e6, std::nullopt},
      {"watch_fanout_1_batched",
       "Watch fan-out, 1 subscriber, the writer committing 100 keys "
       "per revision (the bridge sets the pace)",
       "changes/s", Better::kHigher, one_batched.min, "", Figure{}, ">= 1 M changes/s", 1e6,
       std::nullopt},
      {"watch_fanout_8_min", "Watch fan-out, 8 subscribers, slowest", "changes/s", Better::kHigher,
       eight.min, "", Figure{}, "", std::nullopt, std::nullopt},
      {"watch_fanout_8_mean", "Watch fan-out, 8 subscribers, mean", "changes/s", Better::kHigher,
       eight.mean, "", Figure{}, "", std::nullopt, std::nullopt},
      {"unary_set_rate", "Unary Set (bridge) vs unpipelined SET", "ops/s", Better::kHigher,
       bridge_unary.set.rate, "redis", redis_unary.set.rate, "ratio >= 1", std::nullopt, 1.0},
      {"unary_set_p50", "Unary Set latency p50", "ns", Better::kLower, bridge_unary.set.p50,
       "redis", redis_unary.set.p50, "", std::nullopt, std::nullopt},
      {"unary_set_p50_unix", "Unary Set latency p50, the bridge on a Unix socket (Redis: TCP)",
       "ns", Better::kLower, unix_unary.set.p50, "redis", redis_unary.set.p50, "", std::nullopt,
       std::nullopt},
      {"unary_set_p99", "Unary Set latency p99", "ns", Better::kLower, bridge_unary.set.p99,
       "redis", redis_unary.set.p99, "", std::nullopt, std::nullopt},
      {"unary_get_rate", "Unary Get (bridge, no mirror) vs unpipelined GET", "ops/s",
       Better::kHigher, bridge_unary.get.rate, "redis", redis_unary.get.rate, "", std::nullopt,
       std::nullopt},
      {"unary_get_p50", "Unary Get latency p50", "ns", Better::kLower, bridge_unary.get.p50,
       "redis", redis_unary.get.p50, "", std::nullopt, std::nullopt},
      {"unary_get_p50_unix", "Unary Get latency p50, the bridge on a Unix socket (Redis: TCP)",
       "ns", Better::kLower, unix_unary.get.p50, "redis", redis_unary.get.p50, "", std::nullopt,
       std::nullopt},
      {"unary_get_p99", "Unary Get latency p99", "ns", Better::kLower, bridge_unary.get.p99,
       "redis", redis_unary.get.p99, "", std::nullopt, std::nullopt},
      {"batch_write_rate", "Batch RPC of 100 (sequential) vs pipelined MSET of 100 (16 in flight)",
       "changes/s", Better::kHigher, bridge_batch, "redis", redis_batch, "", std::nullopt,
       std::nullopt},
      {"propagation_call_p50",
       "Dict Set -> RemoteDict mirror vs SET -> keyspace notification, p50 (from the write call)",
       "ns", Better::kLower, mirror.from_call_p50, "redis", notify.from_call_p50, "<= 100 us",
       100'000.0, std::nullopt},
      {"propagation_call_p50_unix", "... p50 (from the write call), the mirror on a Unix socket",
       "ns", Better::kLower, unix_mirror.from_call_p50, "redis", notify.from_call_p50, "<= 100 us",
       100'000.0, std::nullopt},
      {"propagation_call_p99", "... p99 (from the write call)", "ns", Better::kLower,
       mirror.from_call_p99, "redis", notify.from_call_p99, "", std::nullopt, std::nullopt},
      {"propagation_return_p50", "... p50 (from the write's return / SET reply)", "ns",
       Better::kLower, mirror.from_return_p50, "redis", notify.from_return_p50, "", std::nullopt,
       std::nullopt},
      {"propagation_return_p99", "... p99 (from the write's return / SET reply)", "ns",
       Better::kLower, mirror.from_return_p99, "redis", notify.from_return_p99, "", std::nullopt,
       std::nullopt},
      {"mirror_read_rate", "RemoteDict::Get(key, &out) from the mirror vs unordered_map find+copy",
       "ops/s", Better::kHigher, reads.remote, "unordered_map", reads.map, "ratio >= 0.5",
       std::nullopt, 0.5},
      {"watch_crowd_gap_free",
       crowd_what + ": streams that got every change in the writer's order (no gap, repeat or "
                    "resync)",
       "streams", Better::kHigher, crowd.gap_free, "", Figure{}, "every stream",
       static_cast<double>(c.streams), std::nullopt, /*check=*/true},
      {"watch_crowd_peak_rss", "... the bridge's peak RSS (VmHWM; a bridge of its own)", "KiB",
       Better::kLower, crowd.peak_rss_kib, "", Figure{}, "<= 512 MiB", 512.0 * 1024, std::nullopt},
      {"watch_crowd_idle_stream",
       "... memory per idle stream (bridge VmRSS with the streams open, before any write, minus "
       "before; per stream)",
       "KiB", Better::kLower, crowd.idle_kib, "", Figure{}, "<= 64 KiB", 64.0, std::nullopt},
      {"etcd_put_p50", "Unary Set (bridge) vs etcd Put latency p50 (etcd fsync on)", "ns",
       Better::kLower, bridge_unary.set.p50, "etcd", etcd.put.p50, "", std::nullopt, std::nullopt},
      {"etcd_range_p50", "Unary Get (bridge) vs etcd Range (linearizable) latency p50", "ns",
       Better::kLower, bridge_unary.get.p50, "etcd", etcd.range.p50, "", std::nullopt,
       std::nullopt},
      {"etcd_watch_fanout",
       "Watch fan-out, 1 subscriber, 100 keys per revision: the bridge vs an etcd watcher on a "
       "prefix (Txns of 100 Puts)",
       "changes/s", Better::kHigher, one_batched.min, "etcd", etcd.fanout, "", std::nullopt,
       std::nullopt},
      {"etcd_propagation_p50",
       "Dict Set -> RemoteDict mirror vs etcd Put -> watch event, p50 (from the write call)", "ns",
       Better::kLower, mirror.from_call_p50, "etcd", etcd.propagation_p50, "", std::nullopt,
       std::nullopt},
  };

  json meta{
      {"changes", c.changes},
      {"samples", c.samples},
      {"unary_ops", c.ops},
      {"batch_changes", c.batch_changes},
      {"mirror_keys", c.keys},
      {"value_bytes", kValueBytes},
      {"batch_size", kBatchSize},
      {"quick", c.quick},
      {"cpus", std::thread::hardware_concurrency()},
      {"bridge_address", bridge.address()},
      {"fanout_writer_rate_1", one.writer_rate},
      {"fanout_writer_rate_8", eight.writer_rate},
      {"fanout_snapshot_seen", one.snapshot_seen || eight.snapshot_seen},
      {"fanout_writer_alone_rate", writer_alone},
      {"fanout_lag_after_writer_ns_1", one.max_lag_ns},
      {"fanout_lag_after_writer_ns_8", eight.max_lag_ns},
      {"mirror_set_unwatched_p50_ns", mirror.set_alone_p50},
      {"mirror_set_unwatched_p99_ns", mirror.set_alone_p99},
      {"streams", c.streams},
      {"stream_changes", c.stream_changes},
      {"stream_channels", c.stream_channels},
      {"crowd_rss_before_kib", crowd.rss_before_kib},
      {"crowd_rss_idle_kib", crowd.rss_idle_kib},
      {"crowd_seconds", crowd.seconds},
      {"crowd_first_problem", crowd.first_problem},
      {"etcd_ops", c.etcd_ops},
      {"etcd_changes", c.etcd_changes},
      {"etcd_samples", c.etcd_samples},
      {"etcd", etcd_na.empty() ? json(peers::CommandOutput("etcd --version 2>/dev/null | head -1") +
                                      ", 1 member, fsync on")
                               : json("n/a: " + etcd_na)},
      {"redis", redis_na.empty() ? json("redis-server " +
#if SHMDICT_BRIDGE_BENCH_HAVE_REDIS
                                        shmdict::internal::RedisLauncher::Version(
                                            shmdict::internal::RedisLauncher::FindServer())
#else
                                        std::string()
#endif
                                            )
                                 : json("n/a: " + redis_na)}};
  const std::string md = Markdown(rows);
  std::printf("%s", md.c_str());
  const std::string stages =
      "Stages: the fan-out writer (local Dict Sets) ran at " +
      FigureText(Figure{one.writer_rate}, "changes/s") + " with 1 subscriber, " +
      FigureText(Figure{eight.writer_rate}, "changes/s") + " with 8, " +
      FigureText(Figure{writer_alone}, "changes/s") + " alone; the slowest subscriber finished " +
      shmdict::bench::FormatNs(one.max_lag_ns, 0, "-") + " (1) and " +
      shmdict::bench::FormatNs(eight.max_lag_ns, 0, "-") +
      " (8) after the writer's last Set. A local Set on a dict nobody watches took " +
      shmdict::bench::FormatNs(mirror.set_alone_p50, 0, "-") + " p50, " +
      shmdict::bench::FormatNs(mirror.set_alone_p99, 0, "-") + " p99.\n\n" + "The " +
      std::to_string(c.streams) + " streams (gRPC's callback API, over " +
      std::to_string(c.stream_channels) + " connections, one bridge of their own) were all done " +
      shmdict::bench::Format("%.2f", crowd.seconds) + " s after the first write; the bridge's " +
      "VmRSS was " + shmdict::bench::FormatKiB(crowd.rss_before_kib) + " with one stream open, " +
      shmdict::bench::FormatKiB(crowd.rss_idle_kib) + " with all of them" +
      (crowd.first_problem.empty() ? "" : "; first failed check: " + crowd.first_problem) +
      ". etcd: " + meta["etcd"].get<std::string>() + " (Put and Range one at a time, " +
      std::to_string(c.etcd_ops) + " each; the Unix-socket rows compare with Redis over TCP).\n";
  std::printf("\n%s", stages.c_str());
  if (!c.out_dir.empty()) {
    std::filesystem::create_directories(c.out_dir);
    std::ofstream(c.out_dir + "/bridge.md")
        << "# shmdict-bridge against Redis and etcd\n\n"
        << "`shmdict_bridge_bench" << (c.quick ? " --quick" : "") << "`: " << c.changes
        << " fan-out changes, " << c.ops << " unary ops, " << c.batch_changes
        << " batched changes, " << c.samples << " propagation samples, " << c.keys
        << " mirror keys, " << c.streams << " Watch streams of one dict for " << c.stream_changes
        << " changes, " << c.etcd_ops << " etcd ops; keys \"key-%08d\", " << kValueBytes
        << "-byte values; " << meta["cpus"].get<unsigned>() << " CPUs; "
        << meta["redis"].get<std::string>() << "; " << meta["etcd"].get<std::string>()
        << ". Ratio: shmdict's advantage (> 1: shmdict faster, for rates and latencies alike).\n\n"
        << md << "\n"
        << stages;
  }
  if (!c.json_path.empty()) peers::WriteFile(c.json_path, ReportJson(rows, meta).dump(2) + "\n");
  int failed = 0;
  for (const Row& r : rows) {
    if (r.check && r.Result() != "PASS") {
      std::fprintf(stderr, "shmdict_bridge_bench: FAILED CHECK %s: %s\n", r.id.c_str(),
                   crowd.first_problem.c_str());
      ++failed;
    }
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--check-json") {
    const std::vector<std::string> problems = CheckJson(argv[2]);
    for (const std::string& p : problems) std::fprintf(stderr, "bridge.json: %s\n", p.c_str());
    if (problems.empty()) std::printf("%s: every row has a figure or n/a with a reason\n", argv[2]);
    return problems.empty() ? 0 : 1;
  }
  Config config;
  if (auto exit_code = ParseFlags(argc, argv, &config)) return *exit_code;
  peers::InstallCleanup();
  const int exit_code = shmdict::bench::RunReportingErrors<BenchError>("shmdict_bridge_bench",
                                                                       [&] { return Run(config); });
  // Every server and dict handle is gone here: what is left in /dev/shm is a leak.
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.find(peers::RunPrefix()) != std::string::npos) {
      std::fprintf(stderr, "shmdict_bridge_bench: left in /dev/shm: %s\n", name.c_str());
    }
  }
  if (const int leaked = peers::SweepRunFiles(); leaked > 0) {
    std::fprintf(stderr, "shmdict_bridge_bench: %d entries named %s* were left in /dev/shm\n",
                 leaked, peers::RunPrefix().c_str());
    return 1;
  }
  return exit_code;
}
