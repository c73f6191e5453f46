#include "support/bench_support.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace shmdict::bench {

// ------------------------------------------------------------------------------ the workload

namespace {

// splitmix64: tiny, deterministic on every platform, unlike std distributions.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) (bound > 0), from the high 32 bits of Next().
  uint32_t Below(uint32_t bound) {
    return static_cast<uint32_t>(((Next() >> 32) * uint64_t{bound}) >> 32);
  }

 private:
  uint64_t state_;
};

}  // namespace

AccessOrder MakeAccessOrder(uint64_t n) {
  AccessOrder a;
  a.order.reserve(n);
  for (uint64_t i = 0; i < n; ++i) a.order.push_back(static_cast<uint32_t>(i));
  SplitMix64 rng(0x5348'4D44'4943'5431ull);
  for (uint64_t i = n; i > 1; --i) {  // Fisher-Yates
    std::swap(a.order[i - 1], a.order[rng.Below(static_cast<uint32_t>(i))]);
  }
  a.mix_is_write.reserve(n);
  for (uint64_t i = 0; i < n; ++i) a.mix_is_write.push_back(rng.Below(10) == 0 ? 1 : 0);
  return a;
}

// ----------------------------------------------------------------------------------- memory

std::map<std::string, int64_t> ReadSmapsRollup(pid_t pid) {
  std::map<std::string, int64_t> fields;
  char path[64];
  if (pid == 0) {
    std::snprintf(path, sizeof path, "/proc/self/smaps_rollup");
  } else {
    std::snprintf(path, sizeof path, "/proc/%d/smaps_rollup", static_cast<int>(pid));
  }
  char buffer[8192];
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fields;
  size_t total = 0;
  for (ssize_t n; (n = read(fd, buffer + total, sizeof buffer - 1 - total)) > 0;) {
    total += static_cast<size_t>(n);
  }
  close(fd);
  buffer[total] = '\0';
  for (char* line = buffer; *line != '\0';) {
    char* end = std::strchr(line, '\n');
    if (end != nullptr) *end = '\0';
    if (char* colon = std::strchr(line, ':'); colon != nullptr && colon[1] == ' ') {
      fields[std::string(line, colon)] = std::strtoll(colon + 1, nullptr, 10);
    }
    if (end == nullptr) break;
    line = end + 1;
  }
  return fields;
}

// ---------------------------------------------------------------------------------- cleanup

void SetShmPrefix(ShmPrefix* prefix, std::string_view text) {
  std::snprintf(prefix->text, sizeof prefix->text, "%.*s", static_cast<int>(text.size()),
                text.data());
  prefix->length = std::strlen(prefix->text);
}

int SweepShmEntries(const ShmPrefix* prefixes, size_t count, bool remove_directories) {
  if (count == 0 || prefixes[0].length == 0) return 0;  // an empty prefix would match everything
  int removed = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int dir = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) return removed;
    int removed_this_pass = 0;
    alignas(8) char buffer[4096];
    for (ssize_t n; (n = getdents64(dir, buffer, sizeof buffer)) > 0;) {
      for (ssize_t offset = 0; offset < n;) {
        const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + offset);
        offset += entry->d_reclen;
        bool ours = false;
        for (size_t p = 0; p < count && !ours; ++p) {
          ours = prefixes[p].length > 0 &&
                 strncmp(entry->d_name, prefixes[p].text, prefixes[p].length) == 0;
        }
        if (!ours) continue;
        if (remove_directories && entry->d_type == DT_DIR) {
          RemoveDirectoryAt(dir, entry->d_name);
          ++removed_this_pass;
        } else if (unlinkat(dir, entry->d_name, 0) == 0) {
          ++removed_this_pass;
        }
      }
    }
    close(dir);
    removed += removed_this_pass;
    if (removed_this_pass == 0) break;
  }
  return removed;
}

void RemoveDirectoryAt(int dirfd, const char* name, int depth) {
  const int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (sub >= 0) {
    alignas(8) char buffer[2048];
    for (int pass = 0; pass < 4; ++pass) {
      lseek(sub, 0, SEEK_SET);
      bool any = false;
      for (ssize_t n; (n = getdents64(sub, buffer, sizeof buffer)) > 0;) {
        for (ssize_t offset = 0; offset < n;) {
          const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + offset);
          offset += entry->d_reclen;
          if (entry->d_name[0] == '.' &&
              (entry->d_name[1] == '\0' || (entry->d_name[1] == '.' && entry->d_name[2] == '\0'))) {
            continue;
          }
          if (entry->d_type == DT_DIR) {
            if (depth > 0) {
              RemoveDirectoryAt(sub, entry->d_name, depth - 1);
              any = true;
            }
          } else if (unlinkat(sub, entry->d_name, 0) == 0) {
            any = true;
          }
        }
      }
      if (!any) break;
    }
    close(sub);
  }
  unlinkat(dirfd, name, AT_REMOVEDIR);
}

void InstallFatalSignalHandler(void (*handler)(int), std::initializer_list<int> signals) {
  for (int signal_number : signals) {
    struct sigaction action = {};
    action.sa_handler = handler;
    struct sigaction previous = {};
    sigaction(signal_number, &action, &previous);
    // A signal ignored at startup (nohup, a background job's SIGINT) stays ignored.
    if (previous.sa_handler == SIG_IGN) sigaction(signal_number, &previous, nullptr);
  }
}

// ------------------------------------------------------------------------------ command line

namespace {

CLI::Option* AddNumberFlag(CLI::App& app, const std::string& name, uint64_t* value, bool* given,
                           const std::string& help, const CLI::Validator& units) {
  CLI::Option* option = app.add_option(name, *value, help);
  option->transform(units)->check(CLI::PositiveNumber);
  option->each([given](const std::string&) { *given = true; });
  return option;
}

}  // namespace

CLI::Option* AddCountFlag(CLI::App& app, const std::string& name, uint64_t* value, bool* given,
                          const std::string& help) {
  static const std::map<std::string, uint64_t> kDecimal = {
      {"k", 1000}, {"m", 1000 * 1000}, {"g", 1000 * 1000 * 1000}};
  return AddNumberFlag(
      app, name, value, given, help,
      CLI::AsNumberWithUnit(kDecimal, CLI::AsNumberWithUnit::CASE_INSENSITIVE, "COUNT"));
}

CLI::Option* AddSizeFlag(CLI::App& app, const std::string& name, uint64_t* value, bool* given,
                         const std::string& help) {
  return AddNumberFlag(app, name, value, given, help, CLI::AsSizeValue(/*kb_is_1000=*/false));
}

std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: %s (see --help)\n", app.get_name().c_str(), e.what());
    return 2;
  }
}

// ------------------------------------------------------------------------------- formatting

std::string Format(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}

std::string FormatNs(double ns, int ns_decimals, const char* nan_text) {
  if (std::isnan(ns)) return nan_text;
  if (ns < 1e3) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%.*f ns", ns_decimals, ns);
    return buffer;
  }
  if (ns < 1e6) return Format("%.2f us", ns / 1e3);
  if (ns < 1e9) return Format("%.2f ms", ns / 1e6);
  return Format("%.2f s", ns / 1e9);
}

std::string FormatKiB(double kib) {
  if (std::isnan(kib)) return "-";
  if (kib < 10 * 1024) return Format("%.0f KiB", kib);
  return Format("%.1f MiB", kib / 1024);
}

std::string FormatFigure(const Figure& f, const std::string& unit) {
  if (!f.ok()) return f.na.empty() ? "n/a" : "n/a: " + f.na;
  if (unit == "ns") return FormatNs(f.value, 0, "n/a");
  if (unit == "KiB") return FormatKiB(f.value);
  if (f.value >= 1e6) return Format("%.2f M", f.value / 1e6) + unit;
  if (f.value >= 1e3) return Format("%.1f k", f.value / 1e3) + unit;
  return Format("%.0f ", f.value) + unit;
}

nlohmann::json FigureJson(const Figure& f) {
  if (!f.ok()) return {{"value", nullptr}, {"na", f.na.empty() ? "n/a" : f.na}};
  return {{"value", f.value}};
}

bool FigureJsonOk(const nlohmann::json& f, bool zero_ok) {
  if (f.contains("na")) return f["na"].is_string() && !f["na"].get<std::string>().empty();
  if (!f.contains("value") || !f["value"].is_number()) return false;
  const double value = f["value"].get<double>();
  return zero_ok ? value >= 0 : value > 0;
}

}  // namespace shmdict::bench
