#include "shmdict/dict_status.h"

#include <array>
#include <charconv>
#include <cstdlib>
#include <type_traits>

namespace shmdict {
namespace {

template <typename T>
struct Unwrapped {
  using type = T;
};
template <typename T>
struct Unwrapped<std::optional<T>> {
  using type = T;
};

template <typename T>
constexpr bool kIsOptional = !std::is_same_v<typename Unwrapped<T>::type, T>;

template <typename T>
StatusFieldValue ToFieldValue(const T& value) {
  if constexpr (std::is_same_v<T, std::string>) {
    return value;
  } else if constexpr (std::is_same_v<T, bool>) {
    return value;
  } else {
    static_assert(std::is_unsigned_v<T>, "status fields are text, flags or unsigned numbers");
    return static_cast<uint64_t>(value);
  }
}

// A value of another kind than the field's is a caller's bug (a wire mapping or a renderer out of
// step with the table), not data: storing a default would turn it into a "known zero".
template <typename T>
T FromFieldValue(const StatusFieldValue& value) {
  using Alternative =
      std::conditional_t<std::is_same_v<T, std::string> || std::is_same_v<T, bool>, T, uint64_t>;
  const Alternative* held = std::get_if<Alternative>(&value);
  if (held == nullptr) std::abort();
  return static_cast<T>(*held);
}

// One table row from a member pointer: the getter and setter are written once for every field.
template <auto Member>
constexpr StatusField Field(std::string_view name, std::string_view wire_name,
                            StatusFieldKind kind) {
  using Stored = std::remove_cvref_t<decltype(std::declval<DictStatus>().*Member)>;
  using Plain = typename Unwrapped<Stored>::type;
  return StatusField{
      .name = name,
      .wire_name = wire_name,
      .kind = kind,
      .get = [](const DictStatus& status) -> std::optional<StatusFieldValue> {
        const Stored& stored = status.*Member;
        if constexpr (kIsOptional<Stored>) {
          if (!stored) return std::nullopt;
          return ToFieldValue<Plain>(*stored);
        } else {
          return ToFieldValue<Plain>(stored);
        }
      },
      .set = [](DictStatus& status,
                const StatusFieldValue& value) { status.*Member = FromFieldValue<Plain>(value); },
  };
}

using K = StatusFieldKind;
using S = DictStatus;

constexpr std::array kFields = {
    Field<&S::name>("name", "dict", K::kText),
    Field<&S::layout_version>("layout_version", "layout_version", K::kCount),
    Field<&S::revision>("revision", "revision", K::kCount),
    Field<&S::entries>("entries", "entries", K::kCount),
    Field<&S::log_capacity>("log_capacity", "log_capacity", K::kCount),
    Field<&S::log_used>("log_used", "log_used", K::kCount),
    Field<&S::snapshot_generation>("snapshot_generation", "snapshot_generation", K::kCount),
    Field<&S::snapshot_revision>("snapshot_revision", "snapshot_revision", K::kCount),
    Field<&S::snapshots_built>("snapshots_built", "snapshots_built", K::kCount),
    Field<&S::lock_held>("lock_held", "lock_held", K::kFlag),
    Field<&S::lock_holder_pid>("lock_holder_pid", "lock_holder_pid", K::kCount),
    Field<&S::lock_holder_pid_namespace>("lock_holder_pid_namespace", "lock_holder_pid_namespace",
                                         K::kCount),
    // About the caller's pid namespace: a remote caller's answer would be the bridge's.
    Field<&S::lock_holder_in_this_pid_namespace>("lock_holder_in_this_pid_namespace", "", K::kFlag),
    Field<&S::lock_recoveries>("lock_recoveries", "lock_recoveries", K::kCount),
    Field<&S::creator_pid>("creator_pid", "creator_pid", K::kCount),
    Field<&S::creator_alive>("creator_alive", "creator_alive", K::kFlag),
    Field<&S::attached>("attached", "attached", K::kFlag),
    Field<&S::segment_bytes>("segment_bytes", "segment_bytes", K::kCount),
    Field<&S::mode>("mode", "mode", K::kFileMode),
    Field<&S::replica_of>("replica_of", "replica_of", K::kText),
    Field<&S::replica_listen>("replica_listen", "replica_listen", K::kText),
    Field<&S::upstream_revision>("upstream_revision", "upstream_revision", K::kCount),
    Field<&S::upstream_connected>("upstream_connected", "upstream_connected", K::kFlag),
    Field<&S::last_upstream_contact>("last_upstream_contact", "last_upstream_contact", K::kCount),
    // The transport's own fact, set by the client that asked the bridge.
    Field<&S::bridge>("bridge", "", K::kText),
};

// A member added to DictStatus needs a row above (or it is never rendered nor sent): this size
// changes with it. x86-64 / aarch64 LP64 sizes; adjust with the row.
static_assert(sizeof(void*) != 8 || sizeof(DictStatus) == 360,
              "DictStatus changed: add its field to kFields (and to StatusResponse), then "
              "update this size");
static_assert(kFields.size() == 25, "a row was added or removed: update the count");

}  // namespace

std::span<const StatusField> StatusFields() { return kFields; }

std::string OctalFileMode(uint64_t mode) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), mode, 8);
  std::string digits(buf, ec == std::errc() ? end : buf);
  return std::string(digits.size() < 4 ? 4 - digits.size() : 0, '0') + digits;
}

}  // namespace shmdict
