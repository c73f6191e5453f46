#include "hash.h"

#include <cstring>

namespace shmdict::internal {
namespace {

// 64x64->128 multiply folded to 64 bits (the "mum" mix of wyhash): one multiply per 8 bytes
// diffuses every input bit into every output bit.
inline uint64_t Mix(uint64_t a, uint64_t b) {
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

inline uint64_t Load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

constexpr uint64_t kP0 = 0xa0761d6478bd642full;
constexpr uint64_t kP1 = 0xe7037ed1a0b428dbull;
constexpr uint64_t kP2 = 0x8ebc6af09c88c6e3ull;
constexpr uint64_t kP3 = 0x589965cc75374cc3ull;

}  // namespace

uint64_t Hash64(const void* data, size_t bytes, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed ^ Mix(seed ^ kP0, bytes ^ kP1);
  while (bytes >= 16) {
    h = Mix(Load64(p) ^ kP1 ^ h, Load64(p + 8) ^ kP2);
    p += 16;
    bytes -= 16;
  }
  if (bytes >= 8) {
    h = Mix(Load64(p) ^ kP1 ^ h, kP3);
    p += 8;
    bytes -= 8;
  }
  if (bytes > 0) {
    uint64_t tail = 0;
    std::memcpy(&tail, p, bytes);
    h = Mix(tail ^ kP2 ^ h, kP3 ^ bytes);
  }
  return Mix(h ^ kP0, kP3);
}

}  // namespace shmdict::internal
