// Helpers that shmdict_bench and shmdict_peers share, so that both programs take their workload
// order, their memory readings, their /dev/shm cleanup, their flags and their units the same way.
//
// Thread-safety: the functions keep no state between calls and may run on any thread, except
// InstallFatalSignalHandler (main thread, before others start). SweepShmEntries and
// RemoveDirectoryAt are also async-signal-safe: fatal-signal handlers call them.
//
// Errors: nothing here throws. Failures are return values, as each function says; only ScanFlags
// and RunReportingErrors print (to stderr).
#ifndef SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_
#define SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmdict::bench {

// ------------------------------------------------------------------------------ the workload

// The access order of a workload of n keys: the order every run visits them in, and where the
// 90/10 read/write mix writes.
struct AccessOrder {
  std::vector<uint32_t> order;        // a permutation of [0, n)
  std::vector<uint8_t> mix_is_write;  // parallel to order: 1 at the ~10% write positions
};

// Deterministic for n (n < 2^32): a Fisher-Yates shuffle driven by splitmix64 with a fixed seed,
// then one draw per position for the mix. The same on every run, in every process and in both
// programs; manager_peer.py reads it from a file instead of computing it.
AccessOrder MakeAccessOrder(uint64_t n);

// ----------------------------------------------------------------------------------- memory

// Fields of /proc/<pid>/smaps_rollup (pid 0: this process), in kB; empty if unreadable. Read with
// plain syscalls into a stack buffer so that taking the measurement does not itself grow the heap
// it measures.
std::map<std::string, int64_t> ReadSmapsRollup(pid_t pid = 0);

// ---------------------------------------------------------------------------------- cleanup

// A name prefix in fixed storage, so that a signal handler may read it.
struct ShmPrefix {
  char text[80] = {};
  size_t length = 0;  // 0: matches nothing
};

// Sets *prefix to `text` (cut to fit). Not async-signal-safe; call it before installing handlers.
void SetShmPrefix(ShmPrefix* prefix, std::string_view text);

// Removes every /dev/shm entry whose name starts with one of prefixes[0..count) and returns how
// many it removed. A directory is removed with its contents (RemoveDirectoryAt) when
// remove_directories is set, else left alone. Returns 0 without looking when prefixes[0] is empty
// (an empty prefix would match everything). Repeats while it finds something, since unlinking
// during a directory scan may make the scan skip entries. Async-signal-safe: open, getdents64,
// unlinkat and close on stack buffers only.
int SweepShmEntries(const ShmPrefix* prefixes, size_t count, bool remove_directories);

// Removes directory `name` (relative to dirfd) with its contents, up to `depth` levels of
// subdirectories (3: enough for Python's manager socket in TMPDIR/pymp-*/); quiet about anything
// it cannot remove. Async-signal-safe: fixed buffers on the stack, no allocation.
void RemoveDirectoryAt(int dirfd, const char* name, int depth = 3);

// Installs `handler` for each of `signals`, except a signal ignored at startup (nohup, a
// background job's SIGINT), which stays ignored. Call from the main thread before starting others.
void InstallFatalSignalHandler(void (*handler)(int), std::initializer_list<int> signals);

// ------------------------------------------------------------------------------ command line

// A number's unit suffix and what it multiplies by.
struct Unit {
  std::string_view suffix;
  uint64_t factor;
};
// shmdict_bench's sizes: "64K" is 65536.
inline constexpr Unit kBinaryUnits[] = {{"", 1},        {"K", 1 << 10}, {"k", 1 << 10},
                                        {"M", 1 << 20}, {"m", 1 << 20}, {"G", 1 << 30},
                                        {"g", 1 << 30}};
// shmdict_peers' counts: "100k" is 100000.
inline constexpr Unit kDecimalUnits[] = {
    {"", 1}, {"k", 1000}, {"K", 1000}, {"m", 1000 * 1000}, {"M", 1000 * 1000}};

// Decimal digits followed by one of `units`' suffixes: the value times the unit's factor.
// nullopt when the text does not start with a digit, the suffix is not in `units`, or the digits
// overflow. The product is not checked for overflow.
std::optional<uint64_t> ParseNumber(std::string_view text, std::span<const Unit> units);

// The flags a program knows. Each argument is matched, in order, against `switches` ("--quick"),
// then "--help"/"-h", then (when a value follows) `values` ("--out DIR") and `numbers` ("--keys
// N": a number > 0 in `units`).
struct FlagTable {
  std::vector<std::pair<std::string_view, std::function<void()>>> switches;
  std::vector<std::pair<std::string_view, std::function<void(const char* value)>>> values;
  std::vector<std::string_view> numbers;
  std::span<const Unit> units;
};

// Walks argv[1..argc), calling the table's functions, and returns the numeric flags given (the
// last value of a repeated one wins). nullopt for --help/-h, and, after printing "bad value for
// FLAG: 'VALUE'" or "unknown or incomplete flag 'ARG'" to stderr, at the first bad argument.
std::optional<std::map<std::string, uint64_t>> ScanFlags(int argc, char** argv,
                                                         const FlagTable& table);

// Sets *field to numbers[flag] * scale (cast to the field's type) if the flag was given; leaves
// it unchanged otherwise.
template <typename T>
void TakeNumber(const std::map<std::string, uint64_t>& numbers, const char* flag, T* field,
                uint64_t scale = 1) {
  if (auto it = numbers.find(flag); it != numbers.end()) {
    *field = static_cast<T>(it->second * scale);
  }
}

// The end of a benchmark's main: returns body()'s exit code, or 1 after printing
// "<program>: <what()>" to stderr when body throws an Error (the program's failure type, which
// unwinds to here so that every handle is closed before the program's final sweep). Other
// exceptions pass through.
template <typename Error, typename Body>
int RunReportingErrors(const char* program, Body&& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

// ------------------------------------------------------------------------------- formatting

// printf of one double with `format` (at most 63 characters of output).
std::string Format(const char* format, double value);

// "812 ns" (ns_decimals decimals below 1 us), "2.10 us", "12.30 ms", "1.50 s"; nan_text for NaN.
// ASCII units keep a terminal's columns aligned.
std::string FormatNs(double ns, int ns_decimals, const char* nan_text);

// "812 KiB" below 10 MiB, else "12.3 MiB"; "-" for NaN.
std::string FormatKiB(double kib);

}  // namespace shmdict::bench

#endif  // SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_
