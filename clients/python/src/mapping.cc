#include "mapping.h"

#include <optional>
#include <utility>

#include "codec.h"
#include "read_cache.h"
#include "state.h"

namespace shmdict::python {

PyTypeObject* g_dict_type = nullptr;

PyObject* Lookup(PyObject* self, PyObject* key, Sharing sharing) {
  State* s = Ready(self);
  if (s == nullptr) return nullptr;
  ThreadHandle* h = s->backend->ForThread();
  if (h == nullptr) return nullptr;
  const std::optional<uint64_t> cache_revision = s->backend->CacheRevision(*h);
  const bool cacheable_key = cache_revision && IsCacheableKey(key);
  uint64_t epoch = 0;
  if (cacheable_key) {
    // One atomic load when nothing was committed; else the keys that changed are dropped.
    s->cache.Sync(s, *h, *cache_revision);
    if (PyObject* cached = s->cache.Get(key, sharing == Sharing::kShared)) return cached;
    if (PyErr_Occurred()) return nullptr;
    epoch = s->cache.epoch();
  }
  EncodedKey encoded;
  if (!EncodeKey(self, key, &encoded)) return nullptr;
  if (!cacheable_key && (h = HandleFor(self)) == nullptr) return nullptr;  // Python ran
  // The handle catches up first, so the value is at least as new as the cache's revision.
  Value value;
  if (h->dict != nullptr) {
    if (!*h->dict->Get(encoded.bytes, &value)) return nullptr;  // local reads are always OK
  } else {
    Result<bool> found = CallStore(s, h, [&](Store& d) { return d.Get(encoded.bytes, &value); });
    if (!found.ok()) {
      SetStatusError(found.status(), s->backend->error_context());
      return nullptr;
    }
    if (!*found) return nullptr;
  }
  PyObject* decoded = DecodeValue(self, value.view());
  if (decoded == nullptr || !cacheable_key) return decoded;
  // Decoding may have run Python code (another thread, a close): Keep checks the epoch.
  return s->cache.Keep(epoch, key, decoded, value.view().data.size(), sharing == Sharing::kShared);
}

namespace {

PyObject* GetItem(PyObject* self, PyObject* key) {
  PyObject* value = Lookup(self, key);
  if (value == nullptr && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
  return value;
}

int SetOrDeleteItem(PyObject* self, PyObject* key, PyObject* value) {
  EncodedKey encoded_key;
  Value encoded_value;
  if (!EncodeKey(self, key, &encoded_key)) return -1;
  if (value != nullptr && !EncodeValue(self, key, value, &encoded_value)) return -1;
  State* s = Ready(self);
  if (s == nullptr) return -1;
  ThreadHandle* h = s->backend->ForThread();
  if (h == nullptr) return -1;
  Status error;
  bool existed = true;
  {
    // A thread holding the user lock cannot wait for the lock (the core's lock is recursive for
    // its holder), so it keeps the GIL and saves the cost of handing it over.
    std::optional<WithoutGil> unlocked;
    if (h->lock_depth == 0) unlocked.emplace(s);
    if (value != nullptr) {
      Result<uint64_t> r = h->store->Set(encoded_key.bytes, encoded_value);
      if (!r.ok()) error = r.status();
    } else {
      Result<bool> r = h->store->Erase(encoded_key.bytes);
      if (r.ok())
        existed = *r;
      else
        error = r.status();
    }
  }
  if (!error.ok()) {
    SetStatusError(error, s->backend->error_context());
    return -1;
  }
  if (!existed) {
    PyErr_SetObject(PyExc_KeyError, key);
    return -1;
  }
  // A local cache would learn of this change from its watcher anyway; a remote mirror may not
  // have it yet, and the old value must not be read back from the cache meanwhile: neither the
  // entry nor one that a read of the key, decoding in another thread now, would keep (Forget
  // changes the epoch).
  if (IsCacheableKey(key)) s->cache.Forget(key);
  return 0;
}

Py_ssize_t Length(PyObject* self) {
  State* s = Ready(self);
  ThreadHandle* h = s == nullptr ? nullptr : s->backend->ForThread();
  if (h == nullptr) return -1;
  Result<uint64_t> size = CallStore(s, h, [](Store& d) { return d.Size(); });
  if (!size.ok()) {
    SetStatusError(size.status(), s->backend->error_context());
    return -1;
  }
  return static_cast<Py_ssize_t>(*size);
}

// `key in d`: from the cache when it knows the key, else from the core without decoding the
// value (which could mean unpickling it).
int Contains(PyObject* self, PyObject* key) {
  State* s = Ready(self);
  if (s == nullptr) return -1;
  ThreadHandle* h = s->backend->ForThread();
  if (h == nullptr) return -1;
  const std::optional<uint64_t> cache_revision = s->backend->CacheRevision(*h);
  if (cache_revision && IsCacheableKey(key)) {
    s->cache.Sync(s, *h, *cache_revision);
    const int cached = s->cache.Contains(key);
    if (cached != 0) return cached;  // 1, or -1 with an exception
  }
  EncodedKey encoded;
  if (!EncodeKey(self, key, &encoded)) return -1;
  if ((h = HandleFor(self)) == nullptr) return -1;  // encoding may have run Python
  if (h->dict != nullptr) return *h->dict->Contains(encoded.bytes) ? 1 : 0;
  Result<bool> found = CallStore(s, h, [&](Store& d) { return d.Contains(encoded.bytes); });
  if (!found.ok()) {
    SetStatusError(found.status(), s->backend->error_context());
    return -1;
  }
  return *found ? 1 : 0;
}

void Dealloc(PyObject* self) {
  State* s = StateOf(self);
  if (s != nullptr) {
    SyncFork(s);
    // Python code that collects a dict inside another thread's `with d.lock:` does this.
    s->backend->LeakLockedByOtherThreads();
    reinterpret_cast<CoreObject*>(self)->state = nullptr;
    // The creator's handle unlinks when auto_unlink. A dealloc has no caller to report to.
    if (!s->closed) (void)s->backend->Close();
    delete s;
  }
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
}

// d._get_shared(key, default=None): d.get without the copy of a list or dict value.
PyObject* GetShared(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "_get_shared(key, default=None)");
    return nullptr;
  }
  PyObject* value = Lookup(self, args[0], Sharing::kShared);
  if (value != nullptr || PyErr_Occurred()) return value;
  PyObject* fallback = nargs == 2 ? args[1] : Py_None;
  Py_INCREF(fallback);
  return fallback;
}

PyMethodDef g_methods[] = {
    {"_get_shared", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(GetShared)),
     METH_FASTCALL,
     "d._get_shared(key, default=None): as d.get, but a list or dict value is the cached object "
     "itself, not a copy: mutating it changes what this dict object's later reads of the key "
     "return, until the key changes (UltraDict's local copy, for the drop-in)."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot g_slots[] = {
    {Py_tp_doc,
     const_cast<char*>(
         "The C++ engine under shmdict.Dict and shmdict.RemoteDict; use those.\n\n"
         "Its C slots serve d[k] (KeyError if missing), d[k] = v, del d[k], `in` and "
         "len(d). Reads never wait for the lock. A local dict's d[k] = v and del d[k] wait while "
         "another thread or process holds the dict's lock, up to the dict's "
         "lock_timeout (10 s by default), then raise shmdict.Timeout (a TimeoutError) "
         "naming the holder's pid. Closed (a ValueError) after close().")},
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Dealloc)},
    {Py_mp_subscript, reinterpret_cast<void*>(GetItem)},
    {Py_mp_ass_subscript, reinterpret_cast<void*>(SetOrDeleteItem)},
    {Py_mp_length, reinterpret_cast<void*>(Length)},
    {Py_sq_contains, reinterpret_cast<void*>(Contains)},
    {Py_tp_methods, g_methods},
    {0, nullptr},
};
PyType_Spec g_spec = {
    "shmdict._core.DictBase",
    sizeof(CoreObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_MAPPING,
    g_slots,
};

}  // namespace

PyObject* MakeDictType() {
  PyObject* type = PyType_FromSpec(&g_spec);
  g_dict_type = reinterpret_cast<PyTypeObject*>(type);
  return type;
}

}  // namespace shmdict::python
