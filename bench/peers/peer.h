// Peer: one system under comparison (shmdict, std::unordered_map, LMDB, Boost.Interprocess,
// Redis, Python's multiprocessing.Manager().dict()), behind one small interface that the driver
// (peers_main.cc) calls in the same order for every system.
//
// A peer owns whatever it starts (a store, a server, a Python process) and tears it down in
// Stop() or its destructor. Failures throw BenchError; "cannot do this at all" is an n/a reason
// string, never a silent omission.
//
// Thread-safety: single-threaded use by the driver. Lifetime: Start() .. Stop() for the per-op
// store; BulkImport creates and destroys its own store per call.
#ifndef SHMDICT_BENCH_PEERS_PEER_H_
#define SHMDICT_BENCH_PEERS_PEER_H_

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "workload.h"

namespace peers {

struct Config {
  uint64_t keys = 100'000;
  uint64_t big_keys = 1'000'000;
  size_t value_bytes = 32;
  int reps = 3;
  int64_t time_box_ns = 750'000'000;
  size_t batch = 1000;
  int samples = 2000;
  int64_t spacing_ns = 1'000'000;
  // Idle time before the second attach after a bulk import: background work the import started
  // (shmdict's snapshot builds) is over by then.
  int64_t settle_ns = 1'000'000'000;
  std::vector<int> reader_counts;  // 1 and the number of cores
  std::string python = "/usr/bin/python3";
  std::string manager_script;
  std::string out_dir;
  std::string json_path;   // --json: the report as JSON too; empty: none
  std::string order_file;  // the workload's order for manager_peer.py (written by the driver)
  bool quick = false;
  bool plots = true;
  std::vector<std::string> systems;  // empty: all
};

enum class OpKind { kRead, kWrite, kMix };

struct RunSpec {
  OpKind kind = OpKind::kRead;
  uint64_t max_ops = 0;  // one pass over the order
  int64_t time_box_ns = 0;
};

struct RunResult {
  uint64_t ops = 0;
  int64_t elapsed_ns = 0;
  uint64_t mismatches = 0;  // reads that returned a missing or wrong value
  Histogram latency;        // per operation, ns
  double OpsPerSecond() const {
    return elapsed_ns > 0 ? static_cast<double>(ops) * 1e9 / static_cast<double>(elapsed_ns) : NAN;
  }
};

// What a store costs the host, in KiB (NAN: not measured). `empty_kib` is the same reading on the
// freshly created, empty store (a server's or an interpreter's own footprint).
struct Memory {
  double kib = NAN;
  double empty_kib = NAN;
  std::string how;
};

struct MultiResult {
  RunResult reads;   // all readers together
  RunResult writes;  // the writer
};

struct AttachResult {
  double attach_ns = NAN;  // fresh process: open/connect .. first successful read
  double pss_kib = NAN;    // smaps_rollup deltas over that span
  double rss_kib = NAN;
};

struct BulkResult {
  int64_t import_ns = 0;
  uint64_t keys = 0;
  Memory memory;                // the store after the import
  AttachResult attach_now;      // a fresh process attaching as soon as the import returned
  AttachResult attach_settled;  // another one, config.settle_ns later
  std::string attach_na;        // set when attach is not applicable
};

enum class WatchMode { kPoll, kNotify };

struct WatchResult {
  Histogram latency;  // now (reader) - timestamp (writer, taken before its write)
  uint64_t writes = 0;
};

class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string name() const = 0;
  // Exactly what is measured, for the report's method section.
  virtual std::string description() const = 0;
  // Why this system cannot run at all here ("not built: liblmdb-dev missing"); empty if it can.
  virtual std::string unavailable() const { return ""; }

  // Creates the per-op store and fills it with w's keys at variant 0 (untimed), then warms it.
  virtual void Start(const Workload& w, const Config& config) = 0;
  // One timed run over w.order (reads verify every value against what was written last).
  virtual RunResult Run(const RunSpec& spec) = 0;
  virtual Memory StoreMemory() = 0;
  // 1 writer + `readers` readers, each its own process, for time_box_ns. Empty reason: supported.
  virtual std::string MultiUnavailable() const = 0;
  virtual MultiResult RunMulti(int readers, int64_t time_box_ns) = 0;
  // Change propagation to a reader in another process.
  virtual std::string WatchUnavailable(WatchMode mode) const = 0;
  virtual std::string WatchDescription(WatchMode mode) const = 0;
  virtual WatchResult RunWatch(WatchMode mode, int samples, int64_t spacing_ns) = 0;
  virtual void Stop() = 0;

  // Imports big's keys into a new, empty store the way a user would (timed), measures the store,
  // attaches from a fresh process at once and again after config.settle_ns, then destroys the
  // store.
  virtual BulkResult BulkImport(const Workload& big, const Config& config) = 0;
};

// The systems in report order. Each factory returns a peer whose unavailable() tells why it
// cannot run (not built, program missing).
std::vector<std::unique_ptr<Peer>> MakeAllPeers(const Config& config);
std::unique_ptr<Peer> MakeUnavailablePeer(std::string name, std::string reason);

// Entry points of the hidden child subcommands, per system (nullptr: none).
struct ChildArgs;
using ChildMain = int (*)(const ChildArgs& args);
ChildMain ChildMainFor(const std::string& system);

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_PEER_H_
