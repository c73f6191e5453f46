#include "workload.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

#include "harness.h"

namespace peers {
namespace {

struct Rng {  // splitmix64: tiny, deterministic on every platform, unlike std distributions
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t Below(uint32_t bound) {
    return static_cast<uint32_t>(((Next() >> 32) * uint64_t{bound}) >> 32);
  }
};

}  // namespace

std::string KeyOf(uint64_t i) { return "key:" + std::to_string(i); }

std::string ValueOf(uint64_t i, int variant, size_t bytes) {
  char prefix[40];
  std::snprintf(prefix, sizeof prefix, "v%d:%013" PRIu64 ":", variant % 10, i);
  std::string value(prefix);
  for (size_t j = 0; value.size() < bytes; ++j) {
    value += static_cast<char>('a' + (i + j) % 26);
  }
  value.resize(bytes);
  return value;
}

Workload MakeWorkload(uint64_t n, size_t value_bytes, int variants) {
  if (value_bytes < kMinValueBytes) Fail("value size below " + std::to_string(kMinValueBytes));
  Workload w;
  w.n = n;
  w.value_bytes = value_bytes;
  for (uint64_t i = 0; i < n; ++i) {
    w.keys.Add(KeyOf(i));
    for (int variant = 0; variant < variants; ++variant) {
      w.values[variant].Add(ValueOf(i, variant, value_bytes));
    }
    w.order.push_back(static_cast<uint32_t>(i));
  }
  Rng rng{0x5348'4D44'4943'5431ull};  // shmdict_bench's seed: its order, for the same n
  for (uint64_t i = n; i > 1; --i) {  // Fisher-Yates
    std::swap(w.order[i - 1], w.order[rng.Below(static_cast<uint32_t>(i))]);
  }
  for (uint64_t i = 0; i < n; ++i) w.mix_is_write.push_back(rng.Below(10) == 0 ? 1 : 0);
  return w;
}

void WriteOrderFile(const Workload& w, const std::string& path) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) Fail("cannot write " + path + ": " + std::strerror(errno));
  bool ok = true;
  for (uint32_t i : w.order) {
    const unsigned char le[4] = {static_cast<unsigned char>(i), static_cast<unsigned char>(i >> 8),
                                 static_cast<unsigned char>(i >> 16),
                                 static_cast<unsigned char>(i >> 24)};
    ok = ok && std::fwrite(le, 1, 4, file) == 4;
  }
  ok = ok &&
       std::fwrite(w.mix_is_write.data(), 1, w.mix_is_write.size(), file) == w.mix_is_write.size();
  ok = std::fclose(file) == 0 && ok;
  if (!ok) Fail("cannot write " + path);
}

}  // namespace peers
