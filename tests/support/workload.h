// Workload: the keys, values and operation sequences that the tests and the worker program agree
// on, so that a process can check what another process wrote without any other channel.
//
// Header-only on purpose: tests/workers/shmdict_worker.cc links only shmdict::core (not gtest), and
// both sides must compute exactly the same bytes. Everything here is a pure function of its
// arguments.
//
// Thread-safety: stateless functions; safe from any thread.
#ifndef SHMDICT_TESTS_SUPPORT_WORKLOAD_H_
#define SHMDICT_TESTS_SUPPORT_WORKLOAD_H_

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shmdict/dict.h"
#include "shmdict/value.h"

namespace shmdict::testing {

// The writers' keys: "PREFIX.INDEX". A prefix may contain dots; the index follows the last one.
inline std::string KeyFor(std::string_view prefix, int64_t index) {
  std::string key(prefix);
  key += '.';
  key += std::to_string(index);
  return key;
}

struct ParsedKey {
  std::string_view prefix;
  int64_t index = 0;
};

// Splits "PREFIX.INDEX"; nullopt when the key does not have that shape.
inline std::optional<ParsedKey> ParseKey(std::string_view key) {
  const size_t dot = key.rfind('.');
  if (dot == std::string_view::npos || dot + 1 == key.size()) return std::nullopt;
  int64_t index = 0;
  const char* first = key.data() + dot + 1;
  const char* last = key.data() + key.size();
  auto [end, ec] = std::from_chars(first, last, index);
  if (ec != std::errc() || end != last || index < 0) return std::nullopt;
  return ParsedKey{key.substr(0, dot), index};
}

// The value a writer stores under KeyFor(prefix, index). value_bytes == 0: Value::Int(index).
// Otherwise kBytes of exactly max(value_bytes, digits + 1) bytes: "INDEX:" then a filler letter
// that depends on the index, so a value copied from another key or torn half-way is detected.
inline Value ValueFor(int64_t index, size_t value_bytes) {
  if (value_bytes == 0) return Value::Int(index);
  std::string data = std::to_string(index) + ":";
  const char filler = static_cast<char>('a' + index % 26);
  if (data.size() < value_bytes) data.append(value_bytes - data.size(), filler);
  return Value(ValueType::kBytes, std::move(data));
}

// True if `value` is what ValueFor(index, n) produced for some n.
inline bool ValueMatchesIndex(ValueView value, int64_t index) {
  if (value.type == ValueType::kInt64) {
    return value.data.size() == 8 && Value(value).AsInt() == index;
  }
  if (value.type != ValueType::kBytes) return false;
  const std::string head = std::to_string(index) + ":";
  if (value.data.substr(0, head.size()) != head) return false;
  const char filler = static_cast<char>('a' + index % 26);
  for (size_t i = head.size(); i < value.data.size(); ++i) {
    if (value.data[i] != filler) return false;
  }
  return true;
}

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// `bytes` pseudo-random bytes determined by `seed` (for large values).
inline std::string PatternBytes(size_t bytes, uint64_t seed) {
  std::string out(bytes, '\0');
  uint64_t state = seed;
  for (size_t i = 0; i < bytes; i += 8) {
    state = SplitMix64(state);
    for (size_t j = 0; j < 8 && i + j < bytes; ++j) {
      out[i + j] = static_cast<char>(state >> (8 * j));
    }
  }
  return out;
}

inline uint64_t Fnv1a64(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// One line per entry, comparable across processes: "item KEY TYPE BYTES FNV64HEX".
inline std::string DigestLine(std::string_view key, ValueView value) {
  char tail[64];
  std::snprintf(tail, sizeof(tail), " %d %zu %016llx", static_cast<int>(value.type),
                value.data.size(), static_cast<unsigned long long>(Fnv1a64(value.data)));
  std::string line = "item ";
  line += key;
  line += tail;
  return line;
}

inline std::vector<std::string> DigestLines(const std::map<std::string, Value>& items) {
  std::vector<std::string> lines;
  lines.reserve(items.size());
  for (const auto& [key, value] : items) lines.push_back(DigestLine(key, value.view()));
  return lines;
}

// The churn workload: a deterministic mix of inserts, overwrites and erases over a few hundred
// keys with values of every built-in scalar type and sizes up to ~1.5 KB, so that a small log
// compacts often. Step `step` of the sequence seeded by `seed`:
struct ChurnOp {
  bool erase = false;
  std::string key;
  Value value;
};

inline ChurnOp ChurnStep(uint64_t seed, uint64_t step) {
  const uint64_t r = SplitMix64(seed * 0x2545F4914F6CDD1Dull + step);
  ChurnOp op;
  op.key = "k" + std::to_string(r % 400);
  op.erase = (r >> 16) % 8 == 0;
  if (op.erase) return op;
  const size_t bytes = (r >> 24) % 1500;
  switch ((r >> 40) % 4) {
    case 0:
      op.value = Value::Int(static_cast<int64_t>(r));
      break;
    case 1:
      op.value = Value::Str(std::string(bytes, static_cast<char>('A' + step % 26)));
      break;
    case 2:
      op.value = Value::Double(static_cast<double>(r % 100000) / 7.0);
      break;
    default:
      op.value = Value::Bytes(PatternBytes(bytes, r));
      break;
  }
  return op;
}

// The state after applying steps [0, steps) of ChurnStep(seed, ...) to an empty dict.
inline std::map<std::string, Value> ChurnState(uint64_t seed, uint64_t steps) {
  std::map<std::string, Value> state;
  for (uint64_t i = 0; i < steps; ++i) {
    ChurnOp op = ChurnStep(seed, i);
    if (op.erase) {
      state.erase(op.key);
    } else {
      state[op.key] = std::move(op.value);
    }
  }
  return state;
}

}  // namespace shmdict::testing

#endif  // SHMDICT_TESTS_SUPPORT_WORKLOAD_H_
