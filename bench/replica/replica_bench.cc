// shmdict_replica_bench: what a shmdict-replica of an etcd prefix costs and delivers, against
// etcd's own clients on the same 1-member cluster (fsync on, data in /tmp), in one run, keys
// "key-%08d" (and "lat-", "w-", "p-" for the latency samples) and 100-byte text values:
//   1. Visibility: an etcd Put (our stubs) until a thread blocked in WaitForChange on an attached
//      handle of the replica dict finds the key, against a raw etcd Watch stream on the prefix
//      receiving the same event (the floor); both timed from the Put call; p50, p99.
//   2. Writes: RemoteDict::Set through the replica's --listen (mirror off; it returns once the
//      replica applied it) against a direct etcd Put, interleaved; p50, p99.
//   3. Reads: Dict::Get(key, &out) on the replica dict of a --keys replica against a plain local
//      dict holding the same items.
//   4. Catch-up: a replica started against --catchup-keys keys (loaded by 128-op Txns), spawn to
//      "ready", against `etcdctl get --prefix PREFIX > /dev/null` on the same data (the best of
//      one run before and one after the replica).
//
//   shmdict_replica_bench [--quick] [--out DIR] [--json FILE] [--samples N] [--keys N]
//   [--catchup-keys N]    shmdict_replica_bench --check-json FILE   (the smoke test's check)
//
// It starts its own etcd (EtcdCluster, tests/support/etcd_launcher.h) and shmdict-replica
// processes, whose presence records go to a private directory ($SHMDICT_BRIDGE_REGISTRY_DIR)
// removed at the end. Its dicts are named "<RunPrefix()>..." and are unlinked at the end, on
// failure too; a final sweep reports leftovers as a failure.
//
// Timing is reported, never asserted: the ratios compare figures measured in the same run.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "etcd_launcher.h"
#include "harness.h"
#include "key_range.h"
#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"

namespace {

using nlohmann::json;
using peers::BenchError;
using peers::Fail;
using peers::MonotonicNs;

constexpr size_t kValueBytes = 100;
constexpr size_t kTxnOps = 128;  // etcd's default --max-txn-ops: the loader's Txn size
constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kObserveTimeoutNs = 10 * kSecond;
// Time to "ready" of a replica: a 1M-key catch-up on a loaded 2-core machine takes minutes.
constexpr int64_t kReadyTimeoutNs = 900 * kSecond;

struct Config {
  bool quick = false;
  std::string out_dir;
  std::string json_path;
  uint64_t samples = 2'000;           // visibility samples and write pairs
  uint64_t keys = 100'000;            // the read workload's replica
  uint64_t catchup_keys = 1'000'000;  // the catch-up's data
  int64_t pause_ns = 1'000'000;       // between latency samples: each one alone in flight
};

std::string Key(const char* kind, uint64_t i) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%s-%08" PRIu64, kind, i);
  return buffer;
}

// 100 bytes of text that differ per key: "value-<i>-" padded with letters (etcdctl prints them
// as they are; the replica stores them as str).
std::string ValueFor(uint64_t i) {
  std::string v = "value-";
  v += std::to_string(i);
  v += '-';
  while (v.size() < kValueBytes) v += static_cast<char>('a' + v.size() % 26);
  return v;
}

template <typename T>
T Check(shmdict::Result<T> result, const char* what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.status().ToString());
  return std::move(*result);
}

void CheckGrpc(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) Fail(what + ": " + status.error_message());
}

using shmdict::bench::Figure;
using shmdict::bench::FigureJson;
using shmdict::bench::FormatFigure;
using shmdict::bench::NotAvailable;

// ------------------------------------------------------------------------------ the servers

// A private directory for the presence records of the replicas' --listen servers (the bridge's
// registry), so that the run leaves nothing in /dev/shm/shmdict-bridges; removed at the end.
class RegistryDir {
 public:
  RegistryDir() {
    char path[] = "/tmp/shmdict-replica-bench-XXXXXX";
    if (mkdtemp(path) == nullptr) Fail("mkdtemp /tmp/shmdict-replica-bench-XXXXXX failed");
    path_ = path;
  }
  ~RegistryDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A 1-member etcd with fsync on (what a production member pays per commit).
class Etcd {
 public:
  Etcd() {
    shmdict::internal::EtcdClusterOptions options;
    options.fsync = true;
    options.request_timeout = std::chrono::seconds(60);
    std::string error;
    cluster_ = shmdict::internal::EtcdCluster::Start(1, options, &error);
    if (cluster_ == nullptr) Fail(error);
    endpoint_ = cluster_->client_endpoints().front();
    kv_ = etcdserverpb::KV::NewStub(cluster_->Channel(0));
  }
  const std::string& endpoint() const { return endpoint_; }
  shmdict::internal::EtcdCluster& cluster() { return *cluster_; }
  etcdserverpb::KV::Stub& kv() { return *kv_; }

  // Puts keys prefix + Key("key", i) for i < n, ValueFor(i), kTxnOps to a Txn, one Txn at a time.
  void Load(const std::string& prefix, uint64_t n) {
    for (uint64_t first = 0; first < n; first += kTxnOps) {
      etcdserverpb::TxnRequest txn;
      for (uint64_t i = first; i < std::min(n, first + kTxnOps); ++i) {
        auto* put = txn.add_success()->mutable_request_put();
        put->set_key(prefix + Key("key", i));
        put->set_value(ValueFor(i));
      }
      etcdserverpb::TxnResponse response;
      CheckGrpc(cluster_->Txn(txn, &response), "etcd Txn (loading " + prefix + ")");
    }
  }

 private:
  std::unique_ptr<shmdict::internal::EtcdCluster> cluster_;
  std::string endpoint_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
};

// One shmdict-replica of `prefix` into the dict `name`, started and awaited until "ready"
// (ready_ns: from the spawn). The destructor stops it (SIGTERM) and unlinks its dict.
class Replica {
 public:
  Replica(const Etcd& etcd, const RegistryDir& registry, const std::string& prefix,
          const std::string& tag)
      : name_(peers::NewName("replica_" + tag)) {
    peers::Process::Spec spec;
    spec.path = SHMDICT_REPLICA_PATH;
    spec.argv = {spec.path, "--dict",   name_,         "--etcd",      etcd.endpoint(), "--prefix",
                 prefix,    "--listen", "127.0.0.1:0", "--log-level", "warn"};
    spec.env = {"SHMDICT_BRIDGE_REGISTRY_DIR=" + registry.path()};
    spec.pipe_stdout = true;
    const int64_t begin = MonotonicNs();
    process_ = std::make_unique<peers::Process>(spec);
    while (true) {
      std::optional<std::string> line = process_->ReadLine(kReadyTimeoutNs);
      if (!line) Fail("shmdict-replica exited before \"ready\": " + process_->Wait(kSecond));
      if (line->rfind("listening on ", 0) == 0 && listen_.empty()) {
        listen_ = line->substr(std::string("listening on ").size());
      }
      if (*line == "ready") break;
    }
    ready_ns_ = MonotonicNs() - begin;
    if (listen_.empty()) Fail("shmdict-replica printed no \"listening on\"");
  }
  ~Replica() {
    if (process_->running()) {
      process_->Signal(SIGTERM);
      const std::string how = process_->Wait(30 * kSecond);
      if (!how.empty())
        std::fprintf(stderr, "shmdict-replica %s: %s\n", name_.c_str(), how.c_str());
    }
    shmdict::Dict::UnlinkByName(name_).IgnoreError();
  }
  const std::string& name() const { return name_; }
  const std::string& listen() const { return listen_; }
  int64_t ready_ns() const { return ready_ns_; }

  shmdict::Dict Attach() const {
    shmdict::Options options;
    options.name = name_;
    options.create_mode = shmdict::CreateMode::kMustAttach;
    options.auto_unlink = false;
    return Check(shmdict::Dict::Open(options), "attach the replica dict");
  }

 private:
  std::string name_;
  std::string listen_;
  int64_t ready_ns_ = 0;
  std::unique_ptr<peers::Process> process_;
};

// ------------------------------------------------------------------------------- workloads

struct Percentiles {
  Figure p50, p99;
};

Percentiles Summarize(const peers::Histogram& h) {
  return {Figure{h.Percentile(50)}, Figure{h.Percentile(99)}};
}

struct Visibility {
  Percentiles replica, watch;
};

// Waits (polling every 20 us: the measured threads are not slowed by it) until `seen` is set.
int64_t AwaitObservation(const std::atomic<int64_t>& seen, const char* who) {
  const int64_t deadline = MonotonicNs() + kObserveTimeoutNs;
  while (true) {
    const int64_t t = seen.load(std::memory_order_acquire);
    if (t != 0) return t;
    if (MonotonicNs() > deadline) Fail(std::string(who) + " did not see a Put within 10 s");
    peers::SleepNs(20'000);
  }
}

Visibility MeasureVisibility(Etcd& etcd, const Replica& replica, const std::string& prefix,
                             const Config& c) {
  // The floor: a raw Watch stream on the prefix, from now on.
  auto watch_stub = etcdserverpb::Watch::NewStub(etcd.cluster().Channel(0));
  grpc::ClientContext watch_context;
  auto stream = watch_stub->Watch(&watch_context);
  {
    etcdserverpb::WatchRequest request;
    request.mutable_create_request()->set_key(shmdict::replica::PrefixRangeKey(prefix));
    request.mutable_create_request()->set_range_end(shmdict::replica::PrefixRangeEnd(prefix));
    if (!stream->Write(request)) Fail("etcd Watch: the stream closed");
    etcdserverpb::WatchResponse created;
    if (!stream->Read(&created) || !created.created()) Fail("etcd Watch: not created");
  }
  const std::string lat_prefix = prefix + "lat-";
  std::atomic<int64_t> watch_seen{0}, replica_seen{0};
  std::atomic<int64_t> current{-1};  // the sample in flight; -1: none
  std::atomic<bool> stop{false};

  std::thread watcher([&] {
    etcdserverpb::WatchResponse response;
    while (stream->Read(&response)) {
      const int64_t now = MonotonicNs();
      for (const auto& event : response.events()) {
        const std::string& key = event.kv().key();
        if (key.rfind(lat_prefix, 0) != 0) continue;
        if (std::strtoll(key.c_str() + lat_prefix.size(), nullptr, 10) == current.load()) {
          watch_seen.store(now, std::memory_order_release);
        }
      }
    }
  });

  shmdict::Dict dict = replica.Attach();
  std::thread follower([&] {
    uint64_t revision = dict.revision();
    shmdict::Value out;
    while (!stop.load()) {
      shmdict::Result<uint64_t> changed =
          dict.WaitForChange(revision, std::chrono::milliseconds(50));
      if (!changed.ok()) continue;  // the timeout: look at `stop` again
      revision = *changed;
      const int64_t i = current.load();
      if (i < 0 || replica_seen.load() != 0) continue;
      // Not Check: a throw on this thread would end the process without the cleanup. A failed
      // Get leaves the sample unseen, and the main thread fails after its 10 s.
      shmdict::Result<bool> found = dict.Get(Key("lat", static_cast<uint64_t>(i)), &out);
      if (found.ok() && *found) {
        replica_seen.store(MonotonicNs(), std::memory_order_release);
      }
    }
  });

  // Stops and joins both threads however this function ends: a Fail below throws, and unwinding
  // past a joinable std::thread ends the process with "terminate called without an active
  // exception" instead of the failure's message.
  auto finish = [&, done = false]() mutable {
    if (done) return;
    done = true;
    stop.store(true);
    follower.join();
    watch_context.TryCancel();
    watcher.join();
  };
  struct Finally {
    decltype(finish)& run;
    ~Finally() { run(); }
  } join_on_exit{finish};

  peers::Histogram replica_h, watch_h;
  for (uint64_t i = 0; i < c.samples; ++i) {
    watch_seen.store(0);
    replica_seen.store(0);
    current.store(static_cast<int64_t>(i));
    const int64_t call = MonotonicNs();
    CheckGrpc(etcd.cluster().Put(prefix + Key("lat", i), ValueFor(i)), "etcd Put");
    replica_h.Add(static_cast<uint64_t>(AwaitObservation(replica_seen, "the replica") - call));
    watch_h.Add(static_cast<uint64_t>(AwaitObservation(watch_seen, "the etcd watch") - call));
    current.store(-1);
    peers::SleepNs(c.pause_ns);
  }
  finish();
  stream->Finish().ok();  // CANCELLED, as asked
  return {Summarize(replica_h), Summarize(watch_h)};
}

struct Writes {
  Percentiles replica, put;
  Percentiles hop;  // a Get through --listen: the extra hop alone (served locally, no etcd)
};

// Pairs of writes, interleaved so that both see the same machine: a Set through the replica's
// --listen, then a direct Put of another key. A Get of the key just set, through --listen, times
// the hop to the replica alone (it is served from the replica's dict): a stage of the Set.
Writes MeasureWrites(Etcd& etcd, const Replica& replica, const std::string& prefix,
                     const Config& c) {
  shmdict::RemoteOptions options;
  options.address = replica.listen();
  options.dict = replica.name();
  options.mirror = false;
  options.open_timeout = std::chrono::seconds(60);
  auto remote = Check(shmdict::RemoteDict::Open(options), "RemoteDict on the replica's --listen");
  shmdict::Dict dict = replica.Attach();
  peers::Histogram replica_h, put_h, hop_h;
  shmdict::Value value;
  for (uint64_t i = 0; i < c.samples; ++i) {
    value.assign(shmdict::ValueType::kString, ValueFor(i));
    const std::string key = Key("w", i);
    int64_t begin = MonotonicNs();
    const uint64_t revision = Check(remote->Set(key, value), "RemoteDict::Set");
    replica_h.Add(static_cast<uint64_t>(MonotonicNs() - begin));
    if (dict.revision() < revision) Fail("a Set through --listen returned before it was applied");
    peers::SleepNs(c.pause_ns);
    begin = MonotonicNs();
    if (!Check(remote->Get(key, &value), "RemoteDict::Get")) Fail("Get through --listen: missing");
    hop_h.Add(static_cast<uint64_t>(MonotonicNs() - begin));
    peers::SleepNs(c.pause_ns);
    begin = MonotonicNs();
    CheckGrpc(etcd.cluster().Put(prefix + Key("p", i), ValueFor(i)), "etcd Put");
    put_h.Add(static_cast<uint64_t>(MonotonicNs() - begin));
    peers::SleepNs(c.pause_ns);
  }
  return {Summarize(replica_h), Summarize(put_h), Summarize(hop_h)};
}

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

struct Reads {
  Figure replica, local;
};

// The replica dict holds Key("key", i) for i < c.keys (and nothing else yet).
Reads MeasureReads(const Replica& replica, const Config& c) {
  shmdict::Dict dict = replica.Attach();
  auto items = Check(dict.Items(), "replica Items");
  if (items.size() != c.keys) Fail("the replica holds " + std::to_string(items.size()) + " keys");
  shmdict::Options options;
  options.name = peers::NewName("local");
  options.create_mode = shmdict::CreateMode::kMustCreate;
  options.buffer_size = uint64_t{64} << 20;
  shmdict::Dict local = Check(shmdict::Dict::Open(options), "create the local dict");
  std::vector<shmdict::Change> batch;
  for (auto& [key, value] : items) {
    shmdict::Change change;
    change.key = key;
    change.value = std::move(value);
    batch.push_back(std::move(change));
    if (batch.size() == 1000) {
      Check(local.Apply(batch), "local Apply");
      batch.clear();
    }
  }
  if (!batch.empty()) Check(local.Apply(batch), "local Apply");
  items.clear();

  std::vector<std::string> keys;
  for (uint64_t i = 0; i < c.keys; ++i) keys.push_back(Key("key", i));
  const std::vector<uint32_t> order = shmdict::bench::MakeAccessOrder(c.keys).order;
  shmdict::Value out;
  auto reader = [&](shmdict::Dict& d, const char* what) {
    return [&d, &keys, &out, what](uint32_t i) {
      if (!Check(d.Get(keys[i], &out), what) || out.data().size() != kValueBytes) {
        Fail(std::string(what) + " " + keys[i] + ": wrong value");
      }
    };
  };
  Reads r{Figure{0}, Figure{0}};
  // Alternated, twice each, best kept: neither gets the warmer caches or the quieter moment.
  for (int round = 0; round < 2; ++round) {
    r.replica.value = std::max(r.replica.value, BestRate(order, reader(dict, "replica Get")));
    r.local.value = std::max(r.local.value, BestRate(order, reader(local, "local Get")));
  }
  local.Unlink().IgnoreError();
  return r;
}

// `etcdctl get --prefix PREFIX > /dev/null` from spawn to exit, in ns.
int64_t TimeEtcdctl(const Etcd& etcd, const std::string& prefix) {
  peers::Process::Spec spec;
  spec.path = "/bin/sh";
  spec.argv = {
      "sh", "-c",
      "exec etcdctl --endpoints=" + etcd.endpoint() + " get --prefix '" + prefix + "' > /dev/null"};
  spec.env = {"ETCDCTL_API=3"};
  const int64_t begin = MonotonicNs();
  peers::Process etcdctl(spec);
  const std::string how = etcdctl.Wait(600 * kSecond);
  const int64_t elapsed = MonotonicNs() - begin;
  if (!how.empty()) Fail("etcdctl get --prefix " + prefix + ": " + how);
  return elapsed;
}

struct Catchup {
  Figure replica, etcdctl;
  double load_s = NAN;
};

Catchup MeasureCatchup(Etcd& etcd, const RegistryDir& registry, const Config& c,
                       const std::string& etcdctl_na) {
  const std::string prefix = "/bench/catchup/";
  Catchup r;
  const int64_t load_begin = MonotonicNs();
  etcd.Load(prefix, c.catchup_keys);
  r.load_s = static_cast<double>(MonotonicNs() - load_begin) * 1e-9;
  std::fprintf(stderr, "    loaded %" PRIu64 " keys in %.1f s\n", c.catchup_keys, r.load_s);
  int64_t etcdctl_ns = INT64_MAX;
  if (etcdctl_na.empty()) etcdctl_ns = TimeEtcdctl(etcd, prefix);
  {
    Replica replica(etcd, registry, prefix, "catchup");
    r.replica.value = static_cast<double>(replica.ready_ns());
    shmdict::Dict dict = replica.Attach();
    if (Check(dict.Size(), "replica Size") != c.catchup_keys) Fail("the catch-up lost keys");
  }
  if (etcdctl_na.empty()) {
    etcdctl_ns = std::min(etcdctl_ns, TimeEtcdctl(etcd, prefix));
    r.etcdctl.value = static_cast<double>(etcdctl_ns);
  } else {
    r.etcdctl = NotAvailable(etcdctl_na);
  }
  return r;
}

// ---------------------------------------------------------------------------------- report

struct Row {
  std::string id;
  std::string workload;
  std::string unit;  // "ns", "ops/s"
  Figure replica;
  std::string baseline_name;
  Figure baseline;
  // The target on the ratio replica / baseline: at most (latencies) or at least (rates).
  std::string target;
  std::optional<double> max_ratio, min_ratio;

  double Ratio() const {
    if (!replica.ok() || !baseline.ok()) return NAN;
    return replica.value / baseline.value;
  }
  std::string Result() const {
    if (target.empty()) return "-";
    const double ratio = Ratio();
    if (!std::isfinite(ratio)) return "n/a";
    const bool pass = max_ratio ? ratio <= *max_ratio : ratio >= *min_ratio;
    return pass ? "PASS" : "MISS";
  }
};

// The ids every report has (the smoke test's check).
const std::vector<std::string>& RowIds() {
  static const std::vector<std::string> ids = {"visible_p50", "visible_p99", "write_p50",
                                               "write_p99",   "read_rate",   "catchup"};
  return ids;
}

std::string Markdown(const std::vector<Row>& rows) {
  std::string md =
      "| workload | replica | baseline | ratio | target | result |\n"
      "|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    const double ratio = r.Ratio();
    md += "| " + r.workload + " | " + FormatFigure(r.replica, r.unit) + " | " + r.baseline_name +
          ": " + FormatFigure(r.baseline, r.unit) + " | " +
          (std::isfinite(ratio) ? shmdict::bench::Format("%.2f", ratio) : "-") + " | " +
          (r.target.empty() ? "-" : r.target) + " | " + r.Result() + " |\n";
  }
  return md;
}

json ReportJson(const std::vector<Row>& rows, const json& meta) {
  json out{{"meta", meta}, {"rows", json::array()}};
  for (const Row& r : rows) {
    const double ratio = r.Ratio();
    out["rows"].push_back(json{{"id", r.id},
                               {"workload", r.workload},
                               {"unit", r.unit},
                               {"replica", FigureJson(r.replica)},
                               {"baseline_name", r.baseline_name},
                               {"baseline", FigureJson(r.baseline)},
                               {"ratio", std::isfinite(ratio) ? json(ratio) : json(nullptr)},
                               {"target", r.target},
                               {"result", r.Result()}});
  }
  return out;
}

// Problems of a report: missing rows, figures that are neither > 0 nor n/a with a reason. The
// replica's figure is always measured; only a baseline may be n/a (no etcdctl).
std::vector<std::string> CheckJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {"cannot read " + path};
  json report = json::parse(in, nullptr, false);
  if (report.is_discarded() || !report.contains("rows")) return {path + ": not a report"};
  std::vector<std::string> problems;
  auto figure_ok = [](const json& f) { return shmdict::bench::FigureJsonOk(f); };
  for (const std::string& id : RowIds()) {
    auto it = std::find_if(report["rows"].begin(), report["rows"].end(),
                           [&](const json& row) { return row.value("id", "") == id; });
    if (it == report["rows"].end()) {
      problems.push_back("row " + id + " missing");
      continue;
    }
    if (!it->contains("replica") || !figure_ok((*it)["replica"]) ||
        !(*it)["replica"].contains("value") || (*it)["replica"]["value"].is_null()) {
      problems.push_back("row " + id + ": no replica figure");
    }
    if (!it->contains("baseline") || !figure_ok((*it)["baseline"])) {
      problems.push_back("row " + id + ": baseline figure neither > 0 nor n/a with a reason");
    }
  }
  return problems;
}

// --------------------------------------------------------------------------------- driver

std::optional<int> ParseFlags(int argc, char** argv, Config* c) {
  using shmdict::bench::AddCountFlag;
  CLI::App app{
      "Measures shmdict-replica against etcd's own clients on a private 1-member etcd (fsync "
      "on): visibility of a Put, writes through --listen, reads, catch-up; writes replica.md "
      "(and JSON with --json). `shmdict_replica_bench --check-json FILE` checks a report "
      "instead.",
      "shmdict_replica_bench"};
  uint64_t samples = 0, keys = 0, catchup_keys = 0;
  bool samples_given = false, keys_given = false, catchup_given = false;
  app.add_flag("--quick", c->quick, "smoke run: small sizes (explicit flags win)");
  app.add_option("--out", c->out_dir, "where replica.md goes (default: none)");
  app.add_option("--json", c->json_path,
                 "also write the report as JSON to this file (the input of --check-json; not "
                 "committed: e.g. build/replica.json)");
  AddCountFlag(app, "--samples", &samples, &samples_given,
               "visibility samples and write pairs (default 2000)");
  AddCountFlag(app, "--keys", &keys, &keys_given, "keys of the read workload (default 100k)");
  AddCountFlag(app, "--catchup-keys", &catchup_keys, &catchup_given,
               "keys in etcd for the catch-up (default 1M)");
  if (auto exit_code = shmdict::bench::ParseCommandLine(app, argc, argv)) return exit_code;
  if (c->quick) {
    c->samples = 50;
    c->keys = 2'000;
    c->catchup_keys = 5'000;
    c->pause_ns = 200'000;
  }
  if (samples_given) c->samples = samples;
  if (keys_given) c->keys = keys;
  if (catchup_given) c->catchup_keys = catchup_keys;
  if (c->keys > UINT32_MAX) {
    std::fprintf(stderr, "shmdict_replica_bench: --keys is limited to 2^32 - 1\n");
    return 2;
  }
  return std::nullopt;
}

int Run(const Config& c) {
  RegistryDir registry;
  Etcd etcd;
  const std::string etcd_version = peers::CommandOutput("etcd --version 2>/dev/null");
  std::fprintf(stderr, "etcd on %s (%s), fsync on\n", etcd.endpoint().c_str(),
               etcd_version.c_str());
  const std::string etcdctl_na =
      peers::CommandOutput("command -v etcdctl").empty() ? "etcdctl not found (etcd-client)" : "";

  const std::string prefix = "/bench/live/";
  std::fprintf(stderr, "loading %" PRIu64 " keys for the reads\n", c.keys);
  const int64_t load_begin = MonotonicNs();
  etcd.Load(prefix, c.keys);
  const double reads_load_s = static_cast<double>(MonotonicNs() - load_begin) * 1e-9;
  Replica replica(etcd, registry, prefix, "live");
  std::fprintf(stderr, "replica of %s ready in %.2f s, --listen %s\n", prefix.c_str(),
               static_cast<double>(replica.ready_ns()) * 1e-9, replica.listen().c_str());

  std::fprintf(stderr, "1/4 reads (%" PRIu64 " keys)\n", c.keys);
  const Reads reads = MeasureReads(replica, c);
  std::fprintf(stderr, "2/4 visibility (%" PRIu64 " samples)\n", c.samples);
  const Visibility visible = MeasureVisibility(etcd, replica, prefix, c);
  std::fprintf(stderr, "3/4 writes (%" PRIu64 " pairs)\n", c.samples);
  const Writes writes = MeasureWrites(etcd, replica, prefix, c);
  std::fprintf(stderr, "4/4 catch-up (%" PRIu64 " keys)\n", c.catchup_keys);
  const Catchup catchup = MeasureCatchup(etcd, registry, c, etcdctl_na);

  const std::string n = std::to_string(c.keys), cn = std::to_string(c.catchup_keys);
  std::vector<Row> rows = {
      {"visible_p50",
       "etcd Put -> visible in the replica's shared memory (WaitForChange + Get in another "
       "thread) vs a raw etcd Watch stream on the prefix, p50 from the Put call",
       "ns", visible.replica.p50, "etcd watch", visible.watch.p50, "<= 1.2x", 1.2, std::nullopt},
      {"visible_p99", "... p99", "ns", visible.replica.p99, "etcd watch", visible.watch.p99, "",
       std::nullopt, std::nullopt},
      {"write_p50",
       "Set through the replica's --listen (RemoteDict, no mirror; returns once applied "
       "locally) vs a direct etcd Put, p50",
       "ns", writes.replica.p50, "etcd Put", writes.put.p50, "<= 1.5x", 1.5, std::nullopt},
      {"write_p99", "... p99", "ns", writes.replica.p99, "etcd Put", writes.put.p99, "",
       std::nullopt, std::nullopt},
      {"read_rate",
       "Dict::Get(key, &out) on a " + n + "-key replica dict vs a plain local dict, same items",
       "ops/s", reads.replica, "local dict", reads.local, ">= 0.95x", std::nullopt, 0.95},
      {"catchup",
       "Replica started against " + cn + " keys (128-op Txns): spawn -> ready vs `etcdctl get " +
           "--prefix > /dev/null`",
       "ns", catchup.replica, "etcdctl", catchup.etcdctl, "< 2x", 2.0, std::nullopt},
  };

  json meta{{"samples", c.samples},
            {"read_keys", c.keys},
            {"catchup_keys", c.catchup_keys},
            {"value_bytes", kValueBytes},
            {"txn_ops", kTxnOps},
            {"quick", c.quick},
            {"cpus", std::thread::hardware_concurrency()},
            {"load_average", peers::LoadAverage()},
            {"etcd", etcd_version},
            {"etcd_fsync", true},
            {"reads_load_s", reads_load_s},
            {"reads_replica_ready_s", static_cast<double>(replica.ready_ns()) * 1e-9},
            {"catchup_load_s", catchup.load_s},
            {"listen_get_p50_ns", writes.hop.p50.value},
            {"listen_get_p99_ns", writes.hop.p99.value}};
  const std::string md = Markdown(rows);
  std::printf("%s", md.c_str());
  const std::string notes =
      shmdict::bench::Format("Loading: %.1f s for the reads' keys, ", reads_load_s) +
      shmdict::bench::Format("%.1f s for the catch-up's keys ", catchup.load_s) + "(sequential " +
      std::to_string(kTxnOps) + "-op Txns, fsync on). The reads' replica was ready " +
      shmdict::bench::FormatNs(static_cast<double>(replica.ready_ns()), 0, "-") +
      " after its spawn. Load average at the end: " + peers::LoadAverage() + ".\n\n" +
      "Stages of a Set through --listen: a Get through --listen (the hop to the replica alone, "
      "served from its dict) took " +
      shmdict::bench::FormatNs(writes.hop.p50.value, 0, "-") + " p50, " +
      shmdict::bench::FormatNs(writes.hop.p99.value, 0, "-") +
      " p99; then the replica's own etcd Put (the baseline); then the event's way back through "
      "the replica's watch and its apply, which the visibility rows put " +
      shmdict::bench::FormatNs(visible.replica.p50.value - visible.watch.p50.value, 0, "-") +
      " after a raw watch's at p50.\n";
  std::printf("\n%s", notes.c_str());
  if (!c.out_dir.empty()) {
    std::filesystem::create_directories(c.out_dir);
    std::ofstream(c.out_dir + "/replica.md")
        << "# shmdict-replica against etcd's own clients\n\n"
        << "`shmdict_replica_bench" << (c.quick ? " --quick" : "") << "`: 1-member etcd ("
        << etcd_version << ", fsync on, data in /tmp), " << c.samples
        << " visibility samples and write pairs, " << c.keys << " keys read, " << c.catchup_keys
        << " keys caught up; " << kValueBytes << "-byte text values; "
        << meta["cpus"].get<unsigned>()
        << " CPUs. Ratio: replica / baseline (latencies: lower is better; reads: higher is "
           "better).\n\n"
        << md << "\n"
        << notes;
  }
  if (!c.json_path.empty()) peers::WriteFile(c.json_path, ReportJson(rows, meta).dump(2) + "\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--check-json") {
    const std::vector<std::string> problems = CheckJson(argv[2]);
    for (const std::string& p : problems) std::fprintf(stderr, "replica.json: %s\n", p.c_str());
    if (problems.empty()) std::printf("%s: every row has a figure or n/a with a reason\n", argv[2]);
    return problems.empty() ? 0 : 1;
  }
  Config config;
  if (auto exit_code = ParseFlags(argc, argv, &config)) return *exit_code;
  peers::InstallCleanup();
  const int exit_code = shmdict::bench::RunReportingErrors<BenchError>("shmdict_replica_bench",
                                                                       [&] { return Run(config); });
  // Every replica and dict handle is gone here: what is left in /dev/shm is a leak.
  std::error_code ignored;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ignored)) {
    const std::string name = entry.path().filename().string();
    if (name.find(peers::RunPrefix()) != std::string::npos) {
      std::fprintf(stderr, "shmdict_replica_bench: left in /dev/shm: %s\n", name.c_str());
    }
  }
  if (const int leaked = peers::SweepRunFiles(); leaked > 0) {
    std::fprintf(stderr, "shmdict_replica_bench: %d entries named %s* were left in /dev/shm\n",
                 leaked, peers::RunPrefix().c_str());
    return 1;
  }
  return exit_code;
}
