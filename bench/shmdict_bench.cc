// shmdict_bench: checks the docs/DESIGN.md "Performance targets" that one host can measure, against
// a plain std::unordered_map<std::string, std::string> baseline, in one run and with the same keys.
//
//   shmdict_bench [--keys N] [--big-keys N] [--reps R] [--samples N] [--spacing-us U]
//                 [--pin] [--buffer-size BYTES] [--quick] [--json FILE]   (--help: details)
//
// Workload: keys "key:<i>" (i < --keys) with 32-byte string values, visited in one deterministic
// random order. Each throughput figure is the best of --reps repetitions, shmdict and baseline
// alternating so that interference on a shared machine hits both sides alike (interference only
// ever adds time, so the minimum is the least disturbed estimate). Write runs are long enough to
// fill the log twice, so their throughput includes the snapshots the writes cause.
//
// Cross-process measurements run in a fresh process: this binary re-executes itself
// (/proc/self/exe) with a hidden subcommand, so the attacher's memory and the reader's wake-up
// are those of an unrelated process, not of a fork sharing our heap.
//
// Every dict is named "shmdict_bench_<pid>_<tag>"; all of them are unlinked at exit, on errors
// (stack unwinding) and on fatal signals (an async-signal-safe sweep of /dev/shm).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.h"
#include "shmdict/dict.h"
#include "shmdict/status.h"
#include "shmdict/value.h"

namespace {

using shmdict::Dict;
using shmdict::Value;
// Keys in the order written, as the report lists them.
using Json = nlohmann::ordered_json;

constexpr size_t kValueBytes = 32;
// Log bytes one Set of a workload key takes: a 32-byte record header, a 12-byte op header, the key
// (~10 bytes) and the value, rounded up to the 32-byte record alignment (docs/LAYOUT.md).
constexpr uint64_t kSetRecordBytes = 96;
constexpr char kAttachCommand[] = "--internal-attach";
constexpr char kWatchCommand[] = "--internal-watch";
// A child that hangs (an engine deadlock) dies instead of hanging the whole run.
constexpr unsigned kChildAlarmSeconds = 120;

// ------------------------------------------------------------------------------------ errors

// Failures throw (peers::Fail) so that stack unwinding closes every Dict handle, which stops its
// background compaction thread, before the names are unlinked. Exiting directly could let a
// compaction thread publish a fresh snapshot segment after the final sweep.
using peers::BenchError;
using peers::Fail;
using peers::MonotonicNs;
using peers::SleepNs;

void Check(const shmdict::Status& status, std::string_view what) {
  if (!status.ok()) Fail(std::string(what) + ": " + status.ToString());
}

template <typename T>
T Check(shmdict::Result<T> result, std::string_view what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.status().ToString());
  return std::move(result).value();
}

// ------------------------------------------------------------------------- names and cleanup

// Every dict this run created, named "<peers::RunPrefix()><tag>": the engine names every segment
// of dict NAME "shmdict.NAME" or "shmdict.NAME@...", so peers::SweepRunFiles (run at exit and by
// the fatal-signal handler, peers::InstallCleanup) covers them all.
std::vector<std::string> g_dict_names;

std::string NewDictName(std::string_view tag) {
  g_dict_names.push_back(peers::NewName(tag));
  return g_dict_names.back();
}

// Called after every handle is closed. Anything still present is an engine defect (auto_unlink
// should have removed it), so it is reported, then removed anyway: nothing may stay in /dev/shm.
// Returns false if anything had leaked.
bool UnlinkEverything() {
  bool clean = true;
  for (const std::string& name : g_dict_names) {
    shmdict::Status status = Dict::UnlinkByName(name);
    if (status.ok()) {
      std::fprintf(stderr, "engine: dict '%s' still existed after its creator closed it\n",
                   name.c_str());
      clean = false;
    } else if (status.code() != shmdict::StatusCode::kNotFound) {
      std::fprintf(stderr, "UnlinkByName('%s'): %s\n", name.c_str(), status.ToString().c_str());
      clean = false;
    }
  }
  if (int leaked = peers::SweepRunFiles(); leaked > 0) {
    std::fprintf(stderr,
                 "engine: %d segment(s) named shmdict.%s* were left in /dev/shm; removed them\n",
                 leaked, peers::RunPrefix().c_str());
    clean = false;
  }
  return clean;
}

shmdict::Options DictOptions(const std::string& name, shmdict::CreateMode mode,
                             uint64_t buffer_size) {
  shmdict::Options options;
  options.name = name;
  options.create_mode = mode;
  options.buffer_size = buffer_size;
  options.background_compaction = true;
  options.auto_unlink = true;
  return options;
}

// ------------------------------------------------------------------------------ measurement

// Keeps the compiler from discarding a computation whose result is otherwise unused.
template <typename T>
void KeepAlive(const T& value) {
  asm volatile("" : : "r,m"(value) : "memory");
}

class Samples {
 public:
  void Add(double v) { values_.push_back(v); }
  bool empty() const { return values_.empty(); }
  size_t size() const { return values_.size(); }
  double Min() const { return empty() ? NAN : *std::min_element(values_.begin(), values_.end()); }
  double Max() const { return empty() ? NAN : *std::max_element(values_.begin(), values_.end()); }
  // Nearest-rank percentile, p in [0, 100].
  double Percentile(double p) const {
    if (empty()) return NAN;
    std::vector<double> sorted = values_;
    std::sort(sorted.begin(), sorted.end());
    size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
  }
  double Median() const { return Percentile(50); }

 private:
  std::vector<double> values_;
};

// Runs shm(rep) and base(rep) alternately, reps times each, and returns their ns/op samples.
template <typename ShmFn, typename BaseFn>
std::pair<Samples, Samples> Alternate(int reps, uint64_t ops, ShmFn&& shm, BaseFn&& base) {
  std::pair<Samples, Samples> out;
  for (int rep = 0; rep < reps; ++rep) {
    int64_t t0 = MonotonicNs();
    shm(rep);
    int64_t t1 = MonotonicNs();
    base(rep);
    int64_t t2 = MonotonicNs();
    out.first.Add(static_cast<double>(t1 - t0) / static_cast<double>(ops));
    out.second.Add(static_cast<double>(t2 - t1) / static_cast<double>(ops));
  }
  return out;
}

// The CPUs this thread may run on, ascending.
std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

// Pins the calling thread to `cpu`; false (errno set) if the kernel refused.
bool PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}

// Pins the calling thread for its lifetime, then restores the previous affinity.
class ScopedPin {
 public:
  explicit ScopedPin(int cpu) {
    CPU_ZERO(&previous_);
    if (sched_getaffinity(0, sizeof previous_, &previous_) != 0 || !PinToCpu(cpu)) {
      Fail("cannot pin to CPU " + std::to_string(cpu) + ": " + std::strerror(errno));
    }
  }
  ScopedPin(const ScopedPin&) = delete;
  ScopedPin& operator=(const ScopedPin&) = delete;
  ~ScopedPin() { sched_setaffinity(0, sizeof previous_, &previous_); }

 private:
  cpu_set_t previous_;
};

using shmdict::bench::ReadSmapsRollup;

// ---------------------------------------------------------------------------- child processes

// A copy of this binary running a hidden subcommand (peers::SpawnSelf). The child dies with us
// and after kChildAlarmSeconds at the latest; we wait a little longer than that for it.
constexpr int64_t kChildTimeoutNs = (kChildAlarmSeconds + 10) * int64_t{1'000'000'000};

// The child's one line of "k=v" fields, once it exited with status 0.
std::map<std::string, std::string> ChildResult(peers::Process& child, const char* what) {
  std::optional<std::string> line = child.ReadLine(kChildTimeoutNs);
  if (const std::string how = child.Wait(kChildTimeoutNs); !how.empty()) {
    Fail(std::string(what) + " child: " + how);
  }
  if (!line) Fail(std::string(what) + " child printed nothing");
  return peers::ParseFields(*line);
}

using peers::NumberField;

// ------------------------------------------------------------------------------ the workload

std::string KeyOf(uint64_t i) { return "key:" + std::to_string(i); }

// Exactly kValueBytes; `variant` makes overwrites change the bytes.
std::string ValueOf(uint64_t i, int variant) {
  char buffer[kValueBytes + 1];
  std::snprintf(buffer, sizeof buffer, "v%d:%029" PRIu64, variant % 10, i);
  return std::string(buffer, kValueBytes);
}

struct Workload {
  std::vector<std::string> keys;       // "key:<i>", i < n
  std::vector<std::string> miss_keys;  // "key:<n+i>": same shape, never present
  std::vector<std::string> values[2];  // values[variant][i]
  std::vector<Value> dict_values[2];   // the same bytes, as shmdict values (built outside timing)
  std::vector<uint32_t> order;         // a random permutation of [0, n)
  std::vector<uint8_t> mix_is_write;   // parallel to order: 1 for the ~10% writes of the mix
};

Workload MakeWorkload(uint64_t n) {
  Workload w;
  for (uint64_t i = 0; i < n; ++i) {
    w.keys.push_back(KeyOf(i));
    w.miss_keys.push_back(KeyOf(n + i));
    for (int variant = 0; variant < 2; ++variant) {
      w.values[variant].push_back(ValueOf(i, variant));
      w.dict_values[variant].push_back(Value::Str(w.values[variant].back()));
    }
  }
  shmdict::bench::AccessOrder access = shmdict::bench::MakeAccessOrder(n);
  w.order = std::move(access.order);
  w.mix_is_write = std::move(access.mix_is_write);
  return w;
}

// Stores "key:<i>" -> ValueOf(i, 0) for i < n, in batches small enough to stay ordinary log
// records (the engine sends records over a quarter of the log through their own segment).
void Fill(Dict& dict, uint64_t n, uint64_t buffer_size) {
  const uint64_t batch = std::clamp<uint64_t>(buffer_size / 8 / 64, 1, 1000);
  std::vector<std::pair<std::string, Value>> items;
  for (uint64_t i = 0; i < n; i += batch) {
    items.clear();
    for (uint64_t j = i; j < std::min(n, i + batch); ++j) {
      items.emplace_back(KeyOf(j), Value::Str(ValueOf(j, 0)));
    }
    Check(dict.Update(items), "Update (fill)");
  }
}

// Sustained write throughput must include the snapshots the writes cause, so a timed write run
// makes enough passes over the keys to fill the log at least twice (with a big buffer, one pass
// might never compact at all).
int WritePasses(uint64_t keys, uint64_t buffer_size) {
  const uint64_t log_bytes_per_pass = keys * kSetRecordBytes;
  return static_cast<int>((2 * buffer_size + log_bytes_per_pass - 1) / log_bytes_per_pass);
}

// Overwrites every workload key once per pass, in the workload's order; variant (+ pass) picks
// the value bytes, so consecutive passes change them. With `longest_ns`, also records the slowest
// single Set: a writer stalled on O(n) work shows up there as milliseconds, where the average
// would only drift. That costs two clock reads per write.
void WriteAll(Dict& dict, const Workload& w, int variant, int passes = 1,
              double* longest_ns = nullptr) {
  int64_t longest = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const std::vector<Value>& values = w.dict_values[(variant + pass) % 2];
    for (uint32_t i : w.order) {
      const int64_t start = longest_ns != nullptr ? MonotonicNs() : 0;
      if (!dict.Set(w.keys[i], values[i]).ok()) Fail("Set('" + w.keys[i] + "') failed");
      if (longest_ns != nullptr) longest = std::max(longest, MonotonicNs() - start);
    }
  }
  if (longest_ns != nullptr) *longest_ns = std::max(*longest_ns, static_cast<double>(longest));
}

// ----------------------------------------------------------------------------------- report

struct Config {
  uint64_t keys = 100'000;
  uint64_t big_keys = 1'000'000;
  int reps = 5;
  int samples = 2000;
  int64_t spacing_us = 1000;
  bool pin = false;
  uint64_t buffer_size = shmdict::Options{}.buffer_size;
  bool quick = false;
  std::string json_path;
};

struct Row {
  std::string op;
  std::string shm;   // display text of the shmdict figure
  std::string base;  // display text of the baseline figure and what it is; empty: none
  double ratio = NAN;
  std::string target;
  std::string verdict;  // "PASS", "MISS", or "info" when docs/DESIGN.md sets no target
  std::vector<std::pair<std::string, double>> metrics;  // raw numbers for --json
};

using shmdict::bench::Format;
using shmdict::bench::FormatKiB;

// "812.3 ns", "2.10 us", "12.30 ms": one decimal below a microsecond, "n/a" for NaN.
std::string FormatNs(double ns) { return shmdict::bench::FormatNs(ns, 1, "n/a"); }

std::string Verdict(bool pass) { return pass ? "PASS" : "MISS"; }

// A throughput row: shmdict vs baseline ns/op, ratio = shmdict throughput / baseline throughput.
Row ThroughputRow(std::string op, const Samples& shm, const Samples& base,
                  std::string_view base_name, std::optional<double> min_ratio) {
  Row row;
  row.op = std::move(op);
  double shm_ns = shm.Min();
  double base_ns = base.Min();
  row.shm = FormatNs(shm_ns) + "/op";
  row.base = FormatNs(base_ns) + "/op " + std::string(base_name);
  row.ratio = base_ns / shm_ns;
  if (min_ratio) {
    row.target = Format("ratio >= %.2g", *min_ratio);
    row.verdict = Verdict(row.ratio >= *min_ratio);
  } else {
    row.target = "-";
    row.verdict = "info";
  }
  row.metrics = {{"shmdict_ns_per_op", shm_ns},
                 {"shmdict_ns_per_op_median", shm.Median()},
                 {"shmdict_ops_per_s", 1e9 / shm_ns},
                 {"baseline_ns_per_op", base_ns},
                 {"baseline_ns_per_op_median", base.Median()},
                 {"baseline_ops_per_s", 1e9 / base_ns}};
  return row;
}

void PrintTable(const std::vector<Row>& rows) {
  const std::vector<std::string> header = {"operation", "shmdict", "baseline",
                                           "ratio",     "target",  "result"};
  auto cells = [](const Row& row) {
    return std::vector<std::string>{row.op,
                                    row.shm.empty() ? "-" : row.shm,
                                    row.base.empty() ? "-" : row.base,
                                    std::isnan(row.ratio) ? "-" : Format("%.2f", row.ratio),
                                    row.target,
                                    row.verdict};
  };
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const Row& row : rows) {
    std::vector<std::string> line = cells(row);
    for (size_t c = 0; c < line.size(); ++c) width[c] = std::max(width[c], line[c].size());
  }
  auto print = [&](const std::vector<std::string>& line) {
    for (size_t c = 0; c < line.size(); ++c) {
      // The last column is not padded, so lines carry no trailing blanks.
      if (c + 1 < line.size()) {
        std::printf("%-*s  ", static_cast<int>(width[c]), line[c].c_str());
      } else {
        std::printf("%s\n", line[c].c_str());
      }
    }
  };
  print(header);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  print(rule);
  for (const Row& row : rows) print(cells(row));
}

// NaN (a figure that could not be measured) as null: JSON has no NaN.
Json Number(double v) { return std::isfinite(v) ? Json(v) : Json(nullptr); }

void WriteJson(const std::string& path, Json config,
               const std::vector<std::pair<std::string, std::string>>& notes,
               const std::vector<Row>& rows) {
  Json doc = {{"config", std::move(config)}, {"notes", Json::object()}, {"rows", Json::array()}};
  for (const auto& [what, text] : notes) doc["notes"][what] = text;
  for (const Row& row : rows) {
    Json metrics = Json::object();
    for (const auto& [name, value] : row.metrics) metrics[name] = Number(value);
    doc["rows"].push_back({{"operation", row.op},
                           {"shmdict", row.shm},
                           {"baseline", row.base},
                           {"ratio", Number(row.ratio)},
                           {"target", row.target},
                           {"result", row.verdict},
                           {"metrics", std::move(metrics)}});
  }
  peers::WriteFile(path, doc.dump(2) + "\n");
}

// ---------------------------------------------------------------------------- the scenarios

struct Bench {
  Config config;
  Workload work;
  std::vector<Row> rows;
  std::vector<std::pair<std::string, std::string>> notes;  // printed under the table
};

// Read hit, read miss, overwrite and the 90/10 mix on one dict and one map holding the same keys.
void RunSingleProcess(Bench& b) {
  const Workload& w = b.work;
  const uint64_t n = w.keys.size();
  const int reps = b.config.reps;

  Dict dict = Check(Dict::Open(DictOptions(NewDictName("work"), shmdict::CreateMode::kMustCreate,
                                           b.config.buffer_size)),
                    "Open (work)");
  Fill(dict, n, b.config.buffer_size);
  std::unordered_map<std::string, std::string> map;
  for (uint64_t i = 0; i < n; ++i) map[w.keys[i]] = w.values[0][i];

  // Both sides copy into a reused buffer (Get's allocation-free overload vs string assignment),
  // so neither pays a heap allocation per read: 32-byte values exceed the small-string buffer.
  Value dict_out;
  std::string map_out;
  auto dict_reads = [&](const std::vector<std::string>& keys) {
    uint64_t found = 0;
    for (uint32_t i : w.order) found += *dict.Get(keys[i], &dict_out) ? 1 : 0;
    KeepAlive(dict_out);
    return found;
  };
  auto map_reads = [&](const std::vector<std::string>& keys) {
    uint64_t found = 0;
    for (uint32_t i : w.order) {
      if (auto it = map.find(keys[i]); it != map.end()) {
        map_out = it->second;
        ++found;
      }
    }
    KeepAlive(map_out);
    return found;
  };

  // The first reads after the fill replay the log; the targets are about reads with no pending
  // change, so catch up (and fault the pages in) before timing.
  Check(dict.Refresh(), "Refresh");
  if (dict_reads(w.keys) != n) Fail("shmdict lost keys after the fill");
  map_reads(w.keys);

  auto expect = [](uint64_t found, uint64_t want, const char* what) {
    if (found != want) {
      Fail(std::string(what) + ": found " + std::to_string(found) + " of " + std::to_string(want));
    }
  };
  auto [hit_shm, hit_base] = Alternate(
      reps, n, [&](int) { expect(dict_reads(w.keys), n, "shmdict read hit"); },
      [&](int) { expect(map_reads(w.keys), n, "map read hit"); });
  b.rows.push_back(
      ThroughputRow("read hit (no pending change)", hit_shm, hit_base, "unordered_map", 0.5));

  auto [miss_shm, miss_base] = Alternate(
      reps, n, [&](int) { expect(dict_reads(w.miss_keys), 0, "shmdict read miss"); },
      [&](int) { expect(map_reads(w.miss_keys), 0, "map read miss"); });
  b.rows.push_back(
      ThroughputRow("read miss (no pending change)", miss_shm, miss_base, "unordered_map", 0.5));

  // Variant 1 first, so that every timed write changes the stored bytes.
  const int passes = WritePasses(n, b.config.buffer_size);
  auto [write_shm, write_base] = Alternate(
      reps, n * passes, [&](int rep) { WriteAll(dict, w, rep + 1, passes); },
      [&](int rep) {
        for (int pass = 0; pass < passes; ++pass) {
          const std::vector<std::string>& values = w.values[(rep + 1 + pass) % 2];
          for (uint32_t i : w.order) map[w.keys[i]] = values[i];
        }
      });
  b.rows.push_back(
      ThroughputRow("write (overwrite existing key)", write_shm, write_base, "unordered_map", 0.3));

  // Verifies the last overwrite landed, so a fast but lossy Set cannot pass.
  const int last_variant = (reps + passes - 1) % 2;
  for (uint32_t i : w.order) {
    if (!*dict.Get(w.keys[i], &dict_out) || dict_out.data() != w.values[last_variant][i]) {
      Fail("shmdict: '" + w.keys[i] + "' does not hold the value written last");
    }
  }

  auto [mix_shm, mix_base] = Alternate(
      reps, n,
      [&](int rep) {
        const std::vector<Value>& values = w.dict_values[rep % 2];
        for (size_t k = 0; k < n; ++k) {
          uint32_t i = w.order[k];
          if (w.mix_is_write[k]) {
            if (!dict.Set(w.keys[i], values[i]).ok()) Fail("Set (mix) failed");
          } else if (!*dict.Get(w.keys[i], &dict_out)) {
            Fail("shmdict lost '" + w.keys[i] + "' during the mix");
          }
        }
        KeepAlive(dict_out);
      },
      [&](int rep) {
        const std::vector<std::string>& values = w.values[rep % 2];
        for (size_t k = 0; k < n; ++k) {
          uint32_t i = w.order[k];
          if (w.mix_is_write[k]) {
            map[w.keys[i]] = values[i];
          } else if (auto it = map.find(w.keys[i]); it != map.end()) {
            map_out = it->second;
          }
        }
        KeepAlive(map_out);
      });
  b.rows.push_back(
      ThroughputRow("90/10 read/write mix", mix_shm, mix_base, "unordered_map", std::nullopt));

  // The writer lock's uncontended path as a user meets it (Lock() and the guard's release),
  // against a process-local std::mutex: what a read-modify-write under Lock() adds per call.
  std::mutex local_mutex;
  auto [lock_shm, lock_base] = Alternate(
      reps, n,
      [&](int) {
        for (uint64_t k = 0; k < n; ++k) {
          if (!dict.Lock().ok()) Fail("Lock() failed with no other holder");
        }
      },
      [&](int) {
        for (uint64_t k = 0; k < n; ++k) {
          local_mutex.lock();
          local_mutex.unlock();
        }
      });
  b.rows.push_back(ThroughputRow("user lock + unlock (uncontended)", lock_shm, lock_base,
                                 "std::mutex", std::nullopt));

  shmdict::DictStatus status = dict.GetStatus();
  b.notes.emplace_back("work dict",
                       std::to_string(status.entries) + " entries, revision " +
                           std::to_string(status.revision) + ", " +
                           std::to_string(status.snapshots_built.value_or(0)) +
                           " snapshots built, log capacity " + std::to_string(status.log_capacity) +
                           " B; " + std::to_string(n * passes) + " timed writes per repetition");
}

struct AttachResult {
  Samples open_ns;         // Dict::Open(kMustAttach)
  Samples attach_ns;       // Open + the first Get
  Samples rss_delta_kib;   // VmRSS the attach added
  Samples pss_delta_kib;   // proportional set size the attach added (shared pages split)
  Samples anon_delta_kib;  // anonymous (process-private heap) memory the attach added
};

// Attaches from `reps` fresh processes, each checking that `probe_key` reads `probe_value`.
AttachResult MeasureAttach(const std::string& name, int reps, const std::string& probe_key,
                           const std::string& probe_value) {
  AttachResult result;
  for (int rep = 0; rep < reps; ++rep) {
    std::unique_ptr<peers::Process> child =
        peers::SpawnSelf({kAttachCommand, name, probe_key, probe_value});
    const std::map<std::string, std::string> f = ChildResult(*child, "attach");
    result.open_ns.Add(NumberField(f, "open_ns"));
    result.attach_ns.Add(NumberField(f, "attach_ns"));
    result.rss_delta_kib.Add(NumberField(f, "rss_after_kb") - NumberField(f, "rss_before_kb"));
    result.pss_delta_kib.Add(NumberField(f, "pss_after_kb") - NumberField(f, "pss_before_kb"));
    result.anon_delta_kib.Add(NumberField(f, "anon_after_kb") - NumberField(f, "anon_before_kb"));
  }
  return result;
}

void AddAttachRows(Bench& b, const std::string& label, const AttachResult& a, double data_kib) {
  // Attach is judged on time and on Pss, which counts the attacher's private pages fully and its
  // share of the mapped segments: a process-local copy of the data would show up as ~data size.
  Row time;
  time.op = "attach " + label + " (Open + first Get)";
  time.shm = FormatNs(a.attach_ns.Min());
  time.target = "<= 1 ms";
  time.verdict = Verdict(a.attach_ns.Min() <= 1e6);
  time.metrics = {{"attach_ns", a.attach_ns.Min()},
                  {"attach_ns_median", a.attach_ns.Median()},
                  {"open_ns", a.open_ns.Min()},
                  {"open_ns_median", a.open_ns.Median()}};
  b.rows.push_back(std::move(time));

  Row memory;
  memory.op = "attach " + label + " memory (dPss)";
  memory.shm = FormatKiB(a.pss_delta_kib.Median()) + " (dRss " +
               FormatKiB(a.rss_delta_kib.Median()) + ", anon " +
               FormatKiB(a.anon_delta_kib.Median()) + ")";
  memory.base = FormatKiB(data_kib) + " data (keys+values)";
  memory.target = "<= 1 MiB";
  memory.verdict = Verdict(a.pss_delta_kib.Median() <= 1024);
  memory.metrics = {{"pss_delta_kib", a.pss_delta_kib.Median()},
                    {"rss_delta_kib", a.rss_delta_kib.Median()},
                    {"anon_delta_kib", a.anon_delta_kib.Median()},
                    {"data_kib", data_kib},
                    {"pss_delta_fraction_of_data", a.pss_delta_kib.Median() / data_kib}};
  b.rows.push_back(std::move(memory));
}

// Attach to the big dict, and write throughput with it present vs on a dict that starts empty.
void RunBigDict(Bench& b) {
  const Config& c = b.config;
  const std::string name = NewDictName("big");
  Dict big = Check(Dict::Open(DictOptions(name, shmdict::CreateMode::kMustCreate, c.buffer_size)),
                   "Open (big)");
  int64_t t0 = MonotonicNs();
  Fill(big, c.big_keys, c.buffer_size);
  int64_t fill_ns = MonotonicNs() - t0;

  double data_bytes = 0;
  for (uint64_t i = 0; i < c.big_keys; ++i) data_bytes += KeyOf(i).size() + kValueBytes;
  const uint64_t probe = c.big_keys / 2;
  const std::string label = std::to_string(c.big_keys) + " keys";

  shmdict::DictStatus before = big.GetStatus();
  // As the dict is after a bulk load: the newest snapshot plus whatever log followed it.
  AddAttachRows(b, label, MeasureAttach(name, c.reps, KeyOf(probe), ValueOf(probe, 0)),
                data_bytes / 1024);
  // Right after a snapshot, so there is (almost) no log to replay: the best case.
  Check(big.Dump(), "Dump (big)");
  AddAttachRows(b, label + ", after Dump()",
                MeasureAttach(name, c.reps, KeyOf(probe), ValueOf(probe, 0)), data_bytes / 1024);

  // Identical writes (the workload's keys and order) on the big dict and on a fresh dict per
  // repetition, so the number of keys present is the only difference. Opening and closing the
  // fresh dict stay outside the timed span.
  const int passes = WritePasses(b.work.keys.size(), c.buffer_size);
  const double ops = static_cast<double>(b.work.keys.size() * passes);
  Samples big_ns, empty_ns;
  double big_longest_ns = 0;
  double empty_longest_ns = 0;
  const uint64_t big_snapshots_before = big.GetStatus().snapshots_built.value();
  for (int rep = 0; rep < c.reps; ++rep) {
    int64_t start = MonotonicNs();
    WriteAll(big, b.work, rep + 1, passes, &big_longest_ns);
    big_ns.Add(static_cast<double>(MonotonicNs() - start) / ops);

    Dict empty = Check(Dict::Open(DictOptions(NewDictName("empty" + std::to_string(rep)),
                                              shmdict::CreateMode::kMustCreate, c.buffer_size)),
                       "Open (empty)");
    start = MonotonicNs();
    WriteAll(empty, b.work, rep + 1, passes, &empty_longest_ns);
    empty_ns.Add(static_cast<double>(MonotonicNs() - start) / ops);
  }
  Row row = ThroughputRow("write, " + label + " present vs empty dict", big_ns, empty_ns,
                          "shmdict, empty dict", 0.8);
  row.metrics.emplace_back("shmdict_longest_set_ns", big_longest_ns);
  row.metrics.emplace_back("baseline_longest_set_ns", empty_longest_ns);
  b.rows.push_back(std::move(row));

  shmdict::DictStatus after = big.GetStatus();
  b.notes.emplace_back(
      "big dict",
      std::to_string(c.big_keys) + " keys filled in " + FormatNs(static_cast<double>(fill_ns)) +
          "; at attach: revision " + std::to_string(before.revision) + ", snapshot revision " +
          std::to_string(before.snapshot_revision) + ", log used " +
          std::to_string(before.log_used) + " B; segment " + std::to_string(before.segment_bytes) +
          " B; timed writes: " + std::to_string(b.work.keys.size() * passes) +
          " per repetition, during which " +
          std::to_string(after.snapshots_built.value_or(0) - big_snapshots_before) +
          " snapshots were published and the slowest Set took " + FormatNs(big_longest_ns) +
          " (empty dict: " + FormatNs(empty_longest_ns) + ")");
}

// Change-visible latency: a reader in another process (spinning or in WaitForChange) sees a
// timestamp the writer stored and reports now - timestamp.
void RunLatency(Bench& b, const std::string& mode) {
  const Config& c = b.config;
  const std::string name = NewDictName("lat_" + mode);
  Dict writer =
      Check(Dict::Open(DictOptions(name, shmdict::CreateMode::kMustCreate, c.buffer_size)),
            "Open (latency)");
  const std::string key = "ts";
  Check(writer.Set(key, Value::Int(0)), "Set (latency)");
  // --pin puts writer and reader on separate CPUs, so the writer's wake-up can never preempt the
  // spinner. Off by default: on this 2-vCPU VM it made both medians worse (a futex wake then always
  // needs a cross-CPU interrupt to a halted vCPU), and the scheduler placement did better.
  const std::vector<int> cpus = AllowedCpus();
  const bool pin = c.pin && cpus.size() >= 2;
  std::optional<ScopedPin> writer_pin;
  if (pin) writer_pin.emplace(cpus.front());
  std::unique_ptr<peers::Process> reader =
      peers::SpawnSelf({kWatchCommand, name, mode, std::to_string(pin ? cpus.back() : -1)});
  if (std::optional<std::string> ready = reader->ReadLine(kChildTimeoutNs);
      !ready || *ready != "ready") {
    Fail("watch child did not start: " + reader->Wait(kChildTimeoutNs));
  }
  // Spacing lets the reader return to its idle wait before each write, so every sample measures
  // the wake-up from idle rather than a reader that is still busy with the previous change.
  const int64_t spacing_ns = c.spacing_us * 1000;
  SleepNs(10 * spacing_ns);
  // The writer's own Set is part of the latency (the timestamp is taken before it); timing it
  // separately tells how much of the total is the write and how much the reader's wake-up.
  Samples set_ns;
  for (int i = 0; i < c.samples; ++i) {
    SleepNs(spacing_ns);
    const int64_t ts = MonotonicNs();
    Check(writer.Set(key, Value::Int(ts)), "Set (latency)");
    set_ns.Add(static_cast<double>(MonotonicNs() - ts));
  }
  SleepNs(spacing_ns);  // so the last sample is not coalesced with the stop marker
  Check(writer.Set(key, Value::Int(-1)), "Set (latency stop)");
  const std::map<std::string, std::string> f = ChildResult(*reader, "watch");

  const double p50 = NumberField(f, "p50_ns");
  const double limit_ns = mode == "spin" ? 1e3 : 20e3;
  Row row;
  row.op = mode == "spin" ? "change visible, spinning reader" : "change visible, futex wait";
  row.shm = "p50 " + FormatNs(p50) + ", p99 " + FormatNs(NumberField(f, "p99_ns")) +
            " (n=" + Format("%.0f", NumberField(f, "count")) + ")";
  row.target = "p50 <= " + FormatNs(limit_ns);
  row.verdict = Verdict(p50 <= limit_ns);
  row.metrics = {{"p50_ns", p50},
                 {"p90_ns", NumberField(f, "p90_ns")},
                 {"p99_ns", NumberField(f, "p99_ns")},
                 {"max_ns", NumberField(f, "max_ns")},
                 {"samples", NumberField(f, "count")},
                 {"writes", static_cast<double>(c.samples)},
                 {"writer_set_p50_ns", set_ns.Median()},
                 {"writer_set_p99_ns", set_ns.Percentile(99)}};
  b.notes.emplace_back(row.op, "the writer's Set call alone: p50 " + FormatNs(set_ns.Median()) +
                                   ", p99 " + FormatNs(set_ns.Percentile(99)) +
                                   (pin ? "; writer on CPU " + std::to_string(cpus.front()) +
                                              ", reader on CPU " + std::to_string(cpus.back())
                                        : "; not pinned"));
  b.rows.push_back(std::move(row));
}

// ------------------------------------------------------------------------- child subcommands

// argv: --internal-attach NAME KEY EXPECTED. Prints one line of k=v fields.
int AttachChildMain(int argc, char** argv) {
  if (argc != 5) return 2;
  alarm(kChildAlarmSeconds);
  std::map<std::string, int64_t> before = ReadSmapsRollup();
  int64_t t0 = MonotonicNs();
  auto dict = Dict::Open(
      DictOptions(argv[2], shmdict::CreateMode::kMustAttach, shmdict::Options{}.buffer_size));
  int64_t t1 = MonotonicNs();
  if (!dict.ok()) {
    std::fprintf(stderr, "attach child: %s\n", dict.status().ToString().c_str());
    return 1;
  }
  std::optional<Value> value = *dict->Get(argv[3]);
  int64_t t2 = MonotonicNs();
  std::map<std::string, int64_t> after = ReadSmapsRollup();
  if (!value || value->data() != argv[4]) {
    std::string got = value ? "'" + value->data() + "'" : "nothing";
    std::fprintf(stderr, "attach child: '%s' reads %s, expected '%s'\n", argv[3], got.c_str(),
                 argv[4]);
    return 1;
  }
  std::printf("open_ns=%" PRId64 " attach_ns=%" PRId64 " rss_before_kb=%" PRId64
              " rss_after_kb=%" PRId64 " pss_before_kb=%" PRId64 " pss_after_kb=%" PRId64
              " anon_before_kb=%" PRId64 " anon_after_kb=%" PRId64 "\n",
              t1 - t0, t2 - t0, before["Rss"], after["Rss"], before["Pss"], after["Pss"],
              before["Anonymous"], after["Anonymous"]);
  return 0;
}

// argv: --internal-watch NAME spin|futex CPU (-1: not pinned). Prints "ready", then, once the
// writer stores -1, one line with the latency percentiles of every timestamp it saw.
int WatchChildMain(int argc, char** argv) {
  if (argc != 5) return 2;
  alarm(kChildAlarmSeconds);
  const bool spin = std::string_view(argv[3]) == "spin";
  if (const int cpu = std::atoi(argv[4]); cpu >= 0 && !PinToCpu(cpu)) {
    std::fprintf(stderr, "watch child: cannot pin to CPU %d: %s\n", cpu, std::strerror(errno));
    return 1;
  }
  auto dict = Dict::Open(
      DictOptions(argv[2], shmdict::CreateMode::kMustAttach, shmdict::Options{}.buffer_size));
  if (!dict.ok()) {
    std::fprintf(stderr, "watch child: %s\n", dict.status().ToString().c_str());
    return 1;
  }
  Samples latency;
  Value value;
  uint64_t seen = dict->revision();
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) {
    if (spin) {
      while (dict->published_revision() == seen) {
        __builtin_ia32_pause();  // be kind to a sibling hyperthread; costs ~tens of ns
      }
    } else {
      auto changed = dict->WaitForChange(seen, std::chrono::seconds(30));
      if (!changed.ok()) {
        std::fprintf(stderr, "watch child: %s\n", changed.status().ToString().c_str());
        return 1;
      }
    }
    if (!*dict->Get("ts", &value)) {
      std::fprintf(stderr, "watch child: key 'ts' missing\n");
      return 1;
    }
    const int64_t now = MonotonicNs();
    seen = dict->revision();
    std::optional<int64_t> ts = value.AsInt();
    if (!ts) {
      std::fprintf(stderr, "watch child: 'ts' is not an int\n");
      return 1;
    }
    if (*ts < 0) break;
    if (*ts > 0) latency.Add(static_cast<double>(now - *ts));
  }
  std::printf("count=%zu p50_ns=%.0f p90_ns=%.0f p99_ns=%.0f max_ns=%.0f\n", latency.size(),
              latency.Percentile(50), latency.Percentile(90), latency.Percentile(99),
              latency.Max());
  return 0;
}

// ------------------------------------------------------------------------------------- main

// Fills a Config from the command line. nullopt: run; otherwise the exit code to return.
std::optional<int> ParseFlags(int argc, char** argv, Config* config) {
  using shmdict::bench::AddCountFlag;
  CLI::App app{
      "Checks docs/DESIGN.md's performance targets that one host can measure, against a "
      "std::unordered_map in the same run.",
      "shmdict_bench"};
  uint64_t keys = 0, big_keys = 0, reps = 0, samples = 0, spacing_us = 0, buffer_size = 0;
  bool keys_given = false, big_keys_given = false, reps_given = false, samples_given = false,
       spacing_given = false, buffer_given = false;
  app.add_flag("--quick", config->quick,
               "smoke run: 2000 keys, 20000 big keys, 2 reps, 200 samples (explicit flags win)");
  AddCountFlag(app, "--keys", &keys, &keys_given, "workload keys (default 100k)");
  AddCountFlag(app, "--big-keys", &big_keys, &big_keys_given,
               "keys of the attach / write-scaling dict (default 1M)");
  AddCountFlag(app, "--reps", &reps, &reps_given, "repetitions, best taken (default 5)");
  AddCountFlag(app, "--samples", &samples, &samples_given,
               "latency samples per reader mode (default 2000)");
  AddCountFlag(app, "--spacing-us", &spacing_us, &spacing_given,
               "pause between latency writes, in microseconds (default 1000)");
  app.add_flag("--pin", config->pin,
               "latency writer and reader on separate CPUs (default: the scheduler places them)");
  shmdict::bench::AddSizeFlag(app, "--buffer-size", &buffer_size, &buffer_given,
                              "Options::buffer_size for every dict, e.g. 64K (default: the "
                              "library's)");
  app.add_option("--json", config->json_path, "also write the results as JSON to this file");
  if (auto exit_code = shmdict::bench::ParseCommandLine(app, argc, argv)) return exit_code;
  if (config->quick) {
    config->keys = 2000;
    config->big_keys = 20000;
    config->reps = 2;
    config->samples = 200;
    config->spacing_us = 500;
  }
  if (keys_given) config->keys = keys;
  if (big_keys_given) config->big_keys = big_keys;
  if (reps_given) config->reps = static_cast<int>(reps);
  if (samples_given) config->samples = static_cast<int>(samples);
  if (spacing_given) config->spacing_us = static_cast<int64_t>(spacing_us);
  if (buffer_given) config->buffer_size = buffer_size;
  if (config->keys > UINT32_MAX / 2) {  // indexes are uint32 and misses use keys n..2n
    std::fprintf(stderr, "shmdict_bench: --keys is too large (see --help)\n");
    return 2;
  }
  return std::nullopt;
}

std::string MachineDescription() {
  utsname u{};
  uname(&u);
  return std::string(u.sysname) + " " + u.release + " " + u.machine + ", " +
         std::to_string(sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs, compiler " + __VERSION__ +
#ifdef NDEBUG
         ", NDEBUG";
#else
         ", assertions on (not a Release build?)";
#endif
}

int RunBench(const Config& config) {
  Bench b;
  b.config = config;
  b.work = MakeWorkload(config.keys);
  b.notes.emplace_back("machine", MachineDescription());
  const std::string load_at_start = peers::LoadAverage();

  RunSingleProcess(b);
  RunBigDict(b);
  RunLatency(b, "spin");
  RunLatency(b, "futex");
  b.notes.emplace_back("load average (1/5/15 min)",
                       "at start " + load_at_start + " (other jobs), at end " +
                           peers::LoadAverage() + " (includes this run)");

  const bool default_buffer = config.buffer_size == shmdict::Options{}.buffer_size;
  std::printf("shmdict_bench: keys=%" PRIu64 " (\"key:<i>\" -> %zu-byte str), big-keys=%" PRIu64
              ", reps=%d (times: best of; memory: median)\n",
              config.keys, kValueBytes, config.big_keys, config.reps);
  std::printf("  Options{.buffer_size = %" PRIu64 " (%s), .background_compaction = true}\n",
              config.buffer_size, default_buffer ? "the library default" : "--buffer-size");
  std::printf("  latency: %d writes, %" PRId64
              " us apart; ratio = shmdict throughput / baseline\n\n",
              config.samples, config.spacing_us);
  PrintTable(b.rows);
  std::printf("\n");
  for (const auto& [what, text] : b.notes) std::printf("%s: %s\n", what.c_str(), text.c_str());

  if (!config.json_path.empty()) {
    WriteJson(config.json_path,
              {{"keys", config.keys},
               {"big_keys", config.big_keys},
               {"value_bytes", kValueBytes},
               {"reps", config.reps},
               {"latency_samples", config.samples},
               {"latency_spacing_us", config.spacing_us},
               {"pin", config.pin},
               {"buffer_size", config.buffer_size},
               {"buffer_size_is_default", default_buffer},
               {"background_compaction", true},
               {"quick", config.quick}},
              b.notes, b.rows);
  }
  // A MISS is a result, not a failure of the run: the exit status reports only whether it ran.
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == kAttachCommand) return AttachChildMain(argc, argv);
  if (argc >= 2 && std::string_view(argv[1]) == kWatchCommand) return WatchChildMain(argc, argv);

  Config config;
  if (auto exit_code = ParseFlags(argc, argv, &config)) return *exit_code;
  peers::InstallCleanup();
  int exit_code = shmdict::bench::RunReportingErrors<BenchError>("shmdict_bench",
                                                                 [&] { return RunBench(config); });
  if (!UnlinkEverything() && exit_code == 0) exit_code = 1;
  return exit_code;
}
