#include "codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string_view>
#include <vector>

#include "errors.h"

namespace shmdict::python {
namespace {

constexpr char kIntKey = 'i';
constexpr char kFloatKey = 'f';
constexpr char kBytesKey = 'b';
constexpr char kPickledKey = 'p';
constexpr char kTupleKey = 't';
constexpr char kFrozenSetKey = 's';

// Interned method names, created on first use (the module is single-interpreter).
PyObject* Name(const char* text, PyObject** slot) {
  if (*slot == nullptr) *slot = PyUnicode_InternFromString(text);
  return *slot;
}
PyObject* g_encode_key_other = nullptr;
PyObject* g_decode_key_other = nullptr;
PyObject* g_encode_other = nullptr;
PyObject* g_decode_other = nullptr;

bool EncodeIntKey(PyObject* integer, EncodedKey* out) {
  out->storage.assign({kKeyEscape, kIntKey});
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(integer, &overflow);
  if (v == -1 && PyErr_Occurred()) return false;
  if (overflow == 0) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), v);
    out->storage.append(digits, end);
  } else {
    // Beyond 64 bits: int's own decimal form (tp_repr of int, not of a subclass such as an enum).
    PyObject* text = PyLong_Type.tp_repr(integer);
    if (text == nullptr) return false;
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(text, &size);
    if (utf8 != nullptr) out->storage.append(utf8, static_cast<size_t>(size));
    Py_DECREF(text);
    if (utf8 == nullptr) return false;
  }
  out->bytes = out->storage;
  return true;
}

// A str whose code points include lone surrogates: allowed only when they are PEP 383 escapes of
// bytes that are not valid UTF-8 (so no other str encodes to them) and do not start with 0xFF.
bool EncodeEscapedStrKey(PyObject* key, EncodedKey* out) {
  PyErr_Clear();
  PyObject* encoded = PyUnicode_AsEncodedString(key, "utf-8", "surrogateescape");
  if (encoded == nullptr) return false;
  out->storage.assign(PyBytes_AS_STRING(encoded), static_cast<size_t>(PyBytes_GET_SIZE(encoded)));
  Py_DECREF(encoded);
  PyObject* strict = PyUnicode_DecodeUTF8(out->storage.data(),
                                          static_cast<Py_ssize_t>(out->storage.size()), "strict");
  const bool valid_utf8 = strict != nullptr;
  Py_XDECREF(strict);
  PyErr_Clear();
  if (valid_utf8 || (!out->storage.empty() && out->storage[0] == kKeyEscape)) {
    PyErr_Format(PyExc_ValueError,
                 "key %R has surrogates that are not the escape of a foreign non-UTF-8 key", key);
    return false;
  }
  out->bytes = out->storage;
  return true;
}

// A tuple or frozenset (exact types) as its elements' key encodings, each prefixed with its
// length (4 bytes, little-endian); a frozenset's sorted by encoding. Unlike a pickle this is a
// function of the value: a frozenset's pickle follows its hash table's order, which differs
// between equal sets and between processes with other hash seeds, and (1,) and (1.0,) are one
// key as in a dict.
bool EncodeCompositeKey(PyObject* owner, PyObject* key, EncodedKey* out) {
  const bool is_set = PyFrozenSet_CheckExact(key);
  std::vector<std::string> parts;
  PyObject* it = PyObject_GetIter(key);
  if (it == nullptr) return false;
  while (PyObject* item = PyIter_Next(it)) {
    EncodedKey element;
    const bool ok = EncodeKey(owner, item, &element);
    Py_DECREF(item);
    if (!ok) {
      Py_DECREF(it);
      return false;
    }
    parts.emplace_back(element.bytes);
  }
  Py_DECREF(it);
  if (PyErr_Occurred()) return false;
  if (is_set) std::sort(parts.begin(), parts.end());
  out->storage.assign({kKeyEscape, is_set ? kFrozenSetKey : kTupleKey});
  for (const std::string& part : parts) {
    if (part.size() > UINT32_MAX) {
      PyErr_SetString(PyExc_OverflowError, "a key's element is longer than 4 GiB");
      return false;
    }
    const auto size = static_cast<uint32_t>(part.size());
    for (int shift = 0; shift < 32; shift += 8)
      out->storage.push_back(char((size >> shift) & 0xff));
    out->storage.append(part);
  }
  out->bytes = out->storage;
  return true;
}

// Splits the payload of EncodeCompositeKey; false when it is not one.
bool SplitComposite(std::string_view payload, std::vector<std::string_view>* parts) {
  while (!payload.empty()) {
    if (payload.size() < 4) return false;
    uint32_t size = 0;
    for (int i = 0; i < 4; ++i) size |= uint32_t(static_cast<unsigned char>(payload[i])) << (8 * i);
    payload.remove_prefix(4);
    if (payload.size() < size) return false;
    parts->push_back(payload.substr(0, size));
    payload.remove_prefix(size);
  }
  return true;
}

}  // namespace

bool EncodeKey(PyObject* owner, PyObject* key, EncodedKey* out) {
  if (PyUnicode_Check(key)) {
    Py_ssize_t size = 0;
    // CPython caches the UTF-8 form in the str object: repeated lookups do not re-encode.
    const char* utf8 = PyUnicode_AsUTF8AndSize(key, &size);
    if (utf8 == nullptr) return EncodeEscapedStrKey(key, out);
    out->bytes = std::string_view(utf8, static_cast<size_t>(size));
    return true;
  }
  if (PyLong_Check(key)) return EncodeIntKey(key, out);  // bool is an int subclass
  if (PyFloat_Check(key)) {
    const double v = PyFloat_AS_DOUBLE(key);
    if (std::isfinite(v) && v == std::floor(v)) {
      PyObject* integer = PyLong_FromDouble(v);
      if (integer == nullptr) return false;
      const bool ok = EncodeIntKey(integer, out);
      Py_DECREF(integer);
      return ok;
    }
    out->storage.assign({kKeyEscape, kFloatKey});
    char raw[sizeof(double)];
    std::memcpy(raw, &v, sizeof(v));
    out->storage.append(raw, sizeof(raw));
    out->bytes = out->storage;
    return true;
  }
  if (PyBytes_Check(key)) {
    out->storage.assign({kKeyEscape, kBytesKey});
    out->storage.append(PyBytes_AS_STRING(key), static_cast<size_t>(PyBytes_GET_SIZE(key)));
    out->bytes = out->storage;
    return true;
  }
  if (PyTuple_CheckExact(key) || PyFrozenSet_CheckExact(key)) {
    return EncodeCompositeKey(owner, key, out);
  }
  // Unhashable keys fail here with Python's own TypeError, as with a dict.
  if (PyObject_Hash(key) == -1) return false;
  PyObject* pickled =
      PyObject_CallMethodOneArg(owner, Name("_encode_key_other", &g_encode_key_other), key);
  if (pickled == nullptr) return false;
  if (!PyBytes_Check(pickled)) {
    Py_DECREF(pickled);
    PyErr_SetString(PyExc_TypeError, "_encode_key_other must return bytes");
    return false;
  }
  out->storage.assign({kKeyEscape, kPickledKey});
  out->storage.append(PyBytes_AS_STRING(pickled), static_cast<size_t>(PyBytes_GET_SIZE(pickled)));
  Py_DECREF(pickled);
  out->bytes = out->storage;
  return true;
}

PyObject* DecodeKey(PyObject* owner, std::string_view bytes) {
  if (bytes.empty() || bytes[0] != kKeyEscape) {
    return PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()),
                                "surrogateescape");
  }
  if (bytes.size() >= 2) {
    const std::string_view payload = bytes.substr(2);
    switch (bytes[1]) {
      case kIntKey: {
        const std::string digits(payload);
        return PyLong_FromString(digits.c_str(), nullptr, 10);
      }
      case kFloatKey:
        if (payload.size() == sizeof(double)) {
          double v;
          std::memcpy(&v, payload.data(), sizeof(v));
          return PyFloat_FromDouble(v);
        }
        break;
      case kBytesKey:
        return PyBytes_FromStringAndSize(payload.data(), static_cast<Py_ssize_t>(payload.size()));
      case kPickledKey: {
        PyObject* data =
            PyBytes_FromStringAndSize(payload.data(), static_cast<Py_ssize_t>(payload.size()));
        if (data == nullptr) return nullptr;
        PyObject* key =
            PyObject_CallMethodOneArg(owner, Name("_decode_key_other", &g_decode_key_other), data);
        Py_DECREF(data);
        return key;
      }
      case kTupleKey:
      case kFrozenSetKey: {
        std::vector<std::string_view> parts;
        if (!SplitComposite(payload, &parts)) break;
        PyObject* elements = PyList_New(0);
        if (elements == nullptr) return nullptr;
        for (std::string_view part : parts) {
          PyObject* element = DecodeKey(owner, part);
          if (element == nullptr || PyList_Append(elements, element) != 0) {
            Py_XDECREF(element);
            Py_DECREF(elements);
            return nullptr;
          }
          Py_DECREF(element);
        }
        PyObject* key =
            bytes[1] == kTupleKey ? PyList_AsTuple(elements) : PyFrozenSet_New(elements);
        Py_DECREF(elements);
        return key;
      }
      default:
        break;
    }
  }
  // 0xFF is not UTF-8, so this key was not written by this codec: hand it over as it is.
  return PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()),
                              "surrogateescape");
}

bool IsCacheableKey(PyObject* key) {
  return PyUnicode_CheckExact(key) || PyLong_CheckExact(key) || PyBool_Check(key) ||
         PyFloat_CheckExact(key) || PyBytes_CheckExact(key);
}

namespace {

// The (tag, bytes) that _encode_other returned (a serializer's, or an override's) are foreign bytes
// like a bridge client's: readers trust a tag to describe its bytes, so they must be a valid
// encoding of it (ValidateEncoding). A nested-dict reference is never one: only nested() stores
// one, naming a child the core made (any other name would make readers open, and the engine
// later unlink, a dict the writer was never given).
bool CheckEncodedOther(PyObject* key, const Value& value) {
  Status valid = ValidateEncoding(value.view());
  if (valid.ok() && value.type() == ValueType::kNestedDict) {
    valid = Status(StatusCode::kInvalidArgument,
                   "a nested-dict reference is stored only by nested(), never as a value");
  }
  if (valid.ok()) return true;
  std::string which = "a value";
  if (key != nullptr) {
    if (PyObject* repr = PyObject_Repr(key)) {
      if (const char* text = PyUnicode_AsUTF8(repr))
        which = std::string("the value for key ") + text;
      Py_DECREF(repr);
    }
    PyErr_Clear();  // a failing repr only loses the key's name from the message
  }
  SetStatusError(Status(valid.code(), which + ": _encode_other returned tag " +
                                          std::to_string(static_cast<int>(value.type())) + ": " +
                                          valid.message() + "; nothing was written"));
  return false;
}

}  // namespace

bool EncodeValue(PyObject* owner, PyObject* key, PyObject* value, Value* out) {
  if (value == Py_None) {
    out->assign(ValueType::kNull, {});
    return true;
  }
  if (PyBool_Check(value)) {
    const char byte = value == Py_True ? '\1' : '\0';
    out->assign(ValueType::kBool, std::string_view(&byte, 1));
    return true;
  }
  if (PyLong_CheckExact(value)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) return false;
    if (overflow == 0) {
      const int64_t v64 = v;
      out->assign(ValueType::kInt64,
                  std::string_view(reinterpret_cast<const char*>(&v64), sizeof(v64)));
      return true;
    }
    // Beyond int64: the Python side pickles it, so it still round-trips.
  } else if (PyFloat_CheckExact(value)) {
    const double v = PyFloat_AS_DOUBLE(value);
    out->assign(ValueType::kDouble, std::string_view(reinterpret_cast<const char*>(&v), sizeof(v)));
    return true;
  } else if (PyUnicode_CheckExact(value)) {
    Py_ssize_t size = 0;
    if (const char* utf8 = PyUnicode_AsUTF8AndSize(value, &size)) {
      out->assign(ValueType::kString, std::string_view(utf8, static_cast<size_t>(size)));
      return true;
    }
    PyErr_Clear();  // lone surrogates: not UTF-8 text, so the Python side pickles it
  } else if (PyBytes_CheckExact(value)) {
    out->assign(ValueType::kBytes, std::string_view(PyBytes_AS_STRING(value),
                                                    static_cast<size_t>(PyBytes_GET_SIZE(value))));
    return true;
  }
  PyObject* encoded =
      PyObject_CallMethodOneArg(owner, Name("_encode_other", &g_encode_other), value);
  if (encoded == nullptr) return false;
  int tag = 0;
  const char* data = nullptr;
  Py_ssize_t size = 0;
  const bool parsed =
      PyTuple_Check(encoded) && PyArg_ParseTuple(encoded, "iy#", &tag, &data, &size);
  if (parsed && tag >= 0 && tag <= 255) {
    out->assign(static_cast<ValueType>(tag), std::string_view(data, static_cast<size_t>(size)));
    if (!CheckEncodedOther(key, *out)) {
      Py_DECREF(encoded);
      return false;
    }
  } else if (!PyErr_Occurred()) {
    PyErr_SetString(PyExc_TypeError, "_encode_other must return (tag 0..255, bytes)");
  }
  Py_DECREF(encoded);
  return !PyErr_Occurred();
}

PyObject* DecodeValue(PyObject* owner, ValueView value) {
  const std::string_view data = value.data;
  switch (value.type) {
    case ValueType::kNull:
      Py_RETURN_NONE;
    case ValueType::kBool:
      if (data.size() == 1) return PyBool_FromLong(data[0] != 0);
      break;
    case ValueType::kInt64:
      if (data.size() == sizeof(int64_t)) {
        int64_t v;
        std::memcpy(&v, data.data(), sizeof(v));
        return PyLong_FromLongLong(v);
      }
      break;
    case ValueType::kDouble:
      if (data.size() == sizeof(double)) {
        double v;
        std::memcpy(&v, data.data(), sizeof(v));
        return PyFloat_FromDouble(v);
      }
      break;
    case ValueType::kString:
      return PyUnicode_DecodeUTF8(data.data(), static_cast<Py_ssize_t>(data.size()),
                                  "surrogateescape");
    case ValueType::kBytes:
      return PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size()));
    default:
      break;
  }
  // JSON, pickle, nested dicts, user tags, and native tags with a malformed payload (written by
  // a foreign client): the Python side decides.
  PyObject* bytes = PyBytes_FromStringAndSize(data.data(), static_cast<Py_ssize_t>(data.size()));
  if (bytes == nullptr) return nullptr;
  PyObject* tag = PyLong_FromLong(static_cast<long>(value.type));
  PyObject* result = nullptr;
  if (tag != nullptr) {
    PyObject* args[] = {owner, tag, bytes};
    result = PyObject_VectorcallMethod(Name("_decode_other", &g_decode_other), args, 3, nullptr);
    Py_DECREF(tag);
  }
  Py_DECREF(bytes);
  return result;
}

}  // namespace shmdict::python
