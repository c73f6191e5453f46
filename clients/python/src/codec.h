// Codec: how Python keys and values become shmdict's byte strings and type tags, and back.
//
// Keys. A `str` key is stored as its UTF-8 bytes, the very bytes C++ and the CLI use for it. Any
// other key is stored as 0xFF followed by a kind byte and a payload. 0xFF never occurs in UTF-8,
// so such a key can never collide with a `str` key. Keys that compare equal in Python encode
// equally where Python's dict would treat them as one key: bool and int (True == 1), and floats
// with an integral value (1.0 == 1) all use the int form.
//   0xFF 'i' decimal digits     int, bool, integral float
//   0xFF 'f' 8 bytes            other floats (IEEE 754, little-endian)
//   0xFF 'b' raw bytes          bytes
//   0xFF 't' elements           tuple: each element's key encoding, 4-byte LE length first
//   0xFF 's' elements           frozenset: the same, sorted by encoding (canonical across
//                               processes, unlike a pickle, which follows the hash seed)
//   0xFF 'p' pickle             any other hashable (namedtuples, enums, ...), via the Python side
// A key written by another client that is not valid UTF-8 and does not start with 0xFF decodes
// to a `str` with surrogate escapes (PEP 383), which encodes back to the same bytes.
//
// Values. None, bool, int (within int64), float, str and bytes map to the core's own tags, so
// every client reads them natively. Everything else is encoded by the Python side
// (Dict._encode_other: JSON where it round-trips, else the dict's serializer) and decoded by it
// (Dict._decode_other); the C++ side only calls it.
//
// Every function here needs the GIL. On failure they set a Python exception and return false or
// nullptr.
#ifndef SHMDICT_PYTHON_CODEC_H_
#define SHMDICT_PYTHON_CODEC_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>
#include <string_view>

#include "shmdict/value.h"

namespace shmdict::python {

inline constexpr char kKeyEscape = '\xff';

// An encoded key: a view into either the caller's `str` (its cached UTF-8) or `storage`.
struct EncodedKey {
  std::string storage;
  std::string_view bytes;
};

// Encodes `key`. `owner` is the object whose `_encode_key_other(key) -> bytes` handles keys of
// other types.
bool EncodeKey(PyObject* owner, PyObject* key, EncodedKey* out);
// Decodes a stored key; `owner` provides `_decode_key_other(bytes) -> key`. New reference.
PyObject* DecodeKey(PyObject* owner, std::string_view bytes);
// True when equal keys of this type always encode equally, so a key-to-value cache may use the
// Python object itself as its key (not so for tuples and frozensets, whose elements may be of
// any type, pickled ones included).
bool IsCacheableKey(PyObject* key);

// Encodes `value` into *out (reusing its buffer). `owner` provides
// `_encode_other(value) -> (tag, bytes)` for non-native types; what it returns must be a valid
// encoding of its tag (ValidateEncoding) and never a nested-dict reference, else
// shmdict.InvalidArgument names `key` (may be null: "a value") and nothing is encoded.
bool EncodeValue(PyObject* owner, PyObject* key, PyObject* value, Value* out);
// Decodes a stored value; `owner` provides `_decode_other(tag, bytes)` for JSON, pickle, user
// tags and nested dicts. New reference.
PyObject* DecodeValue(PyObject* owner, ValueView value);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_CODEC_H_
