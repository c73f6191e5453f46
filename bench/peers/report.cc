#include "report.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/bench_support.h"

namespace peers {
namespace {

using ordered_json = nlohmann::ordered_json;

const char* const kAllSystems[] = {"shmdict", "unordered_map", "lmdb", "boost_interprocess",
                                   "redis",   "python_manager"};

constexpr char kRatioHeader[] = "vs shmdict (< 1: slower)";

using shmdict::bench::Format;
using shmdict::bench::FormatKiB;

// "812 ns", "2.10 us", "12.30 ms": whole nanoseconds below a microsecond, "-" for NaN.
std::string FormatNs(double ns) { return shmdict::bench::FormatNs(ns, 0, "-"); }

std::string FormatRate(double per_s) {
  if (std::isnan(per_s)) return "-";
  if (per_s >= 1e6) return Format("%.2f M", per_s / 1e6);
  if (per_s >= 1e3) return Format("%.1f k", per_s / 1e3);
  return Format("%.0f", per_s);
}

std::string FormatRatio(double r) {
  if (std::isnan(r)) return "-";
  if (r >= 10) return Format("%.0f", r);
  if (r >= 0.1) return Format("%.2f", r);
  if (r >= 0.001) return Format("%.3f", r);
  return Format("%.1e", r);
}

// Appends rather than inserts or prepends: GCC 12 at -O3 raises a false -Wrestrict on
// string::insert and on "literal" + std::string&& (GCC bug 105329), so this file avoids both.
std::string FormatCount(uint64_t n) {
  const std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string MemoryText(const Memory& m) {
  if (std::isnan(m.kib)) return "-";
  std::string text = FormatKiB(m.kib);
  if (!std::isnan(m.empty_kib)) text += " (empty: " + FormatKiB(m.empty_kib) + ")";
  return text;
}

const Cell* Find(const WorkloadReport& w, const std::string& system) {
  auto it = w.cells.find(system);
  return it == w.cells.end() ? nullptr : &it->second;
}

// < 1 means slower than shmdict, whatever the metric.
double Ratio(const WorkloadReport& w, const Cell& c) {
  const Cell* shm = Find(w, "shmdict");
  if (shm == nullptr || shm->status != "ok" || c.status != "ok") return NAN;
  switch (w.metric) {
    case Metric::kThroughput:
      return c.ops_per_s / shm->ops_per_s;
    case Metric::kTime:
      return shm->time_ns / c.time_ns;
    case Metric::kLatency:
      return shm->p50_ns / c.p50_ns;
  }
  return NAN;
}

const char* RatioDefinition(Metric metric) {
  switch (metric) {
    case Metric::kThroughput:
      return "system ops/s ÷ shmdict ops/s (< 1: slower than shmdict, > 1: faster)";
    case Metric::kTime:
      return "shmdict time ÷ system time (< 1: slower than shmdict, > 1: faster)";
    case Metric::kLatency:
      return "shmdict p50 ÷ system p50 (< 1: slower than shmdict, > 1: faster)";
  }
  return "";
}

// docs/DESIGN.md: "peers in the same run: faster than Redis, LMDB and a Boost.Interprocess map on
// the same workload".
const char* const kTargetPeers[] = {"redis", "lmdb", "boost_interprocess"};

struct TargetVerdict {
  std::string verdict;  // "PASS", "MISS (slower than lmdb)", "n/a"
};

TargetVerdict DesignTarget(const WorkloadReport& w) {
  const Cell* shm = Find(w, "shmdict");
  if (shm == nullptr || shm->status != "ok") return {"n/a"};
  std::string misses;
  int compared = 0;
  for (const char* peer : kTargetPeers) {
    const Cell* c = Find(w, peer);
    if (c == nullptr || c->status != "ok") continue;
    ++compared;
    const double ratio = Ratio(w, *c);
    if (ratio >= 1) misses += std::string(misses.empty() ? "" : ", ") + peer;
  }
  if (compared == 0) return {"n/a"};
  return {misses.empty() ? "PASS" : "MISS (slower than " + misses + ")"};
}

std::string Headline(const WorkloadReport& w, const Cell& c) {
  if (c.status == "n/a") return "n/a";
  if (c.status == "error") return "**error**";
  switch (w.metric) {
    case Metric::kThroughput:
      return FormatRate(c.ops_per_s) + " ops/s";
    case Metric::kTime:
      return FormatNs(c.time_ns);
    case Metric::kLatency:
      return "p50 " + FormatNs(c.p50_ns);
  }
  return "";
}

std::string Escape(std::string text) {
  std::string out;
  for (char ch : text) {
    if (ch == '|') {
      out += "\\|";
    } else if (ch == '\n') {
      out += ' ';
    } else {
      out += ch;
    }
  }
  return out;
}

std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
  std::string out = "|";
  for (const std::string& h : header) out += " " + Escape(h) + " |";
  out += "\n|";
  // Names and notes left, figures right.
  for (size_t i = 0; i < header.size(); ++i) {
    out += i == 0 || header[i] == "notes" || header[i] == "result" ? " --- |" : " ---: |";
  }
  out += "\n";
  for (const auto& row : rows) {
    out += "|";
    for (const std::string& cell : row) {
      out += ' ';
      out += Escape(cell);
      out += " |";
    }
    out += "\n";
  }
  return out;
}

std::string NotesOf(const WorkloadReport& w, const Cell& c) {
  if (c.status == "n/a") return "n/a: " + c.reason;
  if (c.status == "error") return "ERROR: " + c.reason;
  std::string note = c.note;
  if (c.reps.size() > 1) {
    note += note.empty() ? "reps: " : "; reps: ";
    for (size_t i = 0; i < c.reps.size(); ++i) {
      if (i > 0) note += " / ";
      note += w.metric == Metric::kThroughput ? FormatRate(c.reps[i]) : FormatNs(c.reps[i]);
    }
  }
  return note;
}

std::string WorkloadTable(const Report& r, const WorkloadReport& w) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header;
  switch (w.metric) {
    case Metric::kThroughput:
      header = {"system", "ops/s",        kRatioHeader, "p50",  "p99",
                "p99.9",  "store memory", "ops",        "notes"};
      break;
    case Metric::kTime:
      header = {"system", "time", kRatioHeader, "ΔPSS", "ΔRSS", "notes"};
      break;
    case Metric::kLatency:
      header = {"system", "p50", kRatioHeader, "p90", "p99", "changes seen", "notes"};
      break;
  }
  for (const std::string& system : r.systems) {
    const Cell* c = Find(w, system);
    Cell missing;
    missing.reason = "not measured";
    if (c == nullptr) c = &missing;
    const bool ok = c->status == "ok";
    std::vector<std::string> row = {system};
    switch (w.metric) {
      case Metric::kThroughput:
        row.push_back(ok ? FormatRate(c->ops_per_s) : c->status);
        row.push_back(FormatRatio(Ratio(w, *c)));
        row.push_back(ok ? FormatNs(c->p50_ns) : "-");
        row.push_back(ok ? FormatNs(c->p99_ns) : "-");
        row.push_back(ok ? FormatNs(c->p999_ns) : "-");
        row.push_back(ok ? MemoryText(c->memory) : "-");
        row.push_back(ok ? FormatCount(c->ops) : "-");
        break;
      case Metric::kTime:
        row.push_back(ok ? FormatNs(c->time_ns) : c->status);
        row.push_back(FormatRatio(Ratio(w, *c)));
        row.push_back(ok ? FormatKiB(c->pss_kib) : "-");
        row.push_back(ok ? FormatKiB(c->rss_kib) : "-");
        break;
      case Metric::kLatency:
        row.push_back(ok ? FormatNs(c->p50_ns) : c->status);
        row.push_back(FormatRatio(Ratio(w, *c)));
        row.push_back(ok ? FormatNs(c->p90_ns) : "-");
        row.push_back(ok ? FormatNs(c->p99_ns) : "-");
        row.push_back(ok ? FormatCount(c->samples) : "-");
        break;
    }
    row.push_back(NotesOf(w, *c));
    rows.push_back(std::move(row));
  }
  return Table(header, rows);
}

ordered_json Number(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(); }

ordered_json CellJson(const WorkloadReport& w, const Cell& c) {
  ordered_json j;
  j["status"] = c.status;
  if (c.status != "ok") {
    j["reason"] = c.reason;
    return j;
  }
  j["headline"] = Number(c.Headline(w.metric));
  j["ratio_vs_shmdict"] = Number(Ratio(w, c));
  if (!std::isnan(c.ops_per_s)) {
    j["ops_per_s"] = Number(c.ops_per_s);
    j["ops"] = c.ops;
    j["elapsed_ns"] = Number(c.elapsed_ns);
  }
  if (!std::isnan(c.time_ns)) j["time_ns"] = Number(c.time_ns);
  if (!std::isnan(c.p50_ns)) {
    j["p50_ns"] = Number(c.p50_ns);
    j["p90_ns"] = Number(c.p90_ns);
    j["p99_ns"] = Number(c.p99_ns);
    j["p99_9_ns"] = Number(c.p999_ns);
    j["max_ns"] = Number(c.max_ns);
  }
  if (c.ops > 0 && !std::isnan(c.elapsed_ns) && w.metric == Metric::kThroughput) {
    j["mean_ns_per_op"] = Number(c.elapsed_ns / static_cast<double>(c.ops));
  }
  if (!std::isnan(c.memory.kib)) {
    j["memory"] = {{"kib", Number(c.memory.kib)},
                   {"empty_kib", Number(c.memory.empty_kib)},
                   {"how", c.memory.how}};
  }
  if (!std::isnan(c.pss_kib)) {
    j["per_process"] = {{"pss_kib", Number(c.pss_kib)}, {"rss_kib", Number(c.rss_kib)}};
  }
  if (w.metric == Metric::kLatency) j["changes_seen"] = c.samples;
  j["mismatches"] = c.mismatches;
  if (!c.reps.empty()) j["reps"] = c.reps;
  if (!c.note.empty()) j["note"] = c.note;
  if (!c.percentiles.empty()) {
    ordered_json grid = ordered_json::array();
    const std::vector<double>& ps = PercentileGrid();
    for (size_t i = 0; i < ps.size() && i < c.percentiles.size(); ++i) {
      grid.push_back({ps[i], Number(c.percentiles[i])});
    }
    j["percentiles_ns"] = grid;
  }
  return j;
}

}  // namespace

void Cell::SetLatency(const Histogram& h) {
  p50_ns = h.Percentile(50);
  p90_ns = h.Percentile(90);
  p99_ns = h.Percentile(99);
  p999_ns = h.Percentile(99.9);
  max_ns = h.Percentile(100);
  percentiles.clear();
  for (double p : PercentileGrid()) percentiles.push_back(h.Percentile(p));
}

double Cell::Headline(Metric metric) const {
  switch (metric) {
    case Metric::kThroughput:
      return ops_per_s;
    case Metric::kTime:
      return time_ns;
    case Metric::kLatency:
      return p50_ns;
  }
  return NAN;
}

std::string RenderMarkdown(const Report& r) {
  std::ostringstream md;
  md << "# shmdict and its peers: same workloads, same keys, one run\n\n"
     << "Written by `shmdict_peers` (bench/peers/); rerun it rather than editing this file.\n\n";
  for (const auto& [what, text] : r.meta) md << "- **" << what << "**: " << text << "\n";
  md << "- **configuration**:";
  for (const auto& [key, value] : r.config) md << " " << key << "=" << value;
  md << "\n\n";

  md << "## Summary\n\nHeadline figure per workload and system; in parentheses the ratio to "
        "shmdict, oriented so that **< 1 means slower than shmdict** (throughput: system ÷ "
        "shmdict; times and latencies: shmdict ÷ system); **bold**: the peer is faster than "
        "shmdict.\n\n";
  {
    std::vector<std::string> header = {"workload"};
    header.insert(header.end(), r.systems.begin(), r.systems.end());
    std::vector<std::vector<std::string>> rows;
    for (const WorkloadReport& w : r.workloads) {
      std::vector<std::string> row = {w.title};
      for (const std::string& system : r.systems) {
        const Cell* c = Find(w, system);
        if (c == nullptr) {
          row.push_back("n/a");
          continue;
        }
        std::string text = Headline(w, *c);
        if (system != "shmdict" && c->status == "ok") {
          const double ratio = Ratio(w, *c);
          // Bold where the peer beats shmdict: the places to look at.
          text += ratio > 1 ? " **(" + FormatRatio(ratio) + ")**" : " (" + FormatRatio(ratio) + ")";
        }
        row.push_back(text);
      }
      rows.push_back(std::move(row));
    }
    md << Table(header, rows) << "\n";
  }

  md << "## docs/DESIGN.md target: faster than Redis, LMDB and a Boost.Interprocess map\n\n"
     << "Per workload, shmdict against the three peers the target names (n/a peers do not "
        "count): PASS when shmdict is faster than each of them. The figures are the ratios of "
        "the tables below (< 1: the peer is slower than shmdict).\n\n";
  {
    std::vector<std::vector<std::string>> rows;
    for (const WorkloadReport& w : r.workloads) {
      std::vector<std::string> row = {w.title};
      const TargetVerdict v = DesignTarget(w);
      for (const char* peer : kTargetPeers) {
        const Cell* c = Find(w, peer);
        const double ratio = c != nullptr ? Ratio(w, *c) : NAN;
        row.push_back(std::isnan(ratio) ? "n/a" : FormatRatio(ratio));
      }
      row.push_back(v.verdict);
      rows.push_back(std::move(row));
    }
    md << Table({"workload", "redis", "lmdb", "boost_interprocess", "result"}, rows) << "\n";
  }

  for (const WorkloadReport& w : r.workloads) {
    md << "## " << w.title << " (`" << w.id << "`)\n\n"
       << w.description << "\n\n\"vs shmdict\" = " << RatioDefinition(w.metric) << ".\n\n"
       << WorkloadTable(r, w) << "\n";
  }

  if (!r.plot_files.empty()) {
    md << "## Plots\n\n";
    for (const std::string& file : r.plot_files) {
      if (file.size() > 4 && file.substr(file.size() - 4) == ".png") {
        md << "![" << file.substr(0, file.size() - 4) << "](" << file << ")\n\n";
      }
    }
    md << "SVG versions: ";
    bool first = true;
    for (const std::string& file : r.plot_files) {
      if (file.size() > 4 && file.substr(file.size() - 4) == ".svg") {
        md << (first ? "" : ", ") << "[" << file << "](" << file << ")";
        first = false;
      }
    }
    md << ".\n\n";
  } else {
    md << "## Plots\n\nNone: " << r.plots_note << "\n\n";
  }

  md << "## What exactly is measured, per system\n\n";
  for (const std::string& system : r.systems) {
    auto it = r.descriptions.find(system);
    md << "- **" << system << "**: " << (it == r.descriptions.end() ? "-" : it->second) << "\n";
  }
  md << "\n## Method\n\n";
  for (const std::string& paragraph : r.method) md << "- " << paragraph << "\n";
  return md.str();
}

std::string RenderJson(const Report& r) {
  ordered_json j;
  ordered_json meta;
  for (const auto& [what, text] : r.meta) meta[what] = text;
  j["meta"] = meta;
  ordered_json config;
  for (const auto& [key, value] : r.config) config[key] = ordered_json::parse(value);
  j["config"] = config;
  j["method"] = r.method;
  ordered_json systems;
  for (const std::string& system : r.systems) {
    auto it = r.descriptions.find(system);
    systems[system] = {{"description", it == r.descriptions.end() ? "" : it->second}};
  }
  j["systems"] = systems;
  ordered_json workloads = ordered_json::array();
  for (const WorkloadReport& w : r.workloads) {
    ordered_json wj;
    wj["id"] = w.id;
    wj["title"] = w.title;
    wj["metric"] = w.metric == Metric::kThroughput ? "throughput"
                   : w.metric == Metric::kTime     ? "time"
                                                   : "latency";
    wj["ratio"] = RatioDefinition(w.metric);
    wj["description"] = w.description;
    wj["design_target"] = DesignTarget(w).verdict;
    ordered_json cells;
    for (const std::string& system : r.systems) {
      const Cell* c = Find(w, system);
      Cell missing;
      missing.reason = "not measured";
      cells[system] = CellJson(w, c != nullptr ? *c : missing);
    }
    wj["cells"] = cells;
    workloads.push_back(wj);
  }
  j["workloads"] = workloads;
  j["plots"] = r.plot_files;
  if (r.plot_files.empty()) j["plots_note"] = r.plots_note;
  return j.dump(1) + "\n";
}

namespace {

std::string FindInPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t begin = 0;
  while (begin <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', begin), dirs.size());
    const std::string candidate = dirs.substr(begin, end - begin) + "/" + program;
    if (end > begin && access(candidate.c_str(), X_OK) == 0) return candidate;
    begin = end + 1;
  }
  return "";
}

std::string DatNumber(double v) { return std::isfinite(v) ? Format("%.6g", v) : "-"; }

struct Series {
  std::string title;
  int column;
};

}  // namespace

std::vector<std::string> WritePlots(const Report& r, const std::string& dir, std::string* note) {
  // throughput.dat: one row per throughput workload, one column per system.
  std::string dat = "# workload";
  for (const std::string& system : r.systems) dat += " " + system;
  dat += "\n";
  std::vector<bool> system_has_bar(r.systems.size(), false);
  for (const WorkloadReport& w : r.workloads) {
    if (w.metric != Metric::kThroughput) continue;
    dat += "\"" + w.title + "\"";
    for (size_t s = 0; s < r.systems.size(); ++s) {
      const Cell* c = Find(w, r.systems[s]);
      const bool ok = c != nullptr && c->status == "ok";
      system_has_bar[s] = system_has_bar[s] || ok;
      dat += " " + (ok ? DatNumber(c->ops_per_s) : std::string("-"));
    }
    dat += "\n";
  }
  WriteFile(dir + "/throughput.dat", dat);

  // latency_<id>.dat: percentile, then the latency in us of each system (or system/mode).
  auto cdf_file = [&](const std::string& file, const std::vector<const WorkloadReport*>& sources,
                      std::vector<Series>* series) {
    std::vector<std::pair<std::string, const Cell*>> columns;
    for (const WorkloadReport* w : sources) {
      for (const std::string& system : r.systems) {
        const Cell* c = Find(*w, system);
        if (c == nullptr || c->status != "ok" || c->percentiles.empty()) continue;
        std::string label = system;
        if (sources.size() > 1) {
          label += w->id == "change_poll"     ? " (polling)"
                   : w->id == "change_notify" ? " (blocking)"
                                              : " (" + w->title + ")";
        }
        columns.emplace_back(label, c);
      }
    }
    std::string text = "# percentile";
    for (const auto& [title, cell] : columns) text += " \"" + title + "\"";
    text += "\n";
    const std::vector<double>& grid = PercentileGrid();
    for (size_t i = 0; i < grid.size(); ++i) {
      text += Format("%g", grid[i]);
      for (const auto& [title, cell] : columns) {
        text += ' ';
        text += DatNumber(i < cell->percentiles.size() ? cell->percentiles[i] / 1e3 : NAN);
      }
      text += "\n";
    }
    WriteFile(dir + "/" + file, text);
    for (size_t c = 0; c < columns.size(); ++c) {
      series->push_back({columns[c].first, static_cast<int>(c) + 2});
    }
  };
  auto find = [&](const std::string& id) -> const WorkloadReport* {
    for (const WorkloadReport& w : r.workloads) {
      if (w.id == id) return &w;
    }
    return nullptr;
  };
  struct CdfPlot {
    std::string name, title;
    std::vector<Series> series;
  };
  std::vector<CdfPlot> cdfs;
  for (const auto& [id, title] : std::vector<std::pair<std::string, std::string>>{
           {"read", "read hit: latency per operation"},
           {"write", "write (overwrite): latency per operation"},
       }) {
    if (const WorkloadReport* w = find(id)) {
      CdfPlot plot{"latency_" + id, title, {}};
      cdf_file(plot.name + ".dat", {w}, &plot.series);
      cdfs.push_back(std::move(plot));
    }
  }
  {
    std::vector<const WorkloadReport*> change;
    for (const char* id : {"change_poll", "change_notify"}) {
      if (const WorkloadReport* w = find(id)) change.push_back(w);
    }
    if (!change.empty()) {
      CdfPlot plot{"latency_change", "change visible in another process", {}};
      cdf_file(plot.name + ".dat", change, &plot.series);
      cdfs.push_back(std::move(plot));
    }
  }

  std::string gp =
      "# Written by shmdict_peers: run `gnuplot plots.gp` in this directory to redraw.\n"
      "set datafile missing \"-\"\n";
  std::vector<std::string> files;
  for (const char* format : {"png", "svg"}) {
    const std::string ext = format;
    auto terminal = [&](int width, int height) {
      const std::string size = std::to_string(width) + "," + std::to_string(height);
      if (ext == "png") {
        return "if (strstrt(GPVAL_TERMINALS, \"pngcairo\") > 0) {\n  set terminal pngcairo size " +
               size + " noenhanced font \"sans,10\"\n} else {\n  set terminal png size " + size +
               " noenhanced\n}\n";
      }
      return "set terminal svg size " + size + " dynamic noenhanced background \"white\"\n";
    };
    gp += "\n# ---- throughput (" + ext + ")\nreset\nset datafile missing \"-\"\n" +
          terminal(1200, 560) + "set output \"throughput." + ext +
          "\"\n"
          "set title \"Throughput per workload (higher is better; log scale)\"\n"
          "set style data histograms\nset style histogram clustered gap 1\n"
          "set style fill solid 0.9 border -1\nset boxwidth 0.9\nset logscale y\n"
          "set yrange [1:*]\nset grid ytics\nset ylabel \"operations per second\"\n"
          "set xtics rotate by -20 left\nset key outside right top vertical\n"
          "set bmargin 6\nplot ";
    bool first = true;
    for (size_t s = 0; s < r.systems.size(); ++s) {
      if (!system_has_bar[s]) continue;
      gp += std::string(first ? "" : ", \\\n     ") + "\"throughput.dat\" using " +
            std::to_string(s + 2) + (first ? ":xtic(1)" : "") + " title \"" + r.systems[s] + "\"";
      first = false;
    }
    gp += "\nunset output\n";
    files.push_back("throughput." + ext);
    for (const CdfPlot& plot : cdfs) {
      if (plot.series.empty()) continue;
      gp += "\n# ---- " + plot.name + " (" + ext + ")\nreset\nset datafile missing \"-\"\n" +
            terminal(900, 560) + "set output \"" + plot.name + "." + ext + "\"\nset title \"" +
            plot.title +
            " (CDF)\"\nset logscale x\nset grid xtics ytics mxtics\n"
            "set xlabel \"latency (us, log scale)\"\n"
            "set ylabel \"operations at or below (%)\"\nset yrange [0:100]\n"
            "set key bottom right\nplot ";
      for (size_t i = 0; i < plot.series.size(); ++i) {
        gp += std::string(i == 0 ? "" : ", \\\n     ") + "\"" + plot.name + ".dat\" using " +
              std::to_string(plot.series[i].column) + ":1 with lines lw 2 title \"" +
              plot.series[i].title + "\"";
      }
      gp += "\nunset output\n";
      files.push_back(plot.name + "." + ext);
    }
  }
  WriteFile(dir + "/plots.gp", gp);

  const std::string gnuplot = FindInPath("gnuplot");
  if (gnuplot.empty()) {
    *note =
        "gnuplot not found in PATH (package gnuplot-nox): plots.gp and the .dat files are "
        "written, no images";
    return {};
  }
  const std::string command = "cd '" + dir + "' && '" + gnuplot + "' plots.gp 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  if (pipe != nullptr) {
    char buffer[512];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  }
  const int status = pipe != nullptr ? pclose(pipe) : -1;
  if (status != 0) {
    *note = "gnuplot failed: " + output;
    return {};
  }
  if (!output.empty()) std::fprintf(stderr, "gnuplot: %s", output.c_str());
  return files;
}

std::vector<std::string> CheckJson(const std::string& path) {
  std::vector<std::string> problems;
  std::ifstream in(path);
  if (!in) return {"cannot read " + path};
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return {path + " is not JSON: " + e.what()};
  }
  for (const char* system : kAllSystems) {
    if (!j["systems"].contains(system))
      problems.push_back(std::string("system missing: ") + system);
  }
  if (!j.contains("workloads") || j["workloads"].empty()) problems.push_back("no workloads");
  for (const auto& w : j["workloads"]) {
    const std::string id = w.value("id", std::string("?"));
    for (const char* system : kAllSystems) {
      const std::string where = id + "/" + system;
      if (!w["cells"].contains(system)) {
        problems.push_back(where + ": missing");
        continue;
      }
      const auto& c = w["cells"][system];
      const std::string status = c.value("status", std::string());
      if (status == "ok") {
        if (!c.contains("headline") || !c["headline"].is_number() ||
            !(c["headline"].get<double>() > 0)) {
          problems.push_back(where + ": status ok but no figure > 0");
        }
      } else if (status == "n/a") {
        if (c.value("reason", std::string()).empty())
          problems.push_back(where + ": n/a without reason");
      } else {
        problems.push_back(where + ": " + status + ": " + c.value("reason", std::string()));
      }
    }
  }
  return problems;
}

}  // namespace peers
