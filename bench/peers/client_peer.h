// ClientPeer<Client>: the Peer of every C++ system, written once. A system supplies a small
// Client class (below) and gets the same timed loops, the same child processes and the same
// verification as every other: the loops are templates, so each system's Get/Set is called
// directly (inlined where it can be), not through a virtual call per operation.
//
// The Client concept:
//   static constexpr const char* kName;         // "lmdb"
//   static constexpr bool kCrossProcess;        // false: the process-local baseline
//   static std::string Unavailable();           // why it cannot run here; empty if it can
//   static std::string Describe();              // what exactly one operation does
//   static std::string WatchUnavailable(WatchMode), WatchDescription(WatchMode);
//   static std::unique_ptr<Client> Create(const std::string& tag, const Workload& sizing);
//   static std::unique_ptr<Client> Connect(const std::string& where);  // another process
//   std::string where() const;                  // what Connect needs
//   std::optional<std::string_view> Get(std::string_view key);  // a copy the client owns, valid
//                                                               // until its next call
//   void Set(std::string_view key, std::string_view value);
//   void Import(const Workload& w, size_t batch);  // keys [0, n) at variant 0, as a user would
//   uint64_t Count();
//   Memory StoreMemory();
//   void BeginWatch(WatchMode), EndWatch(WatchMode);     // writer side (e.g. enable notifications)
//   void PrepareWatch(std::string_view key, WatchMode);  // reader side, before "ready"
//   std::string_view AwaitChange(std::string_view key, std::string_view last, WatchMode);
// Every method throws BenchError on failure.
#ifndef SHMDICT_BENCH_PEERS_CLIENT_PEER_H_
#define SHMDICT_BENCH_PEERS_CLIENT_PEER_H_

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "harness.h"
#include "peer.h"
#include "workload.h"

namespace peers {

// A child that hangs (a deadlocked store, a vanished writer) dies instead of hanging the run.
inline constexpr unsigned kChildAlarmSeconds = 300;
inline constexpr int64_t kChildStartTimeoutNs = 120'000'000'000;
inline constexpr char kChildCommand[] = "--internal-child";
// The key the change-propagation writer stores its timestamps under (not a workload key).
inline constexpr char kWatchKey[] = "watch:ts";

// The watch methods of a Client with no change notification (LMDB, a Boost.Interprocess map):
// the reader polls Get until the value changes. Client derives from PollingWatch<Client>.
template <typename Client>
class PollingWatch {
 public:
  void BeginWatch(WatchMode) {}
  void EndWatch(WatchMode) {}
  void PrepareWatch(std::string_view, WatchMode) {}
  std::string_view AwaitChange(std::string_view key, std::string_view last, WatchMode) {
    for (;;) {
      const std::optional<std::string_view> v = static_cast<Client*>(this)->Get(key);
      if (v && *v != last) return *v;
      __builtin_ia32_pause();
    }
  }
};

// argv of a child: --internal-child ROLE SYSTEM WHERE key=value...
struct ChildArgs {
  std::string role;  // reader, writer, attach, watch
  std::string system;
  std::string where;
  std::map<std::string, std::string> fields;
  uint64_t Number(const std::string& key) const {
    return static_cast<uint64_t>(NumberField(fields, key));
  }
};

// "t<ns>" padded with '.' to the workload's value size: what the change-propagation writer stores.
inline std::string TimestampValue(int64_t ns, size_t bytes) {
  std::string v = "t";
  v += std::to_string(ns);  // not "t" + ...: GCC 12 -O3 false -Wrestrict (bug 105329)
  if (v.size() < bytes) v.resize(bytes, '.');
  return v;
}
inline std::string StopValue(size_t bytes) {
  std::string v = "stop";
  if (v.size() < bytes) v.resize(bytes, '.');
  return v;
}

// One timed run of reads, overwrites or the 90/10 mix over w.order[0 .. max_ops), stopping early
// when the time box is used up (checked every 64 ops). Reads verify the full value against
// expected[i], the variant written last; writes record the variant they store.
template <typename Client>
RunResult RunOps(Client& c, const Workload& w, const RunSpec& spec, std::vector<uint8_t>& expected,
                 int write_variant) {
  RunResult r;
  const uint64_t n = std::min<uint64_t>(spec.max_ops, w.order.size());
  const bool mix = spec.kind == OpKind::kMix;
  const bool all_writes = spec.kind == OpKind::kWrite;
  const int64_t start = MonotonicNs();
  const int64_t deadline = start + spec.time_box_ns;
  uint64_t previous = op_clock::Now();
  uint64_t k = 0;
  while (k < n) {
    const uint64_t chunk_end = std::min<uint64_t>(n, k + 64);
    for (; k < chunk_end; ++k) {
      const uint32_t i = w.order[k];
      if (all_writes || (mix && w.mix_is_write[k])) {
        c.Set(w.key(i), w.value(i, write_variant));
        expected[i] = static_cast<uint8_t>(write_variant);
      } else {
        const std::optional<std::string_view> got = c.Get(w.key(i));
        if (!got || *got != w.value(i, expected[i])) ++r.mismatches;
      }
      const uint64_t now = op_clock::Now();
      r.latency.Add(op_clock::ToNs(now - previous));
      previous = now;
    }
    if (MonotonicNs() >= deadline) break;
  }
  r.elapsed_ns = MonotonicNs() - start;
  r.ops = k;
  return r;
}

// The reader or writer of a multi-process run, until CLOCK_MONOTONIC reaches end_ns. Readers
// accept either variant of a key (a writer runs concurrently) but nothing else; the writer flips
// the variant at each pass over the order.
template <typename Client>
RunResult RunRole(Client& c, const Workload& w, bool writer, uint64_t first, int64_t end_ns) {
  RunResult r;
  const uint64_t n = w.order.size();
  uint64_t k = first % n;
  int variant = 1;
  const int64_t start = MonotonicNs();
  uint64_t previous = op_clock::Now();
  for (;;) {
    for (int j = 0; j < 64; ++j) {
      const uint32_t i = w.order[k];
      if (writer) {
        c.Set(w.key(i), w.value(i, variant));
      } else {
        const std::optional<std::string_view> got = c.Get(w.key(i));
        if (!got || (*got != w.value(i, 0) && *got != w.value(i, 1))) ++r.mismatches;
      }
      if (++k == n) {
        k = 0;
        variant ^= 1;
      }
      const uint64_t now = op_clock::Now();
      r.latency.Add(op_clock::ToNs(now - previous));
      previous = now;
    }
    r.ops += 64;
    if (MonotonicNs() >= end_ns) break;
  }
  r.elapsed_ns = MonotonicNs() - start;
  return r;
}

inline std::string RunResultFields(const RunResult& r) {
  return "ops=" + std::to_string(r.ops) + " elapsed_ns=" + std::to_string(r.elapsed_ns) +
         " mismatches=" + std::to_string(r.mismatches) + " hist=" + r.latency.Serialize();
}

inline RunResult ParseRunResult(const std::map<std::string, std::string>& f) {
  RunResult r;
  r.ops = static_cast<uint64_t>(NumberField(f, "ops"));
  r.elapsed_ns = static_cast<int64_t>(NumberField(f, "elapsed_ns"));
  r.mismatches = static_cast<uint64_t>(NumberField(f, "mismatches"));
  r.latency = Histogram::Parse(Field(f, "hist"));
  return r;
}

// Waits for a child's "ready" line; fails with how it ended otherwise.
inline void ExpectReady(Process& child, const std::string& what) {
  std::optional<std::string> line = child.ReadLine(kChildStartTimeoutNs);
  if (!line || *line != "ready") {
    Fail(what + " did not start (" + child.Wait(5'000'000'000) + ")");
  }
}

inline std::map<std::string, std::string> ReadResult(Process& child, const std::string& what,
                                                     int64_t timeout_ns) {
  std::optional<std::string> line = child.ReadLine(timeout_ns);
  const std::string ended = child.Wait(30'000'000'000);
  if (!line || !ended.empty()) {
    Fail(what + " failed (" + (ended.empty() ? "no output" : ended) + ")");
  }
  return ParseFields(*line);
}

template <typename Client>
class ClientPeer final : public Peer {
 public:
  std::string name() const override { return Client::kName; }
  std::string description() const override { return Client::Describe(); }
  std::string unavailable() const override { return Client::Unavailable(); }

  void Start(const Workload& w, const Config& config) override {
    work_ = &w;
    client_ = Client::Create("work", w);
    empty_memory_ = client_->StoreMemory().kib;
    client_->Import(w, config.batch);
    if (const uint64_t count = client_->Count(); count != w.n) {
      Fail("holds " + std::to_string(count) + " keys after importing " + std::to_string(w.n));
    }
    expected_.assign(w.n, 0);
    // Warm: fault in pages, open connections, fill caches (verified, not reported).
    RunResult warm = Run({OpKind::kRead, w.n, config.time_box_ns / 4});
    if (warm.mismatches != 0) {
      Fail(std::to_string(warm.mismatches) + " wrong values in the warm-up reads");
    }
  }

  RunResult Run(const RunSpec& spec) override {
    const int variant = spec.kind == OpKind::kRead ? 0 : (write_runs_++ % 2 == 0 ? 1 : 0);
    return RunOps(*client_, *work_, spec, expected_, variant);
  }

  Memory StoreMemory() override {
    Memory m = client_->StoreMemory();
    m.empty_kib = empty_memory_;
    return m;
  }

  std::string MultiUnavailable() const override {
    return Client::kCrossProcess ? "" : "process-local: no other process can reach it";
  }

  MultiResult RunMulti(int readers, int64_t time_box_ns) override {
    MultiResult result;
    if constexpr (Client::kCrossProcess) {
      std::vector<std::unique_ptr<Process>> children;
      const uint64_t n = work_->n;
      auto spawn = [&](const char* role, int index) {
        children.push_back(SpawnSelf(
            {kChildCommand, role, Client::kName, client_->where(), "keys=" + std::to_string(n),
             "value_bytes=" + std::to_string(work_->value_bytes),
             "first=" +
                 std::to_string(n * static_cast<uint64_t>(index) / static_cast<uint64_t>(readers)),
             "tpn=" + FormatCalibration()}));
      };
      spawn("writer", 0);
      for (int r = 0; r < readers; ++r) spawn("reader", r);
      for (auto& child : children) ExpectReady(*child, std::string(Client::kName) + " child");
      const int64_t end_ns = MonotonicNs() + 10'000'000 + time_box_ns;
      for (auto& child : children) child->WriteLine("go end_ns=" + std::to_string(end_ns));
      for (size_t c = 0; c < children.size(); ++c) {
        RunResult r = ParseRunResult(ReadResult(*children[c], std::string(Client::kName) + " child",
                                                time_box_ns + kChildStartTimeoutNs));
        if (c == 0) {
          result.writes = std::move(r);
        } else {
          result.reads.ops += r.ops;
          result.reads.mismatches += r.mismatches;
          result.reads.latency.Merge(r.latency);
          result.reads.elapsed_ns = std::max(result.reads.elapsed_ns, r.elapsed_ns);
        }
      }
    } else {
      (void)readers;
      (void)time_box_ns;
      Fail("RunMulti on a process-local system");
    }
    return result;
  }

  std::string WatchUnavailable(WatchMode mode) const override {
    return Client::WatchUnavailable(mode);
  }
  std::string WatchDescription(WatchMode mode) const override {
    return Client::WatchDescription(mode);
  }

  WatchResult RunWatch(WatchMode mode, int samples, int64_t spacing_ns) override {
    WatchResult result;
    if constexpr (Client::kCrossProcess) {
      const size_t bytes = work_->value_bytes;
      client_->Set(kWatchKey, TimestampValue(0, bytes));
      client_->BeginWatch(mode);
      std::unique_ptr<Process> reader =
          SpawnSelf({kChildCommand, "watch", Client::kName, client_->where(),
                     std::string("mode=") + (mode == WatchMode::kPoll ? "poll" : "notify"),
                     "value_bytes=" + std::to_string(bytes), "tpn=" + FormatCalibration()});
      ExpectReady(*reader, std::string(Client::kName) + " watch child");
      // Spacing lets the reader return to its idle wait before each write, so every sample is a
      // wake-up from idle rather than a reader still busy with the previous change.
      SleepNs(10 * spacing_ns);
      for (int s = 0; s < samples; ++s) {
        SleepNs(spacing_ns);
        client_->Set(kWatchKey, TimestampValue(MonotonicNs(), bytes));
      }
      SleepNs(spacing_ns);  // so the last sample is not coalesced with the stop marker
      client_->Set(kWatchKey, StopValue(bytes));
      std::map<std::string, std::string> f =
          ReadResult(*reader, std::string(Client::kName) + " watch child", kChildStartTimeoutNs);
      client_->EndWatch(mode);
      result.latency = Histogram::Parse(Field(f, "hist"));
      result.writes = static_cast<uint64_t>(samples);
    } else {
      (void)mode;
      (void)samples;
      (void)spacing_ns;
      Fail("RunWatch on a process-local system");
    }
    return result;
  }

  void Stop() override { client_.reset(); }

  BulkResult BulkImport(const Workload& big, const Config& config) override {
    BulkResult result;
    std::unique_ptr<Client> store = Client::Create("big", big);
    const double empty = store->StoreMemory().kib;
    const int64_t start = MonotonicNs();
    store->Import(big, config.batch);
    result.import_ns = MonotonicNs() - start;
    result.keys = store->Count();
    if (result.keys != big.n) {
      Fail("holds " + std::to_string(result.keys) + " keys after importing " +
           std::to_string(big.n));
    }
    result.memory = store->StoreMemory();
    result.memory.empty_kib = empty;
    if constexpr (Client::kCrossProcess) {
      const uint32_t probe = static_cast<uint32_t>(big.n / 2);
      auto attach = [&] {
        std::unique_ptr<Process> child = SpawnSelf(
            {kChildCommand, "attach", Client::kName, store->where(),
             "probe_key=" + std::string(big.key(probe)),
             "probe_value=" + std::string(big.value(probe, 0)), "tpn=" + FormatCalibration()});
        std::map<std::string, std::string> f =
            ReadResult(*child, std::string(Client::kName) + " attach child", kChildStartTimeoutNs);
        AttachResult a;
        a.attach_ns = NumberField(f, "attach_ns");
        a.pss_kib = NumberField(f, "pss_after_kb") - NumberField(f, "pss_before_kb");
        a.rss_kib = NumberField(f, "rss_after_kb") - NumberField(f, "rss_before_kb");
        return a;
      };
      result.attach_now = attach();
      SleepNs(config.settle_ns);
      result.attach_settled = attach();
    } else {
      result.attach_na = "process-local: there is nothing another process could attach to";
    }
    return result;
  }

 private:
  static std::string FormatCalibration() {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.9g", op_clock::Calibration());
    return buffer;
  }

  const Workload* work_ = nullptr;
  std::unique_ptr<Client> client_;
  double empty_memory_ = NAN;
  std::vector<uint8_t> expected_;  // variant last written, per key
  int write_runs_ = 0;
};

// The hidden subcommands of a cross-process system: reader, writer, attach, watch.
template <typename Client>
int ClientChildMain(const ChildArgs& a) {
  alarm(kChildAlarmSeconds);
  op_clock::Init(NumberField(a.fields, "tpn"));
  try {
    if (a.role == "attach") {
      const std::string& key = Field(a.fields, "probe_key");
      const std::string& expected = Field(a.fields, "probe_value");
      std::map<std::string, int64_t> before = ReadSmapsRollup();
      const int64_t t0 = MonotonicNs();
      std::unique_ptr<Client> c = Client::Connect(a.where);
      const std::optional<std::string_view> got = c->Get(key);
      const int64_t t1 = MonotonicNs();
      std::map<std::string, int64_t> after = ReadSmapsRollup();
      if (!got || *got != expected) {
        Fail("attach: '" + key + "' reads " + (got ? "'" + std::string(*got) + "'" : "nothing") +
             ", expected '" + expected + "'");
      }
      std::printf("attach_ns=%" PRId64 " rss_before_kb=%" PRId64 " rss_after_kb=%" PRId64
                  " pss_before_kb=%" PRId64 " pss_after_kb=%" PRId64 "\n",
                  t1 - t0, before["Rss"], after["Rss"], before["Pss"], after["Pss"]);
      return 0;
    }
    if (a.role == "watch") {
      const bool poll = Field(a.fields, "mode") == "poll";
      const WatchMode mode = poll ? WatchMode::kPoll : WatchMode::kNotify;
      const std::string stop = StopValue(a.Number("value_bytes"));
      std::unique_ptr<Client> c = Client::Connect(a.where);
      c->PrepareWatch(kWatchKey, mode);
      const std::optional<std::string_view> first = c->Get(kWatchKey);
      if (!first) Fail("watch: the key is missing");
      std::string last(*first);
      Histogram latency;
      std::printf("ready\n");
      std::fflush(stdout);
      for (;;) {
        const std::string_view now_value = c->AwaitChange(kWatchKey, last, mode);
        const int64_t now = MonotonicNs();
        last.assign(now_value);
        if (last == stop) break;
        if (last.empty() || last[0] != 't') Fail("watch: unexpected value '" + last + "'");
        const int64_t ts = std::strtoll(last.c_str() + 1, nullptr, 10);
        if (ts > 0) latency.Add(static_cast<uint64_t>(std::max<int64_t>(0, now - ts)));
      }
      std::printf("count=%" PRIu64 " hist=%s\n", latency.count(), latency.Serialize().c_str());
      return 0;
    }
    if (a.role == "reader" || a.role == "writer") {
      const Workload w = MakeWorkload(a.Number("keys"), a.Number("value_bytes"), 2);
      std::unique_ptr<Client> c = Client::Connect(a.where);
      for (uint64_t k = 0; k < std::min<uint64_t>(w.n, 1000); ++k) c->Get(w.key(w.order[k]));
      std::printf("ready\n");
      std::fflush(stdout);
      char line[128];
      if (std::fgets(line, sizeof line, stdin) == nullptr) return 3;  // the parent gave up
      line[std::strcspn(line, "\n")] = '\0';
      const int64_t end_ns = static_cast<int64_t>(NumberField(ParseFields(line), "end_ns"));
      const RunResult r = RunRole(*c, w, a.role == "writer", a.Number("first"), end_ns);
      std::printf("%s\n", RunResultFields(r).c_str());
      return 0;
    }
    Fail("unknown child role '" + a.role + "'");
  } catch (const BenchError& e) {
    std::fprintf(stderr, "%s %s child: %s\n", a.system.c_str(), a.role.c_str(), e.what());
    return 1;
  }
}

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_CLIENT_PEER_H_
