// JSON renderings of shmdict values, shared by the CLI's list, export, import and watch.
//
// Two renderings with different goals:
//  - DisplayJson (list --json): the natural JSON for a value (int -> number, json -> the embedded
//    document, dict -> {"$dict": child}, ...). Lossy for bytes that are not valid UTF-8, which
//    are shown as "0x" + hex.
//  - Entry objects (export, import, watch --json): {"key", "type", "value"} that round-trip
//    exactly. When "value" cannot carry the exact stored bytes, the entry holds "value_text"
//    (the raw bytes as a string, e.g. JSON text that is not in compact form) or "value_hex" (raw
//    bytes that are not valid UTF-8); likewise "key_hex" for such a key.
//
// Thread-safety: stateless functions.
#ifndef SHMDICT_CLI_VALUE_JSON_H_
#define SHMDICT_CLI_VALUE_JSON_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict::cli {

// Insertion-ordered, so that embedded JSON documents keep their key order and entry objects
// read "key", "type", "value" in that order.
using Json = nlohmann::ordered_json;

// Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF): what nlohmann's
// serializer accepts without throwing.
bool IsValidUtf8(std::string_view text);
std::string HexEncode(std::string_view bytes);
// nullopt unless `hex` is an even number of hex digits.
std::optional<std::string> HexDecode(std::string_view hex);

// The text as a JSON string, or "0x" + hex when it is not valid UTF-8.
Json DisplayText(std::string_view text);
Json DisplayJson(const Value& value);

// "str", "int", ..., "dict", and "user:N" for application tags (128..255).
std::optional<ValueType> ParseEntryType(std::string_view name);

// Adds "key" (or "key_hex") to *out, which must be an object.
void EncodeKey(std::string_view key, Json* out);
// Adds the entry's fields to *out (which must be an object), after any already there.
void EncodeEntry(std::string_view key, const Value& value, Json* out);
// Inverse of EncodeEntry, also accepting hand-written lines: "type" may be omitted (inferred
// from the JSON type of "value": string -> str, integer -> int, other number -> float,
// boolean -> bool, object/array -> json), and int/float/bool values may be given as strings.
// kInvalidArgument saying what is wrong with the object.
Result<std::pair<std::string, Value>> DecodeEntry(const Json& entry);

}  // namespace shmdict::cli

#endif  // SHMDICT_CLI_VALUE_JSON_H_
