// Value: a type-tagged byte string, the unit stored under each key.
//
// Keys and values are byte strings; the tag tells the CLI, the bridge and foreign clients how to
// render and convert the bytes. Encodings are fixed and little-endian so that every process and
// every client agrees: kInt64 and kDouble are 8 bytes, kBool is one byte 0/1, kString and kJson
// are UTF-8 text (not validated), kNestedDict holds the child dict's name, kNull is empty (a
// stored "no value", Python's None, JSON's null), kPickle holds a Python pickle (opaque outside
// Python, but named so that tools say what it is instead of printing noise), kBytes and user tags
// (kUserFirst..255) are opaque.
//
// Thread-safety: a plain value type. Lifetime: owns its bytes; ValueView borrows them.
#ifndef SHMDICT_VALUE_H_
#define SHMDICT_VALUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "shmdict/status.h"

namespace shmdict {

enum class ValueType : uint8_t {
  kBytes = 0,
  kString = 1,
  kInt64 = 2,
  kDouble = 3,
  kBool = 4,
  kJson = 5,
  kNestedDict = 6,
  kNull = 7,
  kPickle = 8,
  kUserFirst = 128,  // 128..255 are free for applications (pluggable serialization).
};

// "bytes", "str", "int", "float", "bool", "json", "dict", "null", "pickle", "user:N".
std::string TypeName(ValueType type);
// Inverse of TypeName for the built-in names; nullopt for anything else.
std::optional<ValueType> ParseTypeName(std::string_view name);

// A borrowed view of a stored value; valid until the next call on the Dict handle that produced
// it (see Dict::ForEach).
struct ValueView {
  ValueType type = ValueType::kBytes;
  std::string_view data;
};

class Value {
 public:
  Value() = default;
  Value(ValueType type, std::string data) : type_(type), data_(std::move(data)) {}
  explicit Value(ValueView view) : type_(view.type), data_(view.data) {}

  static Value Bytes(std::string_view bytes) {
    return Value(ValueType::kBytes, std::string(bytes));
  }
  static Value Str(std::string_view text) { return Value(ValueType::kString, std::string(text)); }
  static Value Json(std::string_view json) { return Value(ValueType::kJson, std::string(json)); }
  static Value Int(int64_t v);
  static Value Double(double v);
  static Value Bool(bool v);
  static Value Null() { return Value(ValueType::kNull, std::string()); }

  // Replaces the contents, reusing the buffer's capacity.
  void assign(ValueType type, std::string_view data) {
    type_ = type;
    data_.assign(data);
  }

  ValueType type() const { return type_; }
  const std::string& data() const { return data_; }
  ValueView view() const { return {type_, data_}; }
  // Moves the bytes out, leaving the value empty with its tag: a server hands them to a message
  // without copying them.
  std::string TakeData() && { return std::move(data_); }

  // Typed access: nullopt when the tag is different or the encoding has the wrong size.
  std::optional<int64_t> AsInt() const;
  std::optional<double> AsDouble() const;
  std::optional<bool> AsBool() const;
  // The text of kString/kJson/kNestedDict values; nullopt for other tags.
  std::optional<std::string_view> AsText() const;

  // Human-readable text: numbers in decimal, bools as true/false, strings and JSON as they are,
  // bytes and user tags as-is when printable UTF-8-ish ASCII, otherwise "0x" + hex.
  std::string ToText() const;

  friend bool operator==(const Value& a, const Value& b) {
    return a.type_ == b.type_ && a.data_ == b.data_;
  }

 private:
  ValueType type_ = ValueType::kBytes;
  std::string data_;
};

// OK when `value`'s bytes are a valid encoding of its tag; kInvalidArgument naming the tag and the
// fault otherwise. kInt64 and kDouble: exactly 8 bytes; kBool: one byte, 0 or 1; kString: UTF-8;
// kJson: one JSON text (RFC 8259) in UTF-8; kNull: empty; kNestedDict: a nested child's name
// ("PARENT@c" and 1..32 lowercase hex digits, repeated for a child's child) -- whether it is a
// child of the dict it is stored in is CheckNestedReference's question; kBytes, kPickle and user
// tags: any bytes. Every path that stores bytes from outside the process (the bridge, the CLI's
// --type, Python's raw API) calls this before writing: readers trust a tag to describe its bytes.
// Cost: O(size) for kString and kJson, O(1) otherwise.
Status ValidateEncoding(ValueView value);

// OK when `reference` (the bytes of a kNestedDict value) names a direct nested child of the dict
// `dict`: `dict` + "@c" + 1..32 lowercase hex digits. kInvalidArgument naming both otherwise. A
// reference to any other dict would make a reader open, and the engine retire (unlink), a dict the
// writer was never given: the bridge refuses to store one, readers refuse to follow one and the
// engine retires only references that pass.
Status CheckNestedReference(std::string_view dict, std::string_view reference);

// Whether `name` is a nested child's name: a top-level name followed by one or more "@c" + 1..32
// lowercase hex digit components. The other names holding '@' belong to a dict's internal
// segments (snapshots "@s", retired "@r", large values "@b") and are never a dict.
bool IsNestedChildName(std::string_view name);

// Parses text as `type` (the CLI's --type): "int" needs a full decimal int64, "float" a full
// double, "bool" true/false/1/0, "null" the text "null" or nothing. Returns nullopt when the text
// does not parse as that type.
std::optional<Value> ParseValue(ValueType type, std::string_view text);

}  // namespace shmdict

#endif  // SHMDICT_VALUE_H_
