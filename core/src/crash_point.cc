#include "crash_point.h"

#if SHMDICT_CRASH_POINTS

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace shmdict::internal {
namespace {

struct Arming {
  bool armed = false;
  size_t index = 0;
  uint64_t nth = 1;
  int announce_fd = STDERR_FILENO;
};

[[noreturn]] void Misconfigured(const std::string& why) {
  const std::string line = "shmdict: SHMDICT_CRASH_AT: " + why + "\n";
  [[maybe_unused]] const ssize_t n = write(STDERR_FILENO, line.data(), line.size());
  std::abort();
}

Arming ReadArming() {
  Arming a;
  const char* at = std::getenv("SHMDICT_CRASH_AT");
  if (at == nullptr || *at == '\0') return a;
  std::string_view spec = at;
  std::string_view name = spec.substr(0, spec.find(':'));
  if (name.size() < spec.size()) {
    const std::string nth(spec.substr(name.size() + 1));
    char* end = nullptr;
    a.nth = std::strtoull(nth.c_str(), &end, 10);
    if (nth.empty() || *end != '\0' || a.nth == 0) Misconfigured("bad count in '" + nth + "'");
  }
  bool known = false;
  for (size_t i = 0; i < kCrashPointNames.size() && !known; ++i) {
    known = kCrashPointNames[i] == name;
    if (known) a.index = i;
  }
  if (!known) Misconfigured("no crash point is named '" + std::string(name) + "'");
  if (const char* fd = std::getenv("SHMDICT_CRASH_ANNOUNCE_FD"); fd != nullptr) {
    a.announce_fd = std::atoi(fd);
  }
  a.armed = true;
  return a;
}

const Arming arming = ReadArming();
std::atomic<uint64_t> hits{0};

}  // namespace

bool crash_point_armed = arming.armed;

void ReachCrashPoint(size_t index) {
  if (index != arming.index) return;
  const uint64_t hit = hits.fetch_add(1, std::memory_order_relaxed) + 1;
  if (hit != arming.nth) return;
  // One write: a line shorter than PIPE_BUF never interleaves with another thread's line.
  const std::string line =
      "crash-point " + std::string(kCrashPointNames[index]) + " " + std::to_string(hit) + "\n";
  [[maybe_unused]] const ssize_t n = write(arming.announce_fd, line.data(), line.size());
  kill(getpid(), SIGKILL);
  for (;;) pause();  // SIGKILL cannot be blocked: never gets here
}

}  // namespace shmdict::internal

#endif  // SHMDICT_CRASH_POINTS
