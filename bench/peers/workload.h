// The workload every system gets: keys "key:<i>", values of exactly `value_bytes` bytes that
// encode their key's index and a variant (so an overwrite changes the bytes, and a value read
// under the wrong key, a stale variant or a torn copy never compares equal), one deterministic
// shuffled access order, and the mix's write positions. manager_peer.py builds the same keys and
// values (ValueOf's formula) and reads the order from the file WriteOrderFile writes.
//
// Thread-safety: immutable once built. Lifetime: string_views point into the Workload.
#ifndef SHMDICT_BENCH_PEERS_WORKLOAD_H_
#define SHMDICT_BENCH_PEERS_WORKLOAD_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace peers {

// Values encode "v<variant>:<index, 13 digits>:" before their filler, so they need this much.
inline constexpr size_t kMinValueBytes = 16;

std::string KeyOf(uint64_t i);
// "v<variant>:<i:013>:" followed by letters starting at 'a' + i % 26, cut to exactly `bytes`.
std::string ValueOf(uint64_t i, int variant, size_t bytes);

// Many short strings in one buffer: a 1,000,000-key workload costs its bytes, not a million heap
// blocks.
class StringTable {
 public:
  void Add(std::string_view s) {
    bytes_.append(s);
    ends_.push_back(bytes_.size());
  }
  std::string_view operator[](size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(bytes_).substr(begin, ends_[i] - begin);
  }
  size_t size() const { return ends_.size(); }
  size_t bytes() const { return bytes_.size(); }

 private:
  std::string bytes_;
  std::vector<size_t> ends_;
};

struct Workload {
  uint64_t n = 0;
  size_t value_bytes = 0;
  StringTable keys;
  StringTable values[2];              // values[variant][i]; [1] empty when built with one variant
  std::vector<uint32_t> order;        // a permutation of [0, n): the access order of every run
  std::vector<uint8_t> mix_is_write;  // parallel to order: 1 at the ~10% write positions of the mix

  std::string_view key(uint32_t i) const { return keys[i]; }
  std::string_view value(uint32_t i, int variant) const { return values[variant][i]; }
  // Bytes of keys plus values (one variant): the payload every store holds.
  uint64_t PayloadBytes() const { return keys.bytes() + values[0].bytes(); }
};

// Deterministic for (n, value_bytes): the same on every run and in every process.
Workload MakeWorkload(uint64_t n, size_t value_bytes, int variants);

// order as n little-endian uint32, then mix_is_write as n bytes.
void WriteOrderFile(const Workload& w, const std::string& path);

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_WORKLOAD_H_
