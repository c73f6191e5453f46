// shmdict_peers: the same workloads, with the same keys and value sizes, on shmdict and on the
// systems a user would otherwise reach for, in one run:
//
//   shmdict             shmdict::Dict through shared memory (public API only)
//   unordered_map       std::unordered_map<std::string, std::string> in one process: the limit
//   lmdb                LMDB env on tmpfs, MDB_NOSYNC|MDB_NOMETASYNC, a write txn per write,
//                       reads through one read-only txn reused with mdb_txn_reset/renew
//   boost_interprocess  boost::interprocess::map in managed_shared_memory + interprocess_mutex
//   redis               redis-server on loopback started by the harness, hiredis unpipelined
//   python_manager      multiprocessing.Manager().dict(), driven by manager_peer.py
//
//   shmdict_peers [--quick] [--out DIR] [--json FILE] [--keys N] [--big-keys N] [--value-bytes N]
//   [--reps R]
//                 [--time-box-ms MS] [--batch N] [--samples N] [--spacing-us U] [--readers 1,2]
//                 [--systems a,b] [--python PATH] [--no-plots]
//   shmdict_peers --check-json FILE     (the smoke test's check of a peers.json)
//
// Fairness rules (the report's "Method" section states the same, with the run's figures):
// - Same data for all: keys "key:<i>", values of exactly --value-bytes bytes that encode the key's
//   index and a variant, one deterministic shuffled access order (shmdict_bench's seed), the same
//   10% write positions in the mix. Python reads the order from a file the harness writes and
//   checks its values against probes the harness sends.
// - Same number of operations: a per-op run is one pass over the order unless the time box ends
//   it first; fast systems finish the pass, slow ones (Redis, Python) are time-boxed, and the
//   report gives every run's op count.
// - Nothing can cheat: every read compares the full value with the one written last (concurrent
//   readers: either variant of that key); a mismatch is an ERROR cell and fails the run. Imports
//   are checked by counting keys, and by the attach probe.
// - Best of --reps, systems alternating within each repetition (as shmdict_bench alternates
//   shmdict and its baseline), so that interference on a shared machine hits every system alike.
// - Latency: one clock reading per op, latency = difference of consecutive readings (see
//   op_clock in harness.h); its cost is in every system's figures alike and is reported.
// - Process-local systems cannot do cross-process workloads: n/a, with the reason. Whatever a
//   system cannot do is "n/a: reason" in the output, never left out.
// - What exactly one operation is, per system, is each adapter's Describe(), printed in the report.
//
// Process hygiene (as shmdict_bench): children are this binary re-executed through /proc/self/exe
// with the hidden subcommand --internal-child, or redis-server / python3; each runs in its own
// process group with PR_SET_PDEATHSIG and an alarm, and is killed at exit, on errors and from the
// fatal-signal handler. Everything named in /dev/shm starts with "shmdict_bench_<pid>_" (shmdict
// adds its "shmdict." prefix) and is swept at the end and on fatal signals.
#include <sched.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "harness.h"
#include "peer.h"
#include "report.h"
#include "support/bench_support.h"
#include "systems.h"
#include "workload.h"

#ifndef SHMDICT_SOURCE_DIR
#define SHMDICT_SOURCE_DIR "."
#endif
#ifndef SHMDICT_PEERS_MANAGER_SCRIPT
#define SHMDICT_PEERS_MANAGER_SCRIPT SHMDICT_SOURCE_DIR "/bench/peers/manager_peer.py"
#endif

namespace peers {
namespace {

// Idle time before every measured run, so that background work a previous run left behind
// (shmdict's snapshot builds, a server's lazy frees) does not overlap the next system's run.
constexpr int64_t kGapNs = 50'000'000;

// ---------------------------------------------------------------------------------- flags

int CpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

// Fills a Config from the command line. nullopt: run; otherwise the exit code to return.
std::optional<int> ParseFlags(int argc, char** argv, Config* c) {
  using shmdict::bench::AddCountFlag;
  CLI::App app{
      "Runs the same workloads on shmdict and its peers (LMDB, Boost.Interprocess, Redis, "
      "Python's Manager().dict(), a std::unordered_map) and writes peers.md and plots "
      "(and JSON with --json). `shmdict_peers --check-json FILE` checks a report instead.",
      "shmdict_peers"};
  uint64_t keys = 0, big_keys = 0, value_bytes = 0, reps = 0, time_box_ms = 0, batch = 0,
           samples = 0, spacing_us = 0;
  bool keys_given = false, big_keys_given = false, value_bytes_given = false, reps_given = false,
       time_box_given = false, batch_given = false, samples_given = false, spacing_given = false;
  bool no_plots = false;
  std::vector<uint64_t> readers;
  app.add_flag("--quick", c->quick,
               "smoke run: 2000 keys, 20000 big keys, 1 rep, 50 ms time box (explicit flags win)");
  app.add_option("--out", c->out_dir,
                 "where peers.md and the plots go (default: the current directory; the "
                 "committed report is made with --out docs/bench)");
  app.add_option("--json", c->json_path,
                 "also write the report as JSON to this file (the input of --check-json; not "
                 "committed: e.g. build/peers.json)");
  AddCountFlag(app, "--keys", &keys, &keys_given, "keys of the per-op workloads (default 100k)");
  AddCountFlag(app, "--big-keys", &big_keys, &big_keys_given,
               "keys of the bulk import and attach workloads (default 1M)");
  AddCountFlag(app, "--value-bytes", &value_bytes, &value_bytes_given,
               "value size, at least 16 (default 32)");
  AddCountFlag(app, "--reps", &reps, &reps_given,
               "repetitions, best taken, systems alternating (default 3)");
  AddCountFlag(app, "--time-box-ms", &time_box_ms, &time_box_given,
               "longest measured run per workload, system and rep (default 750)");
  AddCountFlag(app, "--batch", &batch, &batch_given,
               "items per call/transaction/MSET in the bulk import (default 1000)");
  AddCountFlag(app, "--samples", &samples, &samples_given,
               "change-propagation writes per reader kind (default 2000)");
  AddCountFlag(app, "--spacing-us", &spacing_us, &spacing_given,
               "pause between those writes, in microseconds (default 1000)");
  app.add_option("--readers", readers,
                 "reader counts of the 1-writer-N-readers workload, e.g. 1,4 (default: 1 and the "
                 "number of CPUs)")
      ->delimiter(',')
      ->check(CLI::Range(uint64_t{1}, uint64_t{64}));
  app.add_option("--systems", c->systems,
                 "only these (others report n/a): shmdict, unordered_map, lmdb, "
                 "boost_interprocess, redis, python_manager")
      ->delimiter(',');
  app.add_option("--python", c->python,
                 "interpreter for manager_peer.py (default /usr/bin/python3)");
  app.add_flag("--no-plots", no_plots, "skip gnuplot");
  if (auto exit_code = shmdict::bench::ParseCommandLine(app, argc, argv)) return exit_code;
  if (no_plots) c->plots = false;
  if (c->quick) {
    c->keys = 2000;
    c->big_keys = 20000;
    c->reps = 1;
    c->time_box_ns = 50'000'000;
    c->samples = 100;
    c->spacing_ns = 200'000;
    c->settle_ns = 100'000'000;
  }
  if (keys_given) c->keys = keys;
  if (big_keys_given) c->big_keys = big_keys;
  if (value_bytes_given) c->value_bytes = value_bytes;
  if (reps_given) c->reps = static_cast<int>(reps);
  if (time_box_given) c->time_box_ns = static_cast<int64_t>(time_box_ms) * 1'000'000;
  if (batch_given) c->batch = batch;
  if (samples_given) c->samples = static_cast<int>(samples);
  if (spacing_given) c->spacing_ns = static_cast<int64_t>(spacing_us) * 1000;
  if (c->value_bytes < kMinValueBytes) {
    std::fprintf(stderr, "shmdict_peers: --value-bytes must be at least %zu\n", kMinValueBytes);
    return 2;
  }
  if (c->keys > UINT32_MAX || c->big_keys > UINT32_MAX) {
    std::fprintf(stderr, "shmdict_peers: key counts are limited to 2^32 - 1\n");
    return 2;
  }
  for (uint64_t r : readers) c->reader_counts.push_back(static_cast<int>(r));
  if (readers.empty()) {
    c->reader_counts = {1};
    if (CpuCount() > 1) c->reader_counts.push_back(CpuCount());
  }
  // Never the source tree by default: a run from a build folder must not rewrite the committed
  // report as a side effect.
  if (c->out_dir.empty()) c->out_dir = ".";
  c->manager_script = SHMDICT_PEERS_MANAGER_SCRIPT;
  return std::nullopt;
}

// ------------------------------------------------------------------------------- the report

std::string ShellQuote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=:,+") == std::string::npos) {
    return arg;
  }
  std::string out = "'";
  for (char ch : arg) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

std::string FirstLineWith(const char* path, const char* prefix) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) {
      const size_t colon = line.find(':');
      std::string value = colon == std::string::npos ? line : line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      return value;
    }
  }
  return "unknown";
}

std::string Iso8601Now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string GitDescription() {
  const std::string source = ShellQuote(SHMDICT_SOURCE_DIR);
  const std::string commit = CommandOutput("git -C " + source + " rev-parse HEAD 2>/dev/null");
  if (commit.empty()) return "unknown (not a git checkout)";
  const std::string branch =
      CommandOutput("git -C " + source + " rev-parse --abbrev-ref HEAD 2>/dev/null");
  // The report's own outputs do not count as local changes.
  const std::string dirty =
      CommandOutput("git -C " + source +
                    " status --porcelain --untracked-files=no -- . ':(exclude)docs/bench' "
                    "2>/dev/null | head -1");
  return commit + " (branch " + branch + (dirty.empty() ? ")" : ", with uncommitted changes)");
}

std::vector<std::string> MethodNotes(const Config& c) {
  const std::string time_box = std::to_string(c.time_box_ns / 1'000'000) + " ms";
  const std::string settle = std::to_string(c.settle_ns / 1'000'000) + " ms";
  char clock_cost[32];
  std::snprintf(clock_cost, sizeof clock_cost, "%.0f ns", op_clock::OverheadNs());
  return {
      "**Same data, same order.** Every system holds the same keys (`key:<i>`, i < " +
          std::to_string(c.keys) + "; " + std::to_string(c.big_keys) +
          " for bulk import and attach) with the same values (exactly " +
          std::to_string(c.value_bytes) +
          " bytes, encoding the key's index and a variant, so an overwrite changes the bytes), "
          "and is accessed in one deterministic shuffled order (splitmix64 Fisher-Yates with "
          "shmdict_bench's seed); the 90/10 mix writes at the same positions for all. "
          "manager_peer.py reads the order from a file the harness writes and checks its values "
          "against probe values the harness sends.",
      "**Same number of operations where no time box is needed.** A per-op run is one pass over "
      "the order (" +
          std::to_string(c.keys) + " ops) unless its time box (" + time_box +
          ") ends it first: the fast systems always complete the pass; slow ones (Redis, Python "
          "at tens of microseconds per op) are time-boxed, and each row gives the ops it "
          "measured.",
      "**No system can cheat.** Every read compares the full value with the one written last "
      "(readers running beside a writer: either variant of that key, nothing else); a missing "
      "or different value is counted, shown as ERROR and fails the run (exit status 1). Writes "
      "are checked by the later workloads' reads (the mix reads keys the write run overwrote), "
      "imports by counting the keys and by the attach probe read.",
      "**Best of " + std::to_string(c.reps) +
          ", systems alternating.** Each repetition runs every system in turn before the next "
          "repetition starts, so interference on this shared machine hits all systems alike; "
          "the best repetition is reported (highest ops/s, shortest time); memory figures are "
          "the median over repetitions.",
      "**Warm-up and gaps.** Each system's per-op store is filled (untimed, by its bulk-import "
      "path) and then read for a quarter of the time box (verified, not reported) before any "
      "measured run. All per-op stores stay open while the systems alternate; before every "
      "measured run the harness idles 50 ms, so background work a previous run left (shmdict's "
      "snapshot builds) does not overlap the next run.",
      "**Latency per operation.** One clock reading per op: " + op_clock::Describe() +
          "; an op's latency is the difference between consecutive readings, so it includes "
          "the loop's own work (the value comparison, the histogram update); one reading plus "
          "one update costs " +
          std::string(clock_cost) +
          ", paid by every system alike and included in the ops/s figures too. Python times "
          "with time.monotonic_ns() (same clock), negligible against its ~50 us operations. "
          "Percentiles come from log-linear histograms (exact below 64 ns, < 1.6% error above).",
      "**1 writer + N readers.** The writer and each reader are separate processes (this binary "
      "re-executed through /proc/self/exe, or multiprocessing fork children for Python), all "
      "connected and warmed before a common start, all stopping at the same CLOCK_MONOTONIC "
      "deadline (the time box). Reads/s is the sum over the readers. With N = the number of "
      "CPUs there are N+1 client processes (plus Redis's or the manager's server) on N CPUs: "
      "oversubscribed, as a real deployment would be.",
      "**Attach.** A fresh process (the harness re-executed, or a fresh python3) times from its "
      "first open/connect call to the first verified read of one key of the " +
          std::to_string(c.big_keys) +
          "-key store and reports the PSS and RSS it gained over that span "
          "(/proc/self/smaps_rollup): the per-process cost. Measured twice per import: the "
          "moment the import returned (competing with background work the import left, such "
          "as shmdict's snapshot build) and after " +
          settle + " of idle time.",
      "**Store memory** is what the store costs the host: the tmpfs pages of shared-memory "
      "stores (shmdict's segments, LMDB's directory, Boost's segment), the RSS of server "
      "processes (redis-server, the manager's server process) and, for the map, the heap its "
      "import added. "
      "\"empty\" is the same reading on the freshly created, empty store (for servers, their "
      "own footprint). The manager's server process is started with the 'spawn' context so "
      "that it does not inherit the driver's workload lists.",
      "**Bulk import** of " + std::to_string(c.big_keys) +
          " keys into an empty store, the way a user would, " + std::to_string(c.batch) +
          " items at a time: shmdict Update(); LMDB one write txn per batch; Boost the lock held "
          "per batch of inserts; Redis pipelined MSET (16 in flight); Python d.update(dict); the "
          "map one emplace per key. Creating the store (and starting a server) is not timed.",
      "**Change propagation** (where the system has a notion of it): every " +
          std::to_string(c.spacing_ns / 1000) +
          " us the harness process stores a CLOCK_MONOTONIC " +
          "timestamp (taken before its write, so the write is included) under one key, " +
          std::to_string(c.samples) +
          " times; a reader in another process computes now - timestamp when it sees the new "
          "value. Polling readers spin (shmdict: published_revision(), one atomic load; LMDB, "
          "Boost: re-reading the key; Redis: GET in a loop); blocking readers sleep until told "
          "(shmdict: WaitForChange on a futex; Redis: a keyspace notification, enabled only for "
          "this measurement, then GET). A polling reader takes a CPU of its own.",
      "**No durability anywhere.** shmdict lives in /dev/shm; LMDB runs with "
      "MDB_NOSYNC|MDB_NOMETASYNC on tmpfs; Redis with --save \"\" --appendonly no. No system "
      "pays for fsync.",
      "**Per-op calls are synchronous.** Each get/set waits for its answer, as a user's call "
      "does: for Redis one loopback TCP round trip (no pipelining except the bulk import), for "
      "Python one Unix-socket round trip to the manager.",
  };
}

// ------------------------------------------------------------------------------- the driver

class Driver {
 public:
  explicit Driver(const Config& c) : config_(c) {}

  int Run(int argc, char** argv);

 private:
  WorkloadReport& AddWorkload(std::string id, std::string title, Metric metric,
                              std::string description) {
    WorkloadReport w;
    w.id = std::move(id);
    w.title = std::move(title);
    w.metric = metric;
    w.description = std::move(description);
    for (const auto& p : peers_) {
      Cell& c = w.cells[p->name()];
      if (!p->unavailable().empty()) {
        c.status = "n/a";
        c.reason = p->unavailable();
      } else {
        c.status = "n/a";
        c.reason = "not measured";
      }
    }
    report_.workloads.push_back(std::move(w));
    return report_.workloads.back();
  }

  bool Usable(const Peer& p) const { return p.unavailable().empty(); }

  void SetError(Cell& c, const std::string& system, const std::string& what,
                const std::string& workload) {
    c.status = "error";
    c.reason = what;
    failed_ = true;
    std::fprintf(stderr, "shmdict_peers: %s, %s: %s\n", system.c_str(), workload.c_str(),
                 what.c_str());
  }

  static void Progress(const std::string& what) {
    std::fprintf(stderr, "[%s] %s\n", Iso8601Now().c_str() + 11, what.c_str());
  }

  void RunPerOp(const Workload& work);
  void RunMultiProcess();
  void RunChangePropagation();
  void RunBigDict();
  void FinishReport(int argc, char** argv, const std::string& load_at_start);

  Config config_;
  Report report_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::map<std::string, std::string> broken_;  // system -> why its per-op store is unusable
  bool failed_ = false;
};

void Driver::RunPerOp(const Workload& work) {
  for (auto& p : peers_) {
    if (!Usable(*p)) continue;
    Progress("start " + p->name() + " (fill " + std::to_string(work.n) + " keys, warm up)");
    try {
      p->Start(work, config_);
    } catch (const BenchError& e) {
      broken_[p->name()] = std::string("start failed: ") + e.what();
      failed_ = true;
      std::fprintf(stderr, "shmdict_peers: %s: %s\n", p->name().c_str(), e.what());
    }
  }
  struct Kind {
    OpKind kind;
    const char* id;
    const char* title;
    const char* description;
  };
  const Kind kinds[] = {
      {OpKind::kRead, "read", "read hit",
       "Reads of existing keys in the shared order, each value copied out and verified, with "
       "no concurrent writer (shmdict: no pending change)."},
      {OpKind::kWrite, "write", "write (overwrite existing key)",
       "Overwrites of existing keys in the shared order, each made visible to other processes "
       "before the next (one commit / transaction / command per write)."},
      {OpKind::kMix, "mix", "90/10 read/write mix",
       "The shared order with the same 10% of positions writing (overwrite) and the rest "
       "reading and verifying, in one process."},
  };
  for (const Kind& k : kinds) {
    WorkloadReport& w = AddWorkload(k.id, k.title, Metric::kThroughput, k.description);
    std::map<std::string, RunResult> best;
    std::map<std::string, std::vector<double>> per_rep;
    std::map<std::string, uint64_t> mismatches, reads_done;
    std::set<std::string> failed_here;
    for (int rep = 0; rep < config_.reps; ++rep) {
      for (auto& p : peers_) {
        const std::string name = p->name();
        if (!Usable(*p) || broken_.count(name) || failed_here.count(name)) continue;
        Progress(std::string(k.id) + " rep " + std::to_string(rep + 1) + ": " + name);
        SleepNs(kGapNs);
        try {
          RunResult r = p->Run({k.kind, work.n, config_.time_box_ns});
          mismatches[name] += r.mismatches;
          reads_done[name] += r.ops;
          per_rep[name].push_back(r.OpsPerSecond());
          if (r.mismatches > 0) {
            std::fprintf(stderr, "shmdict_peers: %s, %s: %" PRIu64 " WRONG VALUES READ\n",
                         name.c_str(), k.id, r.mismatches);
          }
          if (!best.count(name) || r.OpsPerSecond() > best[name].OpsPerSecond()) {
            best[name] = std::move(r);
          }
        } catch (const BenchError& e) {
          failed_here.insert(name);
          SetError(w.cells[name], name, e.what(), k.id);
        }
      }
    }
    for (auto& p : peers_) {
      const std::string name = p->name();
      Cell& c = w.cells[name];
      if (!Usable(*p) || failed_here.count(name)) continue;
      if (broken_.count(name)) {
        c.status = "error";
        c.reason = broken_[name];
        continue;
      }
      const RunResult& r = best[name];
      if (mismatches[name] > 0) {
        SetError(c, name,
                 std::to_string(mismatches[name]) + " wrong values read in " +
                     std::to_string(reads_done[name]) + " ops",
                 k.id);
        continue;
      }
      c.status = "ok";
      c.ops = r.ops;
      c.elapsed_ns = static_cast<double>(r.elapsed_ns);
      c.ops_per_s = r.OpsPerSecond();
      c.reps = per_rep[name];
      c.SetLatency(r.latency);
      if (r.ops < work.n) {
        c.note = "time-boxed: " + std::to_string(r.ops) + " of " + std::to_string(work.n) + " ops";
      }
      try {
        c.memory = p->StoreMemory();
      } catch (const BenchError& e) {
        c.note += (c.note.empty() ? "" : "; ") + std::string("memory not measured: ") + e.what();
      }
    }
  }
}

void Driver::RunMultiProcess() {
  for (int readers : config_.reader_counts) {
    const std::string n = std::to_string(readers);
    const std::string label = "1 writer + " + n + (readers == 1 ? " reader" : " readers");
    const size_t reads_index = report_.workloads.size();
    AddWorkload(
        "multi_" + n + "_reads", label + ": reads", Metric::kThroughput,
        "One writer process overwriting keys in the shared order while " + n +
            " reader process(es) read and verify (either variant of a key is right), all for "
            "the time box; reads/s summed over the readers; latency over all readers' reads.");
    AddWorkload("multi_" + n + "_writes", label + ": writes", Metric::kThroughput,
                "The writer of the same runs: overwrites/s and their latency while " + n +
                    " reader process(es) run.");
    std::map<std::string, MultiResult> best_reads, best_writes;
    std::map<std::string, std::vector<double>> rep_reads, rep_writes;
    std::map<std::string, uint64_t> mismatches;
    std::set<std::string> failed_here;
    for (int rep = 0; rep < config_.reps; ++rep) {
      for (auto& p : peers_) {
        const std::string name = p->name();
        if (!Usable(*p) || broken_.count(name) || failed_here.count(name) ||
            !p->MultiUnavailable().empty()) {
          continue;
        }
        Progress(label + " rep " + std::to_string(rep + 1) + ": " + name);
        SleepNs(kGapNs);
        try {
          MultiResult r = p->RunMulti(readers, config_.time_box_ns);
          mismatches[name] += r.reads.mismatches;
          rep_reads[name].push_back(r.reads.OpsPerSecond());
          rep_writes[name].push_back(r.writes.OpsPerSecond());
          if (!best_reads.count(name) ||
              r.reads.OpsPerSecond() > best_reads[name].reads.OpsPerSecond()) {
            best_reads[name] = r;
          }
          if (!best_writes.count(name) ||
              r.writes.OpsPerSecond() > best_writes[name].writes.OpsPerSecond()) {
            best_writes[name] = r;
          }
        } catch (const BenchError& e) {
          failed_here.insert(name);
          SetError(report_.workloads[reads_index].cells[name], name, e.what(), label);
          SetError(report_.workloads[reads_index + 1].cells[name], name, e.what(), label);
        }
      }
    }
    for (auto& p : peers_) {
      const std::string name = p->name();
      if (!Usable(*p) || failed_here.count(name)) continue;
      for (int which = 0; which < 2; ++which) {
        Cell& c = report_.workloads[reads_index + which].cells[name];
        if (broken_.count(name)) {
          c.status = "error";
          c.reason = broken_[name];
          continue;
        }
        if (const std::string why = p->MultiUnavailable(); !why.empty()) {
          c.reason = why;
          continue;
        }
        if (which == 0 && mismatches[name] > 0) {
          SetError(c, name, std::to_string(mismatches[name]) + " wrong values read", label);
          continue;
        }
        const RunResult& r = which == 0 ? best_reads[name].reads : best_writes[name].writes;
        c.status = "ok";
        c.ops = r.ops;
        c.elapsed_ns = static_cast<double>(r.elapsed_ns);
        c.ops_per_s = r.OpsPerSecond();
        c.reps = which == 0 ? rep_reads[name] : rep_writes[name];
        c.SetLatency(r.latency);
        if (which == 0) {
          c.note = "this rep's writer: " +
                   std::to_string(static_cast<uint64_t>(best_reads[name].writes.OpsPerSecond())) +
                   " writes/s";
        } else {
          c.note = "this rep's readers: " +
                   std::to_string(static_cast<uint64_t>(best_writes[name].reads.OpsPerSecond())) +
                   " reads/s";
        }
      }
    }
  }
}

void Driver::RunChangePropagation() {
  for (WatchMode mode : {WatchMode::kPoll, WatchMode::kNotify}) {
    const bool poll = mode == WatchMode::kPoll;
    WorkloadReport& w = AddWorkload(
        poll ? "change_poll" : "change_notify",
        poll ? "change visible in another process: polling reader"
             : "change visible in another process: blocking (notified) reader",
        Metric::kLatency,
        std::string("Time from a timestamp the writer takes just before its write to the moment "
                    "a reader in another process has read the new value; ") +
            (poll ? "the reader polls (spins) for the change."
                  : "the reader sleeps until the system tells it about the change."));
    for (auto& p : peers_) {
      const std::string name = p->name();
      Cell& c = w.cells[name];
      if (!Usable(*p)) continue;
      if (broken_.count(name)) {
        c.status = "error";
        c.reason = broken_[name];
        continue;
      }
      if (const std::string why = p->WatchUnavailable(mode); !why.empty()) {
        c.reason = why;
        continue;
      }
      Progress(w.title + ": " + name);
      try {
        WatchResult r = p->RunWatch(mode, config_.samples, config_.spacing_ns);
        c.status = "ok";
        c.samples = r.latency.count();
        c.SetLatency(r.latency);
        c.note = p->WatchDescription(mode) + "; " + std::to_string(r.writes) + " writes";
      } catch (const BenchError& e) {
        SetError(c, name, e.what(), w.id);
      }
    }
  }
}

double Median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

void Driver::RunBigDict() {
  Progress("building the " + std::to_string(config_.big_keys) + "-key workload");
  const Workload big = MakeWorkload(config_.big_keys, config_.value_bytes, 1);
  const std::string keys = std::to_string(config_.big_keys);
  const std::string settle = std::to_string(config_.settle_ns / 1'000'000) + " ms";
  const size_t bulk_index = report_.workloads.size();
  AddWorkload("bulk_import", "bulk import of " + keys + " keys", Metric::kThroughput,
              "Loading " + keys + " keys into an empty store the way a user would (" +
                  std::to_string(config_.batch) +
                  " items per call, transaction, lock hold or MSET); keys/s over the whole "
                  "import. Store memory is measured right after.");
  AddWorkload("attach", "attach to a " + keys + "-key store", Metric::kTime,
              "A fresh process: from open/connect to the first successful (verified) read, "
              "and the PSS / RSS that process gained over that span; the store has been idle "
              "for " +
                  settle + " since its bulk import.");
  AddWorkload("attach_after_import", "attach to a " + keys + "-key store, right after the import",
              Metric::kTime,
              "The same, in a fresh process started the moment the import returned: it "
              "competes with whatever background work the import left running (shmdict: "
              "building a snapshot).");
  const size_t indexes[] = {bulk_index, bulk_index + 1, bulk_index + 2};
  std::map<std::string, std::vector<BulkResult>> results;
  std::set<std::string> failed_here;
  for (int rep = 0; rep < config_.reps; ++rep) {
    for (auto& p : peers_) {
      const std::string name = p->name();
      if (!Usable(*p) || failed_here.count(name)) continue;
      Progress("bulk import + attach rep " + std::to_string(rep + 1) + ": " + name);
      try {
        results[name].push_back(p->BulkImport(big, config_));
      } catch (const BenchError& e) {
        failed_here.insert(name);
        for (size_t index : indexes) {
          SetError(report_.workloads[index].cells[name], name, e.what(),
                   report_.workloads[index].id);
        }
      }
    }
  }
  for (auto& p : peers_) {
    const std::string name = p->name();
    if (!Usable(*p) || failed_here.count(name) || results[name].empty()) continue;
    const std::vector<BulkResult>& rs = results[name];
    Cell& bulk = report_.workloads[bulk_index].cells[name];
    const BulkResult* fastest = &rs[0];
    std::vector<double> kib, empty;
    for (const BulkResult& r : rs) {
      if (r.import_ns < fastest->import_ns) fastest = &r;
      kib.push_back(r.memory.kib);
      empty.push_back(r.memory.empty_kib);
      bulk.reps.push_back(static_cast<double>(r.keys) * 1e9 / static_cast<double>(r.import_ns));
    }
    bulk.status = "ok";
    bulk.ops = fastest->keys;
    bulk.elapsed_ns = static_cast<double>(fastest->import_ns);
    bulk.time_ns = bulk.elapsed_ns;
    bulk.ops_per_s = static_cast<double>(fastest->keys) * 1e9 / bulk.elapsed_ns;
    bulk.memory = fastest->memory;
    bulk.memory.kib = Median(kib);
    bulk.memory.empty_kib = Median(empty);
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.3f s", bulk.elapsed_ns / 1e9);
    bulk.note = std::to_string(fastest->keys) + " keys in " + seconds + "; payload " +
                std::to_string(big.PayloadBytes() / 1024) + " KiB";
    for (int which = 0; which < 2; ++which) {
      Cell& attach = report_.workloads[bulk_index + 1 + which].cells[name];
      if (!rs[0].attach_na.empty()) {
        attach.reason = rs[0].attach_na;
        continue;
      }
      std::vector<double> pss, rss;
      attach.time_ns = INFINITY;
      for (const BulkResult& r : rs) {
        const AttachResult& a = which == 0 ? r.attach_settled : r.attach_now;
        attach.time_ns = std::min(attach.time_ns, a.attach_ns);
        attach.reps.push_back(a.attach_ns);
        pss.push_back(a.pss_kib);
        rss.push_back(a.rss_kib);
      }
      attach.status = "ok";
      attach.pss_kib = Median(pss);
      attach.rss_kib = Median(rss);
      attach.memory = bulk.memory;
      attach.note =
          "store: " + std::to_string(static_cast<int64_t>(bulk.memory.kib / 1024)) + " MiB shared";
    }
  }
}

void Driver::FinishReport(int argc, char** argv, const std::string& load_at_start) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + ShellQuote(argv[i]);
  utsname u{};
  uname(&u);
  report_.meta = {
      {"command", "`" + command + "`"},
      {"date", Iso8601Now()},
      {"git commit", GitDescription()},
      {"machine", std::string(u.sysname) + " " + u.release + " " + u.version + " " + u.machine},
      {"CPU", FirstLineWith("/proc/cpuinfo", "model name") + ", " +
                  std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " online, " +
                  std::to_string(CpuCount()) + " usable by this run"},
      {"memory", FirstLineWith("/proc/meminfo", "MemTotal")},
      {"compiler", std::string(__VERSION__) +
#ifdef NDEBUG
                       ", NDEBUG (optimized build)"
#else
                       ", assertions on (not a Release build?)"
#endif
      },
      {"load average (1/5/15 min)",
       "at start " + load_at_start + ", at end " + LoadAverage() + " (includes this run)"},
      {"per-op clock", op_clock::Describe()},
  };
  auto num = [](auto v) { return std::to_string(v); };
  std::string readers = "[";
  for (size_t i = 0; i < config_.reader_counts.size(); ++i) {
    readers += (i ? "," : "") + num(config_.reader_counts[i]);
  }
  readers += "]";
  report_.config = {{"keys", num(config_.keys)},
                    {"big_keys", num(config_.big_keys)},
                    {"value_bytes", num(config_.value_bytes)},
                    {"reps", num(config_.reps)},
                    {"time_box_ms", num(config_.time_box_ns / 1'000'000)},
                    {"batch", num(config_.batch)},
                    {"samples", num(config_.samples)},
                    {"spacing_us", num(config_.spacing_ns / 1000)},
                    {"settle_ms", num(config_.settle_ns / 1'000'000)},
                    {"readers", readers},
                    {"quick", config_.quick ? "true" : "false"}};
  report_.method = MethodNotes(config_);
  for (const auto& p : peers_) {
    report_.systems.push_back(p->name());
    report_.descriptions[p->name()] = Usable(*p) ? p->description() : "n/a: " + p->unavailable();
  }
}

int Driver::Run(int argc, char** argv) {
  const std::string load_at_start = LoadAverage();
  op_clock::Init();
  peers_ = MakeAllPeers(config_);
  if (!config_.systems.empty()) {
    for (auto& p : peers_) {
      if (std::find(config_.systems.begin(), config_.systems.end(), p->name()) ==
          config_.systems.end()) {
        p = MakeUnavailablePeer(p->name(), "not selected (--systems)");
      }
    }
  }
  if (mkdir(config_.out_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Fail("cannot create " + config_.out_dir + ": " + std::strerror(errno));
  }
  Progress("building the " + std::to_string(config_.keys) + "-key workload");
  const Workload work = MakeWorkload(config_.keys, config_.value_bytes, 2);
  config_.order_file = "/dev/shm/" + NewName("order.bin");
  WriteOrderFile(work, config_.order_file);

  RunPerOp(work);
  RunMultiProcess();
  RunChangePropagation();
  for (auto& p : peers_) {
    if (!Usable(*p)) continue;
    try {
      p->Stop();
    } catch (const BenchError& e) {
      std::fprintf(stderr, "shmdict_peers: stopping %s: %s\n", p->name().c_str(), e.what());
    }
  }
  RunBigDict();

  FinishReport(argc, argv, load_at_start);
  if (config_.plots) {
    Progress("plots");
    report_.plot_files = WritePlots(report_, config_.out_dir, &report_.plots_note);
  } else {
    report_.plots_note = "--no-plots";
  }
  const std::string markdown = RenderMarkdown(report_);
  WriteFile(config_.out_dir + "/peers.md", markdown);
  if (!config_.json_path.empty()) WriteFile(config_.json_path, RenderJson(report_));
  std::printf("%s", markdown.c_str());
  std::fflush(stdout);
  peers_.clear();  // stops servers and Python before the final sweep
  RemoveShmEntry(NewName("order.bin"));
  std::fprintf(stderr, "shmdict_peers: wrote %s/peers.md%s%s%s\n", config_.out_dir.c_str(),
               config_.json_path.empty() ? "" : " and ", config_.json_path.c_str(),
               failed_ ? "; THE RUN HAD ERRORS (see above)" : "");
  return failed_ ? 1 : 0;
}

int ChildEntry(int argc, char** argv) {
  if (argc < 5) return 2;
  ChildArgs args;
  args.role = argv[2];
  args.system = argv[3];
  args.where = argv[4];
  for (int i = 5; i < argc; ++i) {
    const std::string_view field = argv[i];
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos) return 2;
    args.fields[std::string(field.substr(0, eq))] = std::string(field.substr(eq + 1));
  }
  const ChildMain entry = ChildMainFor(args.system);
  if (entry == nullptr) {
    std::fprintf(stderr, "no child entry for system '%s'\n", args.system.c_str());
    return 2;
  }
  return entry(args);
}

}  // namespace
}  // namespace peers

int main(int argc, char** argv) {
  using namespace peers;
  if (argc >= 2 && std::string_view(argv[1]) == kChildCommand) return ChildEntry(argc, argv);
  if (argc == 3 && std::string_view(argv[1]) == "--check-json") {
    const std::vector<std::string> problems = CheckJson(argv[2]);
    for (const std::string& p : problems) std::fprintf(stderr, "peers.json: %s\n", p.c_str());
    if (problems.empty()) std::printf("%s: every system reported or n/a with a reason\n", argv[2]);
    return problems.empty() ? 0 : 1;
  }
  Config config;
  if (auto exit_code = ParseFlags(argc, argv, &config)) return *exit_code;
  InstallCleanup();
  int exit_code = 0;
  {
    Driver driver(config);
    exit_code = shmdict::bench::RunReportingErrors<BenchError>(
        "shmdict_peers", [&] { return driver.Run(argc, argv); });
  }  // every peer, server and child is gone here
  // What is left is a leak: shmdict's dicts unlink themselves (auto_unlink), the other stores
  // and directories are removed by their owners.
  if (const int leaked = SweepRunFiles(); leaked > 0) {
    std::fprintf(stderr, "shmdict_peers: %d entr%s named %s* %s left in /dev/shm; removed\n",
                 leaked, leaked == 1 ? "y" : "ies", RunPrefix().c_str(),
                 leaked == 1 ? "was" : "were");
    exit_code = 1;
  }
  return exit_code;
}
