// Hash64: the one 64-bit hash of shmdict, for snapshot buckets, the process-local overlay and
// record checksums. Not cryptographic: it detects torn and corrupted bytes, not tampering.
// Its output is part of the shared layout (snapshot buckets): changing it bumps kLayoutVersion.
#ifndef SHMDICT_CORE_HASH_H_
#define SHMDICT_CORE_HASH_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shmdict::internal {

uint64_t Hash64(const void* data, size_t bytes, uint64_t seed = 0);

inline uint64_t Hash64(std::string_view s) { return Hash64(s.data(), s.size()); }

// A key with its Hash64 computed once, so a read that misses the overlay does not hash the key
// again for the snapshot index.
struct HashedKey {
  std::string_view key;
  uint64_t hash;
  friend bool operator==(const HashedKey& a, std::string_view b) { return a.key == b; }
};

// Transparent hasher: std::unordered_map<std::string, ...> can be probed with a string_view or
// a HashedKey (whose hash is reused) without building a std::string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return Hash64(s); }
  size_t operator()(const HashedKey& k) const { return k.hash; }
};

// Equality for the same heterogeneous lookups.
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  bool operator()(const HashedKey& a, std::string_view b) const { return a.key == b; }
  bool operator()(std::string_view a, const HashedKey& b) const { return a == b.key; }
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_HASH_H_
