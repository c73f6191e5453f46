#include "shmdict/value.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#include <nlohmann/json.hpp>

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

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool IsValidUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t length = 0;
    uint32_t min = 0;
    uint32_t code = 0;
    if ((c & 0xE0) == 0xC0) {
      length = 2, min = 0x80, code = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3, min = 0x800, code = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4, min = 0x10000, code = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<size_t>(end - p) < length) return false;
    for (size_t i = 1; i < length; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      code = (code << 6) | (p[i] & 0x3F);
    }
    if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    p += length;
  }
  return true;
}

constexpr size_t kMaxChildSuffixDigits = 32;

// Length of one "@c" + hex component at the start of `rest`, or 0.
size_t ChildComponentLength(std::string_view rest) {
  if (!rest.starts_with("@c")) return 0;
  size_t digits = 0;
  while (2 + digits < rest.size() && digits <= kMaxChildSuffixDigits) {
    const char c = rest[2 + digits];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) break;
    ++digits;
  }
  if (digits == 0 || digits > kMaxChildSuffixDigits) return 0;
  return 2 + digits;
}

}  // namespace

bool IsNestedChildName(std::string_view name) {
  const size_t at = name.find('@');
  if (at == 0 || at == std::string_view::npos) return false;
  std::string_view rest = name.substr(at);
  while (!rest.empty()) {
    const size_t length = ChildComponentLength(rest);
    if (length == 0) return false;
    rest.remove_prefix(length);
  }
  return true;
}

Status CheckNestedReference(std::string_view dict, std::string_view reference) {
  if (reference.size() > dict.size() && reference.starts_with(dict) &&
      ChildComponentLength(reference.substr(dict.size())) == reference.size() - dict.size()) {
    return Status::Ok();
  }
  return Status(StatusCode::kInvalidArgument, "a nested-dict value in dict " +
                                                  QuoteForMessage(dict) +
                                                  " must name one of its own children (" +
                                                  QuoteForMessage(std::string(dict) + "@c") +
                                                  " and hex digits); this one names another dict");
}

Status ValidateEncoding(ValueView value) {
  auto invalid = [&](const std::string& why) {
    return Status(StatusCode::kInvalidArgument,
                  "a value tagged " + TypeName(value.type) + " " + why);
  };
  const std::string_view data = value.data;
  switch (value.type) {
    case ValueType::kInt64:
    case ValueType::kDouble:
      if (data.size() != 8) {
        return invalid("must hold 8 bytes, not " + std::to_string(data.size()));
      }
      return Status::Ok();
    case ValueType::kBool:
      if (data.size() != 1 || (data[0] != 0 && data[0] != 1)) {
        return invalid("must hold one byte, 0 or 1");
      }
      return Status::Ok();
    case ValueType::kNull:
      if (!data.empty()) return invalid("must be empty");
      return Status::Ok();
    case ValueType::kString:
      if (!IsValidUtf8(data)) return invalid("must be UTF-8 text");
      return Status::Ok();
    case ValueType::kJson:
      if (!IsValidUtf8(data)) return invalid("must be UTF-8 text");
      if (!nlohmann::json::accept(data.begin(), data.end()))
        return invalid("must be one JSON text");
      return Status::Ok();
    case ValueType::kNestedDict:
      if (!IsNestedChildName(data)) {
        return invalid("must name a nested child dict (PARENT@c and hex digits)");
      }
      return Status::Ok();
    default:  // kBytes, kPickle and user tags are opaque
      return Status::Ok();
  }
}

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
