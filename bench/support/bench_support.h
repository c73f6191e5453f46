// Helpers that shmdict_bench and shmdict_peers share, so that both programs take their workload
// order, their memory readings, their /dev/shm cleanup, their flags and their units the same way.
//
// Thread-safety: the functions keep no state between calls and may run on any thread, except
// InstallFatalSignalHandler (main thread, before others start). SweepShmEntries and
// RemoveDirectoryAt are also async-signal-safe: fatal-signal handlers call them.
//
// Errors: nothing here throws. Failures are return values, as each function says; only
// ParseCommandLine and RunReportingErrors print (to stderr).
#ifndef SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_
#define SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_

#include <sys/types.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
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
// Both programs parse flags with CLI11, as the shmdict CLI does, and read numbers the same way:
// counts in decimal ("100k" is 100,000 keys), sizes in binary ("64K" is 65,536 bytes).
//
// Adds "--NAME N" for a count > 0 with an optional k/M/G suffix (1000s); *given reports whether
// it was on the command line, so that explicit flags can win over a preset such as --quick.
CLI::Option* AddCountFlag(CLI::App& app, const std::string& name, uint64_t* value, bool* given,
                          const std::string& help);
// Adds "--NAME BYTES" for a size > 0 with an optional K/M/G (KiB/MiB/GiB) suffix.
CLI::Option* AddSizeFlag(CLI::App& app, const std::string& name, uint64_t* value, bool* given,
                         const std::string& help);
// Parses argv. nullopt: go on; otherwise the exit code to return at once (0 after --help, 2 after
// printing the error and a hint to stderr).
std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv);
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

// ---------------------------------------------------------------------------- report figures
// The figures of the reports that compare a shmdict path with a peer (shmdict_bridge_bench,
// shmdict_replica_bench): Markdown cells, JSON, and the smoke test's check of that JSON.

// A value in its row's unit, or n/a with the reason.
struct Figure {
  double value = NAN;
  std::string na;  // non-empty: why there is no figure
  bool ok() const { return na.empty() && std::isfinite(value); }
};

inline Figure NotAvailable(std::string why) { return Figure{NAN, std::move(why)}; }

// "n/a: <why>" (or "n/a"); unit "ns": FormatNs; "KiB": FormatKiB; any other unit is a rate:
// "1.23 M<unit>", "45.6 k<unit>", "789 <unit>".
std::string FormatFigure(const Figure& f, const std::string& unit);

// {"value": v}, or {"value": null, "na": why} when there is no figure.
nlohmann::json FigureJson(const Figure& f);

// Whether `f` (a FigureJson) is a number > 0 (>= 0 with zero_ok) or an n/a with a reason.
bool FigureJsonOk(const nlohmann::json& f, bool zero_ok = false);

}  // namespace shmdict::bench

#endif  // SHMDICT_BENCH_SUPPORT_BENCH_SUPPORT_H_
