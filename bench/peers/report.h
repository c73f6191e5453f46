// The results of a shmdict_peers run and their three renderings: a markdown report (printed and
// written to peers.md), the same as JSON (peers.json), and gnuplot plots (data, script, PNG, SVG).
//
// Every (workload, system) pair has a Cell: "ok" with its figures, "n/a" with the reason the
// system cannot do it, or "error" with what went wrong. Nothing is left out silently.
#ifndef SHMDICT_BENCH_PEERS_REPORT_H_
#define SHMDICT_BENCH_PEERS_REPORT_H_

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"
#include "peer.h"

namespace peers {

// How a workload's headline figure is read, and so how its ratio to shmdict is formed (always
// oriented so that < 1 means "slower than shmdict").
enum class Metric {
  kThroughput,  // ops/s; ratio = system ops/s / shmdict ops/s
  kTime,        // one duration; ratio = shmdict time / system time
  kLatency,     // a latency distribution; ratio = shmdict p50 / system p50
};

struct Cell {
  std::string status = "n/a";  // "ok", "n/a", "error"
  std::string reason;          // for n/a and error
  double ops_per_s = NAN;
  uint64_t ops = 0;
  double elapsed_ns = NAN;
  double time_ns = NAN;  // kTime's figure; for bulk import the whole import
  double p50_ns = NAN;
  double p90_ns = NAN;
  double p99_ns = NAN;
  double p999_ns = NAN;
  double max_ns = NAN;              // the slowest operation (its histogram bucket)
  std::vector<double> percentiles;  // ns at PercentileGrid()
  Memory memory;                    // the store (shared)
  double pss_kib = NAN;             // per process (attach)
  double rss_kib = NAN;
  uint64_t mismatches = 0;
  uint64_t samples = 0;      // kLatency: changes seen
  std::vector<double> reps;  // the headline figure of every repetition, in run order
  std::string note;

  void SetLatency(const Histogram& h);
  // The figure the smoke test requires to be > 0 when status is "ok".
  double Headline(Metric metric) const;
};

struct WorkloadReport {
  std::string id;     // "read", "multi_1_reads", ...
  std::string title;  // "read hit"
  Metric metric = Metric::kThroughput;
  std::string description;
  std::map<std::string, Cell> cells;  // by system name
};

struct Report {
  std::vector<std::pair<std::string, std::string>> meta;    // command, date, commit, machine...
  std::vector<std::pair<std::string, std::string>> config;  // as JSON values
  std::vector<std::string> method;                          // paragraphs
  std::vector<std::string> systems;                         // report order
  std::map<std::string, std::string> descriptions;          // what is measured, per system
  std::vector<WorkloadReport> workloads;
  std::vector<std::string> plot_files;  // written next to peers.md
  std::string plots_note;               // why there are no plots, if there are none
};

std::string RenderMarkdown(const Report& report);
std::string RenderJson(const Report& report);
// Writes the .dat files and plots.gp into dir and runs gnuplot there. Returns the names of the
// images it produced, or sets *note to why it could not.
std::vector<std::string> WritePlots(const Report& report, const std::string& dir,
                                    std::string* note);
// Checks a peers.json: every system of the six is present in every workload, each cell "ok" with
// a headline figure > 0 or "n/a" with a reason. Returns the problems (empty: fine).
std::vector<std::string> CheckJson(const std::string& path);

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_REPORT_H_
