// The ops of a change record in the engine's terms (the public ChangeOp and ValueType, as Dict's
// write path plans them and LocalView and Watcher use them), and the one place they meet the
// record format's own codes (record_format.h). The mapping between ChangeOp and RecordOp is
// written once, in ToRecordOp and ToChangeOp, and checked to round-trip when this header
// compiles; a ChangeOp without a record code does not compile (-Wswitch, -Werror).
//
// Thread-safety: pure functions. OpRef views caller-owned bytes.
#ifndef SHMDICT_CORE_CHANGE_RECORD_H_
#define SHMDICT_CORE_CHANGE_RECORD_H_

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "record_format.h"
#include "shmdict/store.h"
#include "shmdict/value.h"

namespace shmdict::internal {

// One change of a record; views into caller-owned bytes.
struct OpRef {
  ChangeOp op = ChangeOp::kSet;
  ValueType type = ValueType::kBytes;
  std::string_view key;
  std::string_view value;
};

constexpr RecordOp ToRecordOp(ChangeOp op) {
  switch (op) {
    case ChangeOp::kSet:
      return RecordOp::kSet;
    case ChangeOp::kErase:
      return RecordOp::kErase;
    case ChangeOp::kClear:
      return RecordOp::kClear;
  }
  std::abort();  // Dict::Apply rejects any other value before it reaches a record
}

// nullopt for a record op that is not a change (kRetireChild).
constexpr std::optional<ChangeOp> ToChangeOp(RecordOp op) {
  switch (op) {
    case RecordOp::kSet:
      return ChangeOp::kSet;
    case RecordOp::kErase:
      return ChangeOp::kErase;
    case RecordOp::kClear:
      return ChangeOp::kClear;
    case RecordOp::kRetireChild:
      return std::nullopt;
  }
  return std::nullopt;
}

constexpr bool RoundTrips(ChangeOp op) { return ToChangeOp(ToRecordOp(op)) == op; }
static_assert(RoundTrips(ChangeOp::kSet) && RoundTrips(ChangeOp::kErase) &&
                  RoundTrips(ChangeOp::kClear),
              "every ChangeOp has its own record op code");
static_assert(!ToChangeOp(RecordOp::kRetireChild), "a retire marker is not a change");

// A value's type tag in records and snapshot entries is its ValueType's number: applications
// choose tags of their own in 128..255 (ValueType::kUserFirst), so the public numbers are the
// format. Pinned here, so that renumbering the enum fails to compile instead of changing bytes.
static_assert(static_cast<uint8_t>(ValueType::kBytes) == 0 &&
                  static_cast<uint8_t>(ValueType::kString) == 1 &&
                  static_cast<uint8_t>(ValueType::kInt64) == 2 &&
                  static_cast<uint8_t>(ValueType::kDouble) == 3 &&
                  static_cast<uint8_t>(ValueType::kBool) == 4 &&
                  static_cast<uint8_t>(ValueType::kJson) == 5 &&
                  static_cast<uint8_t>(ValueType::kNestedDict) == 6 &&
                  static_cast<uint8_t>(ValueType::kNull) == 7 &&
                  static_cast<uint8_t>(ValueType::kPickle) == 8 &&
                  static_cast<uint8_t>(ValueType::kUserFirst) == 128,
              "value type tags are layout (docs/LAYOUT.md): bump kLayoutVersion");

inline void AppendOp(const OpRef& op, std::string* body) {
  EncodeOp({ToRecordOp(op.op), static_cast<uint8_t>(op.type), op.key, op.value}, body);
}
// A retire marker for nested child `child` (record_format.h, RecordOp::kRetireChild).
inline void AppendRetireChild(std::string_view child, std::string* body) {
  EncodeOp({RecordOp::kRetireChild, static_cast<uint8_t>(ValueType::kNestedDict), {}, child}, body);
}

// Calls fn(const OpRef&) for each change of a change record's body (never for retire markers);
// false if the body is malformed.
template <typename Fn>
bool ForEachOp(std::string_view body, Fn&& fn) {
  return DecodeOps(body, [&](const RecordOpView& op) {
    if (const std::optional<ChangeOp> change = ToChangeOp(op.op)) {
      fn(OpRef{*change, static_cast<ValueType>(op.type), op.key, op.value});
    }
  });
}

// Calls fn(std::string_view child) for each retire marker of a body, up to a malformed op.
template <typename Fn>
void ForEachRetiredChild(std::string_view body, Fn&& fn) {
  DecodeOps(body, [&](const RecordOpView& op) {
    if (op.op == RecordOp::kRetireChild) fn(op.value);
  });
}

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_CHANGE_RECORD_H_
