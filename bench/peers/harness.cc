#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace peers {

void Fail(const std::string& what) { throw BenchError(what); }

void SleepNs(int64_t ns) {
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
  }
}

// ------------------------------------------------------------------------------------ clocks

namespace op_clock {
namespace {
double g_overhead_ns = NAN;

bool CpuHasInvariantTsc() {
#if defined(__x86_64__) || defined(__i386__)
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    auto has = [&](const char* flag) {
      return (" " + line + " ").find(std::string(" ") + flag + " ") != std::string::npos;
    };
    return has("constant_tsc") && has("nonstop_tsc");
  }
#endif
  return false;
}
}  // namespace

void Init(std::optional<double> ns_per_tick) {
  if (ns_per_tick) {
    g_use_tsc = *ns_per_tick > 0;
    g_ns_per_tick = g_use_tsc ? *ns_per_tick : 1.0;
  } else if (CpuHasInvariantTsc()) {
    g_use_tsc = true;
    const int64_t t0 = MonotonicNs();
    const uint64_t c0 = Now();
    SleepNs(50'000'000);
    const int64_t t1 = MonotonicNs();
    const uint64_t c1 = Now();
    g_ns_per_tick = static_cast<double>(t1 - t0) / static_cast<double>(c1 - c0);
  } else {
    g_use_tsc = false;
    g_ns_per_tick = 1.0;
  }
  // What one timed operation pays for its own measurement: a reading and a histogram update.
  Histogram h;
  constexpr int kRounds = 200'000;
  uint64_t previous = Now();
  const uint64_t start = previous;
  for (int i = 0; i < kRounds; ++i) {
    const uint64_t now = Now();
    h.Add(ToNs(now - previous));
    previous = now;
  }
  g_overhead_ns = static_cast<double>(ToNs(previous - start)) / kRounds;
}

std::string Describe() {
  if (!g_use_tsc) return "clock_gettime(CLOCK_MONOTONIC)";
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "rdtsc (invariant TSC, %.4f ns/tick)", g_ns_per_tick);
  return buffer;
}

double OverheadNs() { return g_overhead_ns; }
double Calibration() { return g_use_tsc ? g_ns_per_tick : 0.0; }
}  // namespace op_clock

// ------------------------------------------------------------------------------- histograms

void Histogram::Merge(const Histogram& other) {
  for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
}

double Histogram::Percentile(double p) const {
  if (total_ == 0) return NAN;
  uint64_t rank = static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_)));
  rank = std::clamp<uint64_t>(rank, 1, total_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      if (i < (size_t{1} << kSubBits)) return static_cast<double>(i);
      const int e = static_cast<int>(i >> kSubBits) + kSubBits - 1;
      const uint64_t sub = i & ((1u << kSubBits) - 1);
      const uint64_t low = ((uint64_t{1} << kSubBits) + sub) << (e - kSubBits);
      const uint64_t width = uint64_t{1} << (e - kSubBits);
      return static_cast<double>(low) + static_cast<double>(width - 1) / 2.0;
    }
  }
  return NAN;
}

std::string Histogram::Serialize() const {
  std::string out;
  for (size_t i = 0; i < kBuckets; ++i) {
    if (counts_[i] == 0) continue;
    if (!out.empty()) out += ';';
    out += std::to_string(i) + ":" + std::to_string(counts_[i]);
  }
  return out.empty() ? "-" : out;
}

Histogram Histogram::Parse(std::string_view text) {
  Histogram h;
  if (text == "-" || text.empty()) return h;
  while (!text.empty()) {
    const size_t end = text.find(';');
    const std::string item(text.substr(0, end));
    const size_t colon = item.find(':');
    char* rest = nullptr;
    const unsigned long long bucket = std::strtoull(item.c_str(), &rest, 10);
    if (colon == std::string::npos || rest != item.c_str() + colon || bucket >= kBuckets) {
      Fail("bad histogram item '" + item + "'");
    }
    const unsigned long long count = std::strtoull(item.c_str() + colon + 1, &rest, 10);
    if (*rest != '\0') Fail("bad histogram item '" + item + "'");
    h.counts_[bucket] += count;
    h.total_ += count;
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return h;
}

const std::vector<double>& PercentileGrid() {
  static const std::vector<double> grid = [] {
    std::vector<double> g = {0.1, 0.5};
    for (int p = 1; p <= 99; ++p) g.push_back(p);
    for (double p : {99.5, 99.9, 99.99}) g.push_back(p);
    return g;
  }();
  return grid;
}

// ----------------------------------------------------------------------------------- memory

bool NameIsExactly(std::string_view name, std::string_view arg) { return name == arg; }

bool NameIsShmdictDict(std::string_view name, std::string_view arg) {
  return name.substr(0, arg.size()) == arg &&
         (name.size() == arg.size() || name[arg.size()] == '@');
}

int64_t TmpfsBytes(bool (*match)(std::string_view, std::string_view), std::string_view arg) {
  int64_t bytes = 0;
  DIR* dir = opendir("/dev/shm");
  if (dir == nullptr) return -1;
  while (const dirent* entry = readdir(dir)) {
    if (!match(entry->d_name, arg)) continue;
    const std::string path = std::string("/dev/shm/") + entry->d_name;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) continue;
    bytes += static_cast<int64_t>(st.st_blocks) * 512;
    if (!S_ISDIR(st.st_mode)) continue;
    if (DIR* sub = opendir(path.c_str())) {
      while (const dirent* file = readdir(sub)) {
        struct stat fst;
        if (file->d_name[0] == '.') continue;
        if (stat((path + "/" + file->d_name).c_str(), &fst) == 0 && S_ISREG(fst.st_mode)) {
          bytes += static_cast<int64_t>(fst.st_blocks) * 512;
        }
      }
      closedir(sub);
    }
  }
  closedir(dir);
  return bytes;
}

// ---------------------------------------------------------------------------------- cleanup

namespace {
// RunPrefix() and "shmdict." + RunPrefix(), in fixed storage: the signal handler reads them.
shmdict::bench::ShmPrefix g_prefixes[2];
constexpr int kMaxGroups = 128;
std::atomic<pid_t> g_groups[kMaxGroups];

void RegisterGroup(pid_t pgid) {
  for (auto& slot : g_groups) {
    pid_t expected = 0;
    if (slot.compare_exchange_strong(expected, pgid)) return;
  }
  kill(-pgid, SIGKILL);
  Fail("too many child processes");
}

void UnregisterGroup(pid_t pgid) {
  for (auto& slot : g_groups) {
    pid_t expected = pgid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

extern "C" void OnFatalSignal(int signal_number) {
  for (auto& slot : g_groups) {
    if (const pid_t pgid = slot.load(); pgid > 0) kill(-pgid, SIGKILL);
  }
  SweepRunFiles();
  // Re-raise with the default action so the exit status (and a core dump) stays truthful.
  ::signal(signal_number, SIG_DFL);
  ::raise(signal_number);
}
}  // namespace

std::string RunPrefix() { return "shmdict_bench_" + std::to_string(getpid()) + "_"; }

std::string NewName(std::string_view tag) { return RunPrefix() + std::string(tag); }

void InstallCleanup() {
  shmdict::bench::SetShmPrefix(&g_prefixes[0], RunPrefix());
  shmdict::bench::SetShmPrefix(&g_prefixes[1], "shmdict." + RunPrefix());
  shmdict::bench::InstallFatalSignalHandler(
      OnFatalSignal, {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGPIPE});
}

int SweepRunFiles() {
  return shmdict::bench::SweepShmEntries(g_prefixes, std::size(g_prefixes), true);
}

void RemoveShmEntry(const std::string& name) {
  const int dir = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  struct stat st;
  if (fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(st.st_mode)) {
      shmdict::bench::RemoveDirectoryAt(dir, name.c_str());
    } else {
      unlinkat(dir, name.c_str(), 0);
    }
  }
  close(dir);
}

// ---------------------------------------------------------------------------------- children

Process::Process(const Spec& spec) {
  Spec options = spec;
  options.new_process_group = true;
  options.kill_with_parent = true;
  std::string error;
  process_ = shmdict::internal::Subprocess::Start(options, &error);
  if (process_ == nullptr) Fail(error);
  RegisterGroup(process_->pid());
  running_ = true;
}

Process::~Process() { Kill(); }

void Process::Finished() {
  if (running_) UnregisterGroup(process_->pid());
  running_ = false;
}

std::optional<std::string> Process::ReadLine(int64_t timeout_ns) {
  std::string line;
  switch (process_->ReadLine(&line,
                             shmdict::internal::DeadlineIn(std::chrono::nanoseconds(timeout_ns)))) {
    case shmdict::internal::LineStatus::kLine:
      return line;
    case shmdict::internal::LineStatus::kEof:
      return std::nullopt;
    case shmdict::internal::LineStatus::kTimeout:
      break;
  }
  Fail("child " + std::to_string(pid()) + " (" + std::to_string(timeout_ns / 1'000'000'000) +
       " s timeout) did not answer");
}

void Process::WriteLine(std::string_view line) {
  if (!process_->WriteLine(line))
    Fail("child " + std::to_string(pid()) + " does not read its input");
}

std::string Process::Wait(int64_t timeout_ns) {
  if (!running()) return "not running";
  const shmdict::internal::ExitInfo exit =
      process_->Wait(shmdict::internal::DeadlineIn(std::chrono::nanoseconds(timeout_ns)));
  Finished();
  if (exit.timed_out) return "did not exit in time; killed";
  if (!exit.reaped) return "could not be reaped";
  if (exit.exited && exit.exit_code == 0) return "";
  return exit.exited ? "exit status " + std::to_string(exit.exit_code)
                     : "signal " + std::to_string(exit.signal);
}

void Process::Kill() {
  process_->Kill();
  Finished();
}

std::unique_ptr<Process> SpawnSelf(const std::vector<std::string>& args) {
  Process::Spec spec;
  spec.path = "/proc/self/exe";
  spec.argv = {program_invocation_short_name};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.pipe_stdin = true;
  spec.pipe_stdout = true;
  return std::make_unique<Process>(spec);
}

// ------------------------------------------------------------------------------------ fields

std::map<std::string, std::string> ParseFields(std::string_view line) {
  std::map<std::string, std::string> fields;
  while (!line.empty()) {
    const size_t end = line.find(' ');
    const std::string_view token = line.substr(0, end);
    if (size_t eq = token.find('='); eq != std::string_view::npos) {
      fields[std::string(token.substr(0, eq))] = std::string(token.substr(eq + 1));
    }
    if (end == std::string_view::npos) break;
    line.remove_prefix(end + 1);
  }
  return fields;
}

const std::string& Field(const std::map<std::string, std::string>& fields, const std::string& key) {
  auto it = fields.find(key);
  if (it == fields.end()) Fail("child output lacks '" + key + "'");
  return it->second;
}

double NumberField(const std::map<std::string, std::string>& fields, const std::string& key) {
  const std::string& text = Field(fields, key);
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0') Fail("child field " + key + "='" + text + "'");
  return value;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "unknown";
  return a + " " + b + " " + c;
}

void WriteFile(const std::string& path, const std::string& text) {
  FILE* file = std::fopen(path.c_str(), "w");
  if (file == nullptr) Fail("cannot write " + path + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  ok = std::fclose(file) == 0 && ok;
  if (!ok) Fail("cannot write " + path);
}

std::string CommandOutput(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  char buffer[512] = {};
  std::string out;
  if (std::fgets(buffer, sizeof buffer, pipe) != nullptr) out = buffer;
  pclose(pipe);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace peers
