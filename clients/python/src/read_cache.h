// The read cache: decoded immutable values by key (State::cache), valid while the revision it
// follows (Backend::CacheRevision) has not moved, so that reading an unchanged key costs one
// atomic load and a Python dict lookup. It is dropped when that revision moves, and when it grows
// past kMaxCachedKeys between two changes. Needs the GIL.
#ifndef SHMDICT_PYTHON_READ_CACHE_H_
#define SHMDICT_PYTHON_READ_CACHE_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>

#include "shmdict/value.h"
#include "state.h"

namespace shmdict::python {

inline constexpr Py_ssize_t kMaxCachedKeys = 8192;

// Makes the cache describe `revision`, dropping it when that is not the revision it describes.
inline void SyncCache(State* s, uint64_t revision) {
  if (revision != s->cache_revision) {
    PyDict_Clear(s->cache);
    s->cache_revision = revision;
  }
}

// Keeps `value` (a decoded object) for `key`; errors are dropped (a cache miss is harmless).
void CacheValue(State* s, PyObject* key, PyObject* value);

// After this process committed `revision` for `key` (value nullptr: erased): when nothing else
// was committed since the cache's revision, the cache stays valid with the new value; otherwise it
// is dropped lazily.
void CacheOwnWrite(State* s, uint64_t revision, PyObject* key, PyObject* value, ValueType type);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_READ_CACHE_H_
