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

// Transparent hasher so std::unordered_map<std::string, ...> can be probed with string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return Hash64(s); }
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_HASH_H_
