#include "workload.h"

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <utility>

#include "harness.h"
#include "support/bench_support.h"

namespace peers {

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
  }
  // The same order as shmdict_bench's, for the same n.
  shmdict::bench::AccessOrder access = shmdict::bench::MakeAccessOrder(n);
  w.order = std::move(access.order);
  w.mix_is_write = std::move(access.mix_is_write);
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
