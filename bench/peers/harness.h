// Infrastructure of the benchmarks (shmdict_peers, shmdict_bench, shmdict_bridge_bench): errors,
// the per-operation clock, latency histograms, memory readings, child processes and the cleanup
// that leaves nothing behind.
//
// Thread-safety: everything here is used from the harness's main thread only, except the
// async-signal-safe cleanup (SweepRunFiles, the registered process groups), which the fatal-signal
// handler also runs.
//
// Names: every shared object this run creates is named "<RunPrefix()><tag>" (shmdict dicts,
// Boost segments, LMDB and Redis directories under /dev/shm), RunPrefix() being
// "shmdict_bench_<pid>_". SweepRunFiles removes them all.
#ifndef SHMDICT_BENCH_PEERS_HARNESS_H_
#define SHMDICT_BENCH_PEERS_HARNESS_H_

#include <sys/types.h>
#include <time.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "subprocess.h"
#include "support/bench_support.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace peers {

// ------------------------------------------------------------------------------------ errors

// Failures throw so that stack unwinding closes every handle and stops every child process
// (their destructors) before the final sweep.
class BenchError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(const std::string& what);

// ------------------------------------------------------------------------------------ clocks

inline int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

void SleepNs(int64_t ns);

// The per-operation clock: the TSC (rdtsc) when the CPU says it is invariant (constant_tsc and
// nonstop_tsc in /proc/cpuinfo), calibrated against CLOCK_MONOTONIC; CLOCK_MONOTONIC otherwise.
// One reading per operation: an operation's latency is the difference between consecutive
// readings, so the clock's own cost is paid once per operation, by every system alike.
namespace op_clock {
inline bool g_use_tsc = false;
inline double g_ns_per_tick = 1.0;

inline uint64_t Now() {
#if defined(__x86_64__) || defined(__i386__)
  if (g_use_tsc) return __rdtsc();
#endif
  return static_cast<uint64_t>(MonotonicNs());
}
inline uint64_t ToNs(uint64_t ticks) {
  return static_cast<uint64_t>(static_cast<double>(ticks) * g_ns_per_tick);
}
// Calibrates (about 50 ms) unless ns_per_tick is given (children get the parent's figure).
// ns_per_tick <= 0 forces CLOCK_MONOTONIC.
void Init(std::optional<double> ns_per_tick = std::nullopt);
// "rdtsc (invariant TSC, 0.3333 ns/tick)" or "clock_gettime(CLOCK_MONOTONIC)".
std::string Describe();
// The cost of one reading plus one histogram update, in ns (what each op's figure includes).
double OverheadNs();
// What children receive: the ns per tick, or 0 for CLOCK_MONOTONIC.
double Calibration();
}  // namespace op_clock

// ------------------------------------------------------------------------------- histograms

// Log-linear latency histogram in nanoseconds: exact below 64 ns, then 64 buckets per power of
// two (relative error under 1.6%). Histograms merge exactly, so the readers of a multi-process run
// report theirs and the parent adds them up. manager_peer.py implements the same buckets.
class Histogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  Histogram() : counts_(kBuckets, 0) {}

  static size_t Bucket(uint64_t ns) {
    if (ns < (uint64_t{1} << kSubBits)) return static_cast<size_t>(ns);
    const int e = 63 - __builtin_clzll(ns);
    return (static_cast<size_t>(e - kSubBits + 1) << kSubBits) +
           static_cast<size_t>((ns >> (e - kSubBits)) & ((1u << kSubBits) - 1));
  }
  void Add(uint64_t ns) {
    ++counts_[Bucket(ns)];
    ++total_;
  }
  void Merge(const Histogram& other);
  uint64_t count() const { return total_; }
  // Nearest-rank percentile (p in [0, 100]) as its bucket's midpoint; NAN when empty.
  double Percentile(double p) const;
  // "bucket:count;bucket:count" (non-empty buckets only), and back. Parse fails on garbage.
  std::string Serialize() const;
  static Histogram Parse(std::string_view text);

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
};

// The percentiles the report keeps for each latency distribution (the CDF plots use them).
const std::vector<double>& PercentileGrid();

// ----------------------------------------------------------------------------------- memory

// ReadSmapsRollup(pid): the fields of /proc/<pid>/smaps_rollup (bench_support.h).
using shmdict::bench::ReadSmapsRollup;

// Bytes tmpfs has allocated for /dev/shm entries whose name satisfies `match` (a directory's
// files count too): what a store in shared memory really costs the host.
int64_t TmpfsBytes(bool (*match)(std::string_view name, std::string_view arg),
                   std::string_view arg);
bool NameIsExactly(std::string_view name, std::string_view arg);
// "<arg>" itself or "<arg>@...": every segment of the shmdict dict whose main segment is <arg>.
bool NameIsShmdictDict(std::string_view name, std::string_view arg);

// ---------------------------------------------------------------------------------- cleanup

// "shmdict_bench_<pid>_" of the harness process (children receive full names from it).
std::string RunPrefix();
std::string NewName(std::string_view tag);
// Installs the fatal-signal handler: it kills every registered process group and sweeps.
void InstallCleanup();
// Removes every /dev/shm entry named "<RunPrefix()>*" or "shmdict.<RunPrefix()>*" (directories
// with their contents, a few levels deep). Async-signal-safe. Returns how many entries it removed.
int SweepRunFiles();
// Removes /dev/shm/<name> (a file or a directory tree); quiet if absent.
void RemoveShmEntry(const std::string& name);

// ---------------------------------------------------------------------------------- children

// A child process (a Subprocess, subprocess.h) in its own process group, killed with the group
// when this object goes away, when the harness dies (kill_with_parent) and from the harness's
// fatal-signal handler. Errors throw BenchError.
class Process {
 public:
  // path, argv, env, pipe_stdin, pipe_stdout, quiet; the group and the parent-death signal are
  // always on.
  using Spec = shmdict::internal::SpawnOptions;
  explicit Process(const Spec& spec);
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return process_->pid(); }
  // The next line of stdout without its newline; nullopt at end of file. Fails after timeout_ns.
  std::optional<std::string> ReadLine(int64_t timeout_ns);
  void WriteLine(std::string_view line);
  // Reaps the child, waiting up to timeout_ns (then kills it). Empty if it exited with status 0,
  // else how it ended.
  std::string Wait(int64_t timeout_ns);
  // Sends `sig` to the child if it has not been reaped (so never to a reused pid).
  void Signal(int sig) { process_->Signal(sig); }
  // SIGKILLs the whole group and reaps the child.
  void Kill();
  // Until Wait or Kill (the child may have exited already).
  bool running() const { return running_; }

 private:
  void Finished();

  std::unique_ptr<shmdict::internal::Subprocess> process_;
  bool running_ = false;  // also: in the fatal-signal handler's list of groups
};

// This binary re-executed with a hidden subcommand (children see a fresh process: their memory
// and their wake-ups are those of an unrelated process, not of a fork sharing our heap).
std::unique_ptr<Process> SpawnSelf(const std::vector<std::string>& args);

// ------------------------------------------------------------------------------------ fields

// "k1=v1 k2=v2": what the harness's children print; values contain no blanks.
std::map<std::string, std::string> ParseFields(std::string_view line);
const std::string& Field(const std::map<std::string, std::string>& fields, const std::string& key);
double NumberField(const std::map<std::string, std::string>& fields, const std::string& key);

// "1.02 0.87 0.55": the 1, 5 and 15 minute load averages. Other jobs on a shared machine skew
// every figure, so the reports show them.
std::string LoadAverage();

// Writes `text` to `path` (created or truncated); fails (BenchError) if it cannot.
void WriteFile(const std::string& path, const std::string& text);

// The first line of `command`'s output (popen), or "" on failure.
std::string CommandOutput(const std::string& command);

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_HARNESS_H_
