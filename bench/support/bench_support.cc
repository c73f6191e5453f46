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

}  // namespace shmdict::bench
