#include "read_cache.h"

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "codec.h"
#include "state.h"

namespace shmdict::python {
namespace {

// Trees deeper than this are not cached: copying them recursively would risk the C stack.
constexpr int kMaxCachedDepth = 64;
// Counted per entry on top of its encoded value: the key, the entry, the decoded object's header.
constexpr size_t kEntryOverhead = 128;
// Counted per object of a decoded list or dict (the pointer to it and a small object), so that
// the bound follows the decoded size rather than the encoded one.
constexpr size_t kObjectOverhead = 40;

bool IsLeaf(PyObject* o) {
  return o == Py_None || PyBool_Check(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
         PyUnicode_CheckExact(o) || PyBytes_CheckExact(o);
}

enum class Shape { kImmutable, kMutableTree, kOther };

// kImmutable: may be returned as it is; kMutableTree: lists and dicts (at any level) that
// CopyTree makes independent; kOther: not cached. Adds the objects below `o` to *objects.
Shape Classify(PyObject* o, int depth, size_t* objects) {
  ++*objects;
  if (IsLeaf(o)) return Shape::kImmutable;
  if (depth >= kMaxCachedDepth) return Shape::kOther;
  if (PyTuple_CheckExact(o)) {
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); ++i) {
      if (Classify(PyTuple_GET_ITEM(o, i), depth + 1, objects) != Shape::kImmutable)
        return Shape::kOther;
    }
    return Shape::kImmutable;
  }
  if (PyList_CheckExact(o)) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(o); ++i) {
      if (Classify(PyList_GET_ITEM(o, i), depth + 1, objects) == Shape::kOther)
        return Shape::kOther;
    }
    return Shape::kMutableTree;
  }
  if (PyDict_CheckExact(o)) {
    Py_ssize_t pos = 0;
    PyObject* key;
    PyObject* value;
    while (PyDict_Next(o, &pos, &key, &value)) {
      if (Classify(key, depth + 1, objects) != Shape::kImmutable) return Shape::kOther;
      if (Classify(value, depth + 1, objects) == Shape::kOther) return Shape::kOther;
    }
    return Shape::kMutableTree;
  }
  return Shape::kOther;
}

bool IsContainer(PyObject* o) { return PyList_CheckExact(o) || PyDict_CheckExact(o); }

// A copy of a tree Classify called kMutableTree: new lists and dicts, the same leaves and tuples.
// New reference, or nullptr with an exception (out of memory).
PyObject* CopyTree(PyObject* o) {
  if (PyList_CheckExact(o)) {
    const Py_ssize_t n = PyList_GET_SIZE(o);
    Py_ssize_t first_container = 0;
    while (first_container < n && !IsContainer(PyList_GET_ITEM(o, first_container))) {
      ++first_container;
    }
    // A flat list (the common case) is one slice: a copy of the item pointers.
    if (first_container == n) return PyList_GetSlice(o, 0, n);
    PyObject* copy = PyList_New(n);
    if (copy == nullptr) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(o, i);
      if (IsContainer(item)) {
        item = CopyTree(item);
        if (item == nullptr) {
          Py_DECREF(copy);
          return nullptr;
        }
      } else {
        Py_INCREF(item);
      }
      PyList_SET_ITEM(copy, i, item);
    }
    return copy;
  }
  if (PyDict_CheckExact(o)) {
    // PyDict_Copy clones the table in one go; only nested containers are replaced after.
    PyObject* copy = PyDict_Copy(o);
    if (copy == nullptr) return nullptr;
    Py_ssize_t pos = 0;
    PyObject* key;
    PyObject* value;
    while (PyDict_Next(o, &pos, &key, &value)) {
      if (!IsContainer(value)) continue;
      PyObject* inner = CopyTree(value);
      if (inner == nullptr || PyDict_SetItem(copy, key, inner) != 0) {
        Py_XDECREF(inner);
        Py_DECREF(copy);
        return nullptr;
      }
      Py_DECREF(inner);
    }
    return copy;
  }
  Py_INCREF(o);
  return o;
}

// The Python key whose entry caches `encoded`, for the kinds Put accepts; nullptr (no exception)
// for the others, which are never cached.
PyObject* CachedKeyOf(std::string_view encoded) {
  if (!encoded.empty() && encoded[0] == kKeyEscape) {
    if (encoded.size() < 2) return nullptr;
    const char kind = encoded[1];
    if (kind != 'i' && kind != 'f' && kind != 'b') return nullptr;  // codec.h's key table
  }
  // These kinds decode without calling the owner (only pickled keys need it).
  PyObject* key = DecodeKey(nullptr, encoded);
  if (key == nullptr) PyErr_Clear();
  return key;
}

}  // namespace

ReadCache::ReadCache() {
  entries_ = PyDict_New();
  sizes_ = PyDict_New();
  if (entries_ == nullptr || sizes_ == nullptr) {
    Py_CLEAR(entries_);
    Py_CLEAR(sizes_);
    throw pybind11::error_already_set();
  }
}

ReadCache::~ReadCache() {
  Py_CLEAR(entries_);
  Py_CLEAR(sizes_);
}

PyObject* ReadCache::Get(PyObject* key, bool shared) {
  PyObject* cached = PyDict_GetItemWithError(entries_, key);
  if (cached == nullptr) return nullptr;
  if (!shared && IsContainer(cached)) return CopyTree(cached);
  Py_INCREF(cached);
  return cached;
}

int ReadCache::Contains(PyObject* key) { return PyDict_Contains(entries_, key); }

PyObject* ReadCache::Keep(uint64_t epoch, PyObject* key, PyObject* decoded, size_t encoded_bytes,
                          bool shared) {
  if (epoch != epoch_ || !Put(key, decoded, encoded_bytes) || shared || !IsContainer(decoded)) {
    return decoded;
  }
  PyObject* copy = CopyTree(decoded);
  if (copy == nullptr) {
    PyErr_Clear();
    Remove(key);
    return decoded;
  }
  Py_DECREF(decoded);  // the cache holds it
  return copy;
}

bool ReadCache::Put(PyObject* key, PyObject* decoded, size_t encoded_bytes) {
  // Only keys that CachedKeyOf rebuilds equal from their encoding: a str with lone surrogates
  // has no UTF-8 form (codec.cc escapes it), a NaN is not equal to itself.
  if (PyUnicode_Check(key) && PyUnicode_AsUTF8AndSize(key, nullptr) == nullptr) {
    PyErr_Clear();
    return false;
  }
  if (PyFloat_Check(key) && std::isnan(PyFloat_AS_DOUBLE(key))) return false;
  if (max_keys_ <= 0) return false;
  if (encoded_bytes > max_bytes_ / 4) return false;  // before walking a large value
  size_t objects = 0;
  if (Classify(decoded, 0, &objects) == Shape::kOther) return false;
  const size_t cost = encoded_bytes + kEntryOverhead + (objects - 1) * kObjectOverhead;
  if (cost > max_bytes_ / 4) return false;
  Remove(key);
  if (PyDict_GET_SIZE(entries_) >= max_keys_ || bytes_ + cost > max_bytes_) DropEntries();
  PyObject* size = PyLong_FromSize_t(cost);
  if (size == nullptr || PyDict_SetItem(sizes_, key, size) != 0 ||
      PyDict_SetItem(entries_, key, decoded) != 0) {
    Py_XDECREF(size);
    PyErr_Clear();
    DropEntries();  // the two tables may disagree now
    return false;
  }
  Py_DECREF(size);
  bytes_ += cost;
  return true;
}

void ReadCache::Forget(PyObject* key) {
  // Also when the key is not cached: a reader that read it before this write may be decoding.
  ++epoch_;
  Remove(key);
}

void ReadCache::Remove(PyObject* key) {
  PyObject* size = PyDict_GetItemWithError(sizes_, key);
  if (size == nullptr) {
    PyErr_Clear();
    return;
  }
  bytes_ -= PyLong_AsSize_t(size);
  if (PyDict_DelItem(entries_, key) != 0 || PyDict_DelItem(sizes_, key) != 0) {
    PyErr_Clear();
    DropEntries();
  }
}

void ReadCache::DropEntries() {
  PyDict_Clear(entries_);
  PyDict_Clear(sizes_);
  bytes_ = 0;
  ++epoch_;
}

void ReadCache::Reset() {
  DropEntries();
  watcher_.reset();
  revision_ = 0;
}

void ReadCache::SetLimits(Py_ssize_t max_keys, size_t max_bytes) {
  max_keys_ = max_keys;
  max_bytes_ = max_bytes;
  DropEntries();
}

void ReadCache::ForgetEncoded(std::string_view encoded_key) {
  PyObject* key = CachedKeyOf(encoded_key);
  if (key == nullptr) return;
  Remove(key);  // the caller, SyncSlow, changed the epoch
  Py_DECREF(key);
}

bool ReadCache::Apply(const ChangeBatch& batch) {
  if (batch.is_snapshot) return false;
  for (const Change& change : batch.changes) {
    if (change.op == ChangeOp::kClear) {
      DropEntries();
    } else {
      ForgetEncoded(change.key);
    }
  }
  return true;
}

void ReadCache::Restart(State* s, ThreadHandle& h, uint64_t published) {
  DropEntries();
  watcher_.reset();
  revision_ = published;
  if (watcher_retry_in_ > 0 && --watcher_retry_in_ > 0) return;
  uint64_t from = published;
  watcher_ = s->backend->CacheWatcher(h, &from);
  if (watcher_ == nullptr) {
    watcher_retry_in_ = kWatcherRetryMoves;
    return;
  }
  // Empty, the cache describes the revision the watcher starts after.
  revision_ = from;
}

void ReadCache::SyncSlow(State* s, ThreadHandle& h, uint64_t published) {
  ++epoch_;
  if (watcher_ == nullptr || published < revision_ ||
      published - revision_ > kMaxCatchUpRevisions) {
    Restart(s, h, published);
    if (watcher_ == nullptr) return;
  }
  // Bounds each step; a batch is never split, so one large batch comes alone.
  const WatchLimits limits{.max_changes = 4096, .max_bytes = size_t{1} << 20};
  while (watcher_->revision() < published) {
    const uint64_t before = watcher_->revision();
    Result<ChangeBatch> batch = watcher_->Next(limits, std::chrono::nanoseconds(0));
    // An error, a snapshot or no progress (a published revision the log does not hold yet):
    // the changes cannot be known, so nothing cached is kept.
    if (!batch.ok() || !Apply(*batch) || batch->revision <= before) {
      DropEntries();
      watcher_.reset();
      revision_ = published;
      return;
    }
  }
  // A watcher restarted behind the cache's revision replays up to it without delivering.
  revision_ = std::max(revision_, watcher_->revision());
}

}  // namespace shmdict::python
