// shmdict_bridge_bench: what shmdict-bridge costs and delivers, against Redis over loopback, in
// one run with the same keys ("key-%08d") and 100-byte values for every system:
//   1. Watch fan-out: a local Dict writer commits N single-key Sets as fast as it can while 1,
//      then 8 raw gRPC Watch streams (one thread each) follow; changes/s per subscriber.
//   2. Unary Set and Get through the bridge (RemoteDict without a mirror, sequential) against
//      unpipelined hiredis SET and GET: ops/s, p50/p99.
//   3. Batched writes: Batch RPCs of 100 mutations against pipelined MSETs of 100 keys.
//   4. Propagation: a local Dict Set until a mirroring RemoteDict's revision() reaches it, against
//      a SET until its keyspace notification arrives on a psubscribed connection.
//   5. Mirror reads: RemoteDict::Get(key, &out) against a std::unordered_map lookup and copy.
//
//   shmdict_bridge_bench [--quick] [--out DIR] [--json FILE] [--changes N] [--samples N] [--ops N]
//   [--keys N] shmdict_bridge_bench --check-json FILE     (the smoke test's check of a report)
//
// It starts its own shmdict-bridge (127.0.0.1:0) and redis-server (127.0.0.1, a free port, no
// persistence) and kills both at the end, on failure too (bridge_launcher.h, redis_launcher.h). Its
// dicts are named
// "<RunPrefix()>..." and unlink themselves; a final sweep reports leftovers as a failure.
//
// Timing is reported, never asserted: the ratios compare systems measured in the same run.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
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
  uint64_t keys = 100'000;  // mirror reads
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

// A figure of the report: value in `unit`, or n/a with a reason.
struct Figure {
  double value = NAN;
  std::string na;  // non-empty: why there is no figure
  bool ok() const { return na.empty() && std::isfinite(value); }
};

Figure NotAvailable(std::string why) { return Figure{NAN, std::move(why)}; }

// ------------------------------------------------------------------------------ the servers

class Bridge {
 public:
  Bridge() {
    shmdict::internal::BridgeLaunchOptions options;
    options.program = SHMDICT_BRIDGE_PATH;
    options.listen = {"127.0.0.1:0"};
    options.ready_timeout = std::chrono::nanoseconds(kStartTimeoutNs);
    std::string error;
    launcher_ = shmdict::internal::BridgeLauncher::Start(options, &error);
    if (launcher_ == nullptr) Fail(error);
  }
  // SIGTERM, not SIGKILL: a killed bridge would leave its record in the registry of live bridges
  // (/dev/shm/shmdict-bridges) until the next `shmdict ls`.
  ~Bridge() { launcher_->Terminate(shmdict::internal::DeadlineIn(std::chrono::seconds(10))); }
  const std::string& address() const { return launcher_->address(); }

  // A channel of its own (not shared with other channels to the same address), so that each
  // subscriber is a separate HTTP/2 connection, as separate clients would be.
  std::shared_ptr<grpc::Channel> NewChannel(int id) const {
    grpc::ChannelArguments args;
    args.SetInt("shmdict.bench.channel", id);
    args.SetMaxReceiveMessageSize(-1);
    return grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
  }

 private:
  std::unique_ptr<shmdict::internal::BridgeLauncher> launcher_;
};

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

std::unique_ptr<shmdict::RemoteDict> OpenRemote(const Bridge& bridge, const shmdict::Dict& dict,
                                                bool mirror) {
  shmdict::RemoteOptions options;
  options.address = bridge.address();
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
      shmdict::v1::WatchResponse message;
      while (stream_->Read(&message)) {
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

Unary MeasureBridgeUnary(const Bridge& bridge, const Config& c) {
  shmdict::Dict dict = OpenDict("unary", LogBytesFor(c.ops));
  auto remote = OpenRemote(bridge, dict, /*mirror=*/false);
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

Propagation MeasureMirrorLatency(const Bridge& bridge, const Config& c) {
  Latencies alone;
  {
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
  auto remote = OpenRemote(bridge, dict, /*mirror=*/true);
  Latencies from_call, from_return;
  shmdict::Value value;
  for (uint64_t i = 0; i < c.samples; ++i) {
    value.assign(shmdict::ValueType::kBytes, ValueFor(i));
    const std::string key = Key(i);
    const int64_t call = MonotonicNs();
    const uint64_t revision = Check(dict.Set(key, value), "mirror Set");
    const int64_t returned = MonotonicNs();
    const int64_t deadline = returned + 10'000'000'000;
    while (remote->revision() < revision) {
      if (MonotonicNs() > deadline) Fail("the mirror did not reach a revision within 10 s");
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
  auto remote = OpenRemote(bridge, dict, /*mirror=*/true);
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

  // shmdict's advantage: > 1 means shmdict is faster (higher rate or lower latency).
  double Ratio() const {
    if (!shmdict.ok() || !peer.ok()) return NAN;
    return better == Better::kHigher ? shmdict.value / peer.value : peer.value / shmdict.value;
  }
  std::string Result() const {
    if (target.empty()) return "-";
    if (target_ratio)
      return std::isfinite(Ratio()) ? (Ratio() >= *target_ratio ? "PASS" : "MISS") : "n/a";
    if (!shmdict.ok()) return "n/a";
    const bool pass =
        better == Better::kHigher ? shmdict.value >= *target_value : shmdict.value <= *target_value;
    return pass ? "PASS" : "MISS";
  }
};

// The ids every report has (the smoke test's check).
const std::vector<std::string>& RowIds() {
  static const std::vector<std::string> ids = {
      "watch_fanout_1",       "watch_fanout_1_batched", "watch_fanout_8_min",
      "watch_fanout_8_mean",  "unary_set_rate",         "unary_set_p50",
      "unary_set_p99",        "unary_get_rate",         "unary_get_p50",
      "unary_get_p99",        "batch_write_rate",       "propagation_call_p50",
      "propagation_call_p99", "propagation_return_p50", "propagation_return_p99",
      "mirror_read_rate"};
  return ids;
}

std::string FormatFigure(const Figure& f, const std::string& unit) {
  if (!f.ok()) return f.na.empty() ? "n/a" : "n/a: " + f.na;
  if (unit == "ns") return shmdict::bench::FormatNs(f.value, 0, "n/a");
  if (f.value >= 1e6) return shmdict::bench::Format("%.2f M", f.value / 1e6) + unit;
  if (f.value >= 1e3) return shmdict::bench::Format("%.1f k", f.value / 1e3) + unit;
  return shmdict::bench::Format("%.0f ", f.value) + unit;
}

std::string Markdown(const std::vector<Row>& rows) {
  std::string md =
      "| workload | shmdict / bridge | peer | ratio | target | result |\n"
      "|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    const double ratio = r.Ratio();
    md += "| " + r.workload + " | " + FormatFigure(r.shmdict, r.unit) + " | " +
          (r.peer_name.empty() ? "-" : r.peer_name + ": " + FormatFigure(r.peer, r.unit)) + " | " +
          (std::isfinite(ratio) ? shmdict::bench::Format("%.2f", ratio) : "-") + " | " +
          (r.target.empty() ? "-" : r.target) + " | " + r.Result() + " |\n";
  }
  return md;
}

json FigureJson(const Figure& f) {
  if (!f.ok()) return json{{"value", nullptr}, {"na", f.na.empty() ? "n/a" : f.na}};
  return json{{"value", f.value}};
}

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
  auto figure_ok = [](const json& f) {
    if (f.contains("na")) return f["na"].is_string() && !f["na"].get<std::string>().empty();
    return f.contains("value") && f["value"].is_number() && f["value"].get<double>() > 0;
  };
  for (const std::string& id : RowIds()) {
    auto it = std::find_if(report["rows"].begin(), report["rows"].end(),
                           [&](const json& row) { return row.value("id", "") == id; });
    if (it == report["rows"].end()) {
      problems.push_back("row " + id + " missing");
      continue;
    }
    if (!it->contains("shmdict") || !figure_ok((*it)["shmdict"]) ||
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
  uint64_t changes = 0, samples = 0, ops = 0, keys = 0, batch_changes = 0;
  bool changes_given = false, samples_given = false, ops_given = false, keys_given = false,
       batch_given = false;
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
  if (auto exit_code = shmdict::bench::ParseCommandLine(app, argc, argv)) return exit_code;
  if (c->quick) {
    c->changes = 5'000;
    c->samples = 50;
    c->ops = 500;
    c->batch_changes = 2'000;
    c->keys = 2'000;
    c->pause_ns = 100'000;
  }
  if (changes_given) c->changes = changes;
  if (samples_given) c->samples = samples;
  if (ops_given) c->ops = ops;
  if (batch_given) c->batch_changes = batch_changes;
  if (keys_given) c->keys = keys;
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

  std::fprintf(stderr, "1/5 Watch fan-out (%" PRIu64 " changes)\n", c.changes);
  const Fanout one = MeasureFanout(bridge, c, 1, 1);
  const Fanout eight = MeasureFanout(bridge, c, 8, 8);
  const Fanout one_batched = MeasureFanout(bridge, c, 1, 2, 100);
  const double writer_alone = MeasureWriterAlone(c);

  std::fprintf(stderr, "2/5 unary Set/Get (%" PRIu64 " each)\n", c.ops);
  const Unary bridge_unary = MeasureBridgeUnary(bridge, c);
  Unary redis_unary{{NotAvailable(redis_na), NotAvailable(redis_na), NotAvailable(redis_na)},
                    {NotAvailable(redis_na), NotAvailable(redis_na), NotAvailable(redis_na)}};
  std::fprintf(stderr, "3/5 batched writes (%" PRIu64 " changes)\n", c.batch_changes);
  const Figure bridge_batch = MeasureBridgeBatch(bridge, c);
  Figure redis_batch = NotAvailable(redis_na);
  std::fprintf(stderr, "4/5 propagation (%" PRIu64 " samples)\n", c.samples);
  const Propagation mirror = MeasureMirrorLatency(bridge, c);
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
      {"unary_set_p99", "Unary Set latency p99", "ns", Better::kLower, bridge_unary.set.p99,
       "redis", redis_unary.set.p99, "", std::nullopt, std::nullopt},
      {"unary_get_rate", "Unary Get (bridge, no mirror) vs unpipelined GET", "ops/s",
       Better::kHigher, bridge_unary.get.rate, "redis", redis_unary.get.rate, "", std::nullopt,
       std::nullopt},
      {"unary_get_p50", "Unary Get latency p50", "ns", Better::kLower, bridge_unary.get.p50,
       "redis", redis_unary.get.p50, "", std::nullopt, std::nullopt},
      {"unary_get_p99", "Unary Get latency p99", "ns", Better::kLower, bridge_unary.get.p99,
       "redis", redis_unary.get.p99, "", std::nullopt, std::nullopt},
      {"batch_write_rate", "Batch RPC of 100 (sequential) vs pipelined MSET of 100 (16 in flight)",
       "changes/s", Better::kHigher, bridge_batch, "redis", redis_batch, "", std::nullopt,
       std::nullopt},
      {"propagation_call_p50",
       "Dict Set -> RemoteDict mirror vs SET -> keyspace notification, p50 (from the write call)",
       "ns", Better::kLower, mirror.from_call_p50, "redis", notify.from_call_p50, "<= 100 us",
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
  };

  json meta{{"changes", c.changes},
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
      FormatFigure(Figure{one.writer_rate}, "changes/s") + " with 1 subscriber, " +
      FormatFigure(Figure{eight.writer_rate}, "changes/s") + " with 8, " +
      FormatFigure(Figure{writer_alone}, "changes/s") + " alone; the slowest subscriber finished " +
      shmdict::bench::FormatNs(one.max_lag_ns, 0, "-") + " (1) and " +
      shmdict::bench::FormatNs(eight.max_lag_ns, 0, "-") +
      " (8) after the writer's last Set. A local Set on a dict nobody watches took " +
      shmdict::bench::FormatNs(mirror.set_alone_p50, 0, "-") + " p50, " +
      shmdict::bench::FormatNs(mirror.set_alone_p99, 0, "-") + " p99.\n";
  std::printf("\n%s", stages.c_str());
  if (!c.out_dir.empty()) {
    std::filesystem::create_directories(c.out_dir);
    std::ofstream(c.out_dir + "/bridge.md")
        << "# shmdict-bridge against Redis\n\n"
        << "`shmdict_bridge_bench" << (c.quick ? " --quick" : "") << "`: " << c.changes
        << " fan-out changes, " << c.ops << " unary ops, " << c.batch_changes
        << " batched changes, " << c.samples << " propagation samples, " << c.keys
        << " mirror keys; keys \"key-%08d\", " << kValueBytes << "-byte values; "
        << meta["cpus"].get<unsigned>() << " CPUs; " << meta["redis"].get<std::string>()
        << ". Ratio: shmdict's advantage (> 1: shmdict faster, for rates and latencies alike).\n\n"
        << md << "\n"
        << stages;
  }
  if (!c.json_path.empty()) peers::WriteFile(c.json_path, ReportJson(rows, meta).dump(2) + "\n");
  return 0;
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
