// shmdict._core.DictBase: the base of shmdict.Dict (clients/python/shmdict/_dict.py, which adds
// the MutableMapping API, the value codecs that need Python, the lock object and asyncio). It is a
// CPython heap type rather than a pybind11 class for two reasons:
//   - speed: `d[k]` and `d[k] = v` are C slots (mp_subscript, ...). pybind11's dispatcher costs
//     more than a whole cached read, and the targets are ratios to a plain dict;
//   - inheritance: pybind11 classes have their own metaclass, which conflicts with ABCMeta, so
//     shmdict.Dict could not also be a collections.abc.MutableMapping.
// The other methods are bound with pybind11 onto that type (methods.h). Needs the GIL.
#ifndef SHMDICT_PYTHON_MAPPING_H_
#define SHMDICT_PYTHON_MAPPING_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace shmdict::python {

// The type, once MakeDictType ran.
extern PyTypeObject* g_dict_type;

// Creates DictBase (a new reference); nullptr with an exception set.
PyObject* MakeDictType();

// How a read hands out a cached list or dict value (read_cache.h).
enum class Sharing {
  kCopy,    // a new copy of its lists and dicts: what the caller mutates is its own
  kShared,  // the cached object itself (d._get_shared, for the UltraDict drop-in: UltraDict hands
            // out the objects of its local copy, and a mutation shows in later reads of that
            // handle until the key changes)
};

// The read path shared by d[k], d.get, d._get_shared and `in`. Returns a new reference; nullptr
// with no exception set when the key is missing.
PyObject* Lookup(PyObject* self, PyObject* key, Sharing sharing = Sharing::kCopy);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_MAPPING_H_
