#include "read_cache.h"

#include "codec.h"

namespace shmdict::python {

void CacheValue(State* s, PyObject* key, PyObject* value) {
  if (PyDict_GET_SIZE(s->cache) >= kMaxCachedKeys) PyDict_Clear(s->cache);
  if (PyDict_SetItem(s->cache, key, value) != 0) PyErr_Clear();
}

void CacheOwnWrite(State* s, uint64_t revision, PyObject* key, PyObject* value, ValueType type) {
  if (!s->backend->has_read_cache()) return;
  if (revision != s->cache_revision + 1) return;
  s->cache_revision = revision;
  if (value != nullptr && IsCacheableKey(key) && IsCacheableValue(type)) {
    CacheValue(s, key, value);
  } else if (PyDict_DelItem(s->cache, key) != 0) {
    PyErr_Clear();
  }
}

}  // namespace shmdict::python
