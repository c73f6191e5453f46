#include "value_codec.h"

#include <cstdint>

namespace shmdict::replica {
namespace {

// Tags that may carry a trailer: the built-in ones except str (stored bare) and those a replica
// refuses, plus the applications' tags. Tags 9..127 are not assigned: a trailer naming one is
// not ours.
bool IsTrailerTag(ValueType type, bool allow_pickle) {
  const auto tag = static_cast<uint8_t>(type);
  if (tag >= static_cast<uint8_t>(ValueType::kUserFirst)) return true;
  switch (type) {
    case ValueType::kBytes:
    case ValueType::kInt64:
    case ValueType::kDouble:
    case ValueType::kBool:
    case ValueType::kJson:
    case ValueType::kNull:
      return true;
    case ValueType::kPickle:
      return allow_pickle;
    default:  // kString is stored bare; kNestedDict never leaves its host
      return false;
  }
}

}  // namespace

Result<std::string> EncodeValue(const Value& value, bool allow_pickle) {
  if (value.type() == ValueType::kNestedDict) {
    return Status(StatusCode::kInvalidArgument,
                  "a nested-dict value cannot be stored in a replica: its child dict lives in "
                  "one host's shared memory");
  }
  if (value.type() == ValueType::kPickle && !allow_pickle) {
    return Status(StatusCode::kPermissionDenied,
                  "the replica refuses pickled values (start it with --allow-pickle: any writer "
                  "can then run code in every Python reader)");
  }
  Status valid = ValidateEncoding(value.view());
  if (!valid.ok()) return valid;
  if (value.type() == ValueType::kString) return value.data();
  std::string out;
  out.reserve(value.data().size() + kTrailerBytes);
  out.append(value.data());
  out.append(kTrailerMagic);
  out.push_back(static_cast<char>(value.type()));
  return out;
}

Value DecodeValue(std::string_view etcd_value, bool allow_pickle) {
  if (etcd_value.size() >= kTrailerBytes) {
    const std::string_view trailer = etcd_value.substr(etcd_value.size() - kTrailerBytes);
    const auto type = static_cast<ValueType>(static_cast<uint8_t>(trailer[3]));
    if (trailer.starts_with(kTrailerMagic) && IsTrailerTag(type, allow_pickle)) {
      const ValueView typed{type, etcd_value.substr(0, etcd_value.size() - kTrailerBytes)};
      if (ValidateEncoding(typed).ok()) return Value(typed);
    }
  }
  if (ValidateEncoding(ValueView{ValueType::kString, etcd_value}).ok()) {
    return Value::Str(etcd_value);
  }
  return Value::Bytes(etcd_value);
}

}  // namespace shmdict::replica
