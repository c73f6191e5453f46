#include "value_json.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>

namespace shmdict::cli {
namespace {

Status Invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The "value" field of an entry, converted to `type` (or to the type its JSON type implies).
Result<Value> ValueFromJson(std::optional<ValueType> type, const Json& v) {
  if (!type) {
    switch (v.type()) {
      case Json::value_t::string:
        type = ValueType::kString;
        break;
      case Json::value_t::number_integer:
      case Json::value_t::number_unsigned:
        type = ValueType::kInt64;
        break;
      case Json::value_t::number_float:
        type = ValueType::kDouble;
        break;
      case Json::value_t::boolean:
        type = ValueType::kBool;
        break;
      case Json::value_t::object:
      case Json::value_t::array:
        type = ValueType::kJson;
        break;
      case Json::value_t::null:
        type = ValueType::kNull;
        break;
      default:
        return Invalid("a \"value\" of this JSON type needs a \"type\"");
    }
  }
  const std::string type_name = TypeName(*type);
  switch (*type) {
    case ValueType::kInt64:
      if (v.is_number_unsigned()) {
        if (v.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
          return Invalid("integer " + v.dump() + " does not fit in an int64");
        }
        return Value::Int(static_cast<int64_t>(v.get<uint64_t>()));
      }
      if (v.is_number_integer()) return Value::Int(v.get<int64_t>());
      break;
    case ValueType::kDouble:
      if (v.is_number()) return Value::Double(v.get<double>());
      break;
    case ValueType::kBool:
      if (v.is_boolean()) return Value::Bool(v.get<bool>());
      break;
    case ValueType::kJson:
      return Value::Json(v.dump());
    case ValueType::kNull:
      if (v.is_null()) return Value::Null();
      break;
    default:
      if (v.is_string()) return Value(*type, v.get<std::string>());
      return Invalid("type " + type_name + " needs a string \"value\"");
  }
  // int, float and bool also accept their text form, as `shmdict set --type` does.
  if (v.is_string()) {
    if (std::optional<Value> parsed = ParseValue(*type, v.get<std::string>())) return *parsed;
    return Invalid(v.dump() + " is not a valid " + type_name);
  }
  return Invalid(v.dump() + " is not a valid " + type_name);
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code_point;
    if ((lead & 0xE0) == 0xC0) {
      length = 2;
      code_point = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      code_point = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      code_point = lead & 0x07;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    if (code_point < kMinForLength[length] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::optional<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int high = HexDigit(hex[i]);
    const int low = HexDigit(hex[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    out += static_cast<char>(high << 4 | low);
  }
  return out;
}

Json DisplayText(std::string_view text) {
  if (IsValidUtf8(text)) return std::string(text);
  return "0x" + HexEncode(text);
}

Json DisplayJson(const Value& value) {
  switch (value.type()) {
    case ValueType::kInt64:
      if (std::optional<int64_t> i = value.AsInt()) return *i;
      break;
    case ValueType::kDouble:
      // JSON has no NaN or infinity; those fall through to their text ("nan", "inf").
      if (std::optional<double> d = value.AsDouble(); d && std::isfinite(*d)) return *d;
      break;
    case ValueType::kBool:
      if (std::optional<bool> b = value.AsBool()) return *b;
      break;
    case ValueType::kJson: {
      Json doc = Json::parse(value.data(), nullptr, /*allow_exceptions=*/false);
      if (!doc.is_discarded()) return doc;
      break;
    }
    case ValueType::kNull:
      if (value.data().empty()) return nullptr;
      break;
    case ValueType::kNestedDict: {
      Json ref = Json::object();
      ref["$dict"] = DisplayText(value.data());
      return ref;
    }
    default:
      return DisplayText(value.data());
  }
  return DisplayText(value.ToText());
}

std::optional<ValueType> ParseEntryType(std::string_view name) {
  if (std::optional<ValueType> type = ParseTypeName(name)) return type;
  constexpr std::string_view kUserPrefix = "user:";
  if (!name.starts_with(kUserPrefix)) return std::nullopt;
  std::string_view digits = name.substr(kUserPrefix.size());
  unsigned tag = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), tag);
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty() ||
      tag < static_cast<unsigned>(ValueType::kUserFirst) || tag > 255) {
    return std::nullopt;
  }
  return static_cast<ValueType>(tag);
}

void EncodeKey(std::string_view key, Json* out) {
  if (IsValidUtf8(key)) {
    (*out)["key"] = std::string(key);
  } else {
    (*out)["key_hex"] = HexEncode(key);
  }
}

void EncodeEntry(std::string_view key, const Value& value, Json* out) {
  EncodeKey(key, out);
  (*out)["type"] = TypeName(value.type());
  const std::string& data = value.data();
  switch (value.type()) {
    case ValueType::kInt64:
      if (std::optional<int64_t> i = value.AsInt()) {
        (*out)["value"] = *i;
        return;
      }
      break;
    case ValueType::kDouble:
      // nlohmann prints doubles with enough digits to parse back to the same bits.
      if (std::optional<double> d = value.AsDouble(); d && std::isfinite(*d)) {
        (*out)["value"] = *d;
        return;
      }
      break;
    case ValueType::kBool:
      if (std::optional<bool> b = value.AsBool()) {
        (*out)["value"] = *b;
        return;
      }
      break;
    case ValueType::kJson: {
      // Import stores an embedded document in compact form, so embedding is exact only for
      // text that already is in that form.
      Json doc = Json::parse(data, nullptr, /*allow_exceptions=*/false);
      if (!doc.is_discarded() && doc.dump() == data) {
        (*out)["value"] = std::move(doc);
        return;
      }
      break;
    }
    case ValueType::kNull:
      if (data.empty()) {
        (*out)["value"] = nullptr;
        return;
      }
      break;
    default:
      if (IsValidUtf8(data)) {
        (*out)["value"] = data;
        return;
      }
      break;
  }
  if (IsValidUtf8(data)) {
    (*out)["value_text"] = data;
  } else {
    (*out)["value_hex"] = HexEncode(data);
  }
}

Result<std::pair<std::string, Value>> DecodeEntry(const Json& entry) {
  if (!entry.is_object()) {
    return Invalid("expected a JSON object like {\"key\": \"k\", \"value\": 1}");
  }
  const auto key_it = entry.find("key");
  const auto key_hex_it = entry.find("key_hex");
  if ((key_it == entry.end()) == (key_hex_it == entry.end())) {
    return Invalid("needs exactly one of \"key\" and \"key_hex\"");
  }
  std::string key;
  if (key_it != entry.end()) {
    if (!key_it->is_string()) return Invalid("\"key\" must be a string");
    key = key_it->get<std::string>();
  } else {
    std::optional<std::string> decoded;
    if (key_hex_it->is_string()) decoded = HexDecode(key_hex_it->get<std::string>());
    if (!decoded) return Invalid("\"key_hex\" must be a string of hex digit pairs");
    key = std::move(*decoded);
  }

  std::optional<ValueType> type;
  if (const auto it = entry.find("type"); it != entry.end()) {
    if (it->is_string()) type = ParseEntryType(it->get<std::string>());
    if (!type) {
      return Invalid(
          "unknown \"type\" " + it->dump() +
          " (expected str, int, float, bool, json, bytes, dict, null, pickle or user:N)");
    }
  }

  const auto value_it = entry.find("value");
  const auto text_it = entry.find("value_text");
  const auto hex_it = entry.find("value_hex");
  const int value_fields =
      (value_it != entry.end()) + (text_it != entry.end()) + (hex_it != entry.end());
  if (value_fields != 1) {
    return Invalid("needs exactly one of \"value\", \"value_text\" and \"value_hex\"");
  }
  if (value_it != entry.end()) {
    Result<Value> value = ValueFromJson(type, *value_it);
    if (!value.ok()) return value.status();
    return std::pair{std::move(key), std::move(*value)};
  }
  if (text_it != entry.end()) {
    if (!text_it->is_string()) return Invalid("\"value_text\" must be a string");
    return std::pair{std::move(key),
                     Value(type.value_or(ValueType::kString), text_it->get<std::string>())};
  }
  std::optional<std::string> raw;
  if (hex_it->is_string()) raw = HexDecode(hex_it->get<std::string>());
  if (!raw) return Invalid("\"value_hex\" must be a string of hex digit pairs");
  return std::pair{std::move(key), Value(type.value_or(ValueType::kBytes), std::move(*raw))};
}

}  // namespace shmdict::cli
