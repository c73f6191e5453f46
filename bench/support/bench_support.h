// Helpers that shmdict_bench and shmdict_peers share, so that both programs take their workload
// order and write their units the same way.
//
// Thread-safety: the functions keep no state between calls and may run on any thread.
//
// Errors: nothing here throws; failures are return values, as each function says.
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
