// interop_peer: the C++ side of the Python interoperability test. It reads what Python wrote,
// through the C++ API, and writes values for Python to read.
//
//   interop_peer dump NAME        one line per entry, sorted by key:
//                                 <key as hex> <type name> <value as text (Value::ToText)>
//   interop_peer write NAME       sets c.str, c.int, c.float, c.bool, c.null, c.bytes, c.json
//                                 to fixed values the test checks from Python
//   interop_peer set-ref NAME KEY REFERENCE
//                                 stores REFERENCE as a nested-dict value under KEY, unchecked:
//                                 a raw writer, for the readers' refusal of foreign references
//
// Exits 2 with a message on stderr when the dict cannot be opened or written.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <string_view>

#include "shmdict/dict.h"

namespace {

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

int Fail(const shmdict::Status& status) {
  std::cerr << status.ToString() << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view command = argc > 1 ? argv[1] : "";
  if (argc != (command == "set-ref" ? 5 : 3)) {
    std::cerr << "usage: interop_peer dump|write NAME | set-ref NAME KEY REFERENCE\n";
    return 2;
  }
  auto dict = shmdict::Dict::Open(
      {.name = argv[2], .create_mode = shmdict::CreateMode::kMustAttach, .auto_unlink = false});
  if (!dict.ok()) return Fail(dict.status());
  if (command == "dump") {
    for (const auto& [key, value] : dict->Export()) {
      std::cout << Hex(key) << ' ' << shmdict::TypeName(value.type()) << ' ' << value.ToText()
                << '\n';
    }
    return 0;
  }
  if (command == "write") {
    using shmdict::Value;
    const auto r = dict->Update(std::map<std::string, Value>{
        {"c.str", Value::Str("from C++ \xc3\xa9")},
        {"c.int", Value::Int(-42)},
        {"c.float", Value::Double(2.5)},
        {"c.bool", Value::Bool(true)},
        {"c.null", Value::Null()},
        {"c.bytes", Value::Bytes(std::string("\x00\xff", 2))},
        {"c.json", Value::Json(R"({"a":[1,2]})")},
    });
    if (!r.ok()) return Fail(r.status());
    return 0;
  }
  if (command == "set-ref") {
    const auto r =
        dict->Set(argv[3], shmdict::Value(shmdict::ValueType::kNestedDict, std::string(argv[4])));
    if (!r.ok()) return Fail(r.status());
    return 0;
  }
  std::cerr << "unknown command " << command << "\n";
  return 2;
}
