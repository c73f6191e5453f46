#include "shmdict/value.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

namespace shmdict {
namespace {

template <typename T>
std::string EncodeFixed(T v) {
  static_assert(std::endian::native == std::endian::little, "encodings are little-endian");
  std::string out(sizeof(T), '\0');
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}

template <typename T>
std::optional<T> DecodeFixed(const std::string& data) {
  if (data.size() != sizeof(T)) return std::nullopt;
  T v;
  std::memcpy(&v, data.data(), sizeof(T));
  return v;
}

bool IsPrintableText(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 && c != '\n' && c != '\t' && c != '\r') return false;
    if (c == 0x7f) return false;
  }
  return true;
}

}  // namespace

std::string TypeName(ValueType type) {
  switch (type) {
    case ValueType::kBytes:
      return "bytes";
    case ValueType::kString:
      return "str";
    case ValueType::kInt64:
      return "int";
    case ValueType::kDouble:
      return "float";
    case ValueType::kBool:
      return "bool";
    case ValueType::kJson:
      return "json";
    case ValueType::kNestedDict:
      return "dict";
    case ValueType::kNull:
      return "null";
    case ValueType::kPickle:
      return "pickle";
    default:
      return "user:" + std::to_string(static_cast<int>(type));
  }
}

std::optional<ValueType> ParseTypeName(std::string_view name) {
  for (ValueType t : {ValueType::kBytes, ValueType::kString, ValueType::kInt64, ValueType::kDouble,
                      ValueType::kBool, ValueType::kJson, ValueType::kNestedDict, ValueType::kNull,
                      ValueType::kPickle}) {
    if (TypeName(t) == name) return t;
  }
  return std::nullopt;
}

Value Value::Int(int64_t v) { return Value(ValueType::kInt64, EncodeFixed(v)); }
Value Value::Double(double v) { return Value(ValueType::kDouble, EncodeFixed(v)); }
Value Value::Bool(bool v) { return Value(ValueType::kBool, std::string(1, v ? '\1' : '\0')); }

std::optional<int64_t> Value::AsInt() const {
  if (type_ != ValueType::kInt64) return std::nullopt;
  return DecodeFixed<int64_t>(data_);
}

std::optional<double> Value::AsDouble() const {
  if (type_ != ValueType::kDouble) return std::nullopt;
  return DecodeFixed<double>(data_);
}

std::optional<bool> Value::AsBool() const {
  if (type_ != ValueType::kBool || data_.size() != 1) return std::nullopt;
  return data_[0] != 0;
}

std::optional<std::string_view> Value::AsText() const {
  if (type_ != ValueType::kString && type_ != ValueType::kJson && type_ != ValueType::kNestedDict) {
    return std::nullopt;
  }
  return std::string_view(data_);
}

std::string Value::ToText() const {
  if (auto i = AsInt()) return std::to_string(*i);
  if (auto d = AsDouble()) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), *d);
    return ec == std::errc() ? std::string(buf, end) : "nan";
  }
  if (auto b = AsBool()) return *b ? "true" : "false";
  if (auto t = AsText()) return std::string(*t);
  if (type_ == ValueType::kNull) return "null";
  if (IsPrintableText(data_)) return data_;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "0x";
  for (unsigned char c : data_) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::optional<Value> ParseValue(ValueType type, std::string_view text) {
  switch (type) {
    case ValueType::kInt64: {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
        return std::nullopt;
      }
      return Value::Int(v);
    }
    case ValueType::kDouble: {
      double v = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
        return std::nullopt;
      }
      return Value::Double(v);
    }
    case ValueType::kBool:
      if (text == "true" || text == "1") return Value::Bool(true);
      if (text == "false" || text == "0") return Value::Bool(false);
      return std::nullopt;
    case ValueType::kNull:
      if (text == "null" || text.empty()) return Value::Null();
      return std::nullopt;
    default:
      return Value(type, std::string(text));
  }
}

}  // namespace shmdict
