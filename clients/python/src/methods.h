// DictBase's methods other than the CPython slots (mapping.h), bound with pybind11 onto the type:
// opening, the bulk and atomic operations, waits, the lock methods (lock.h), status, close and
// remote connect (remote.h). Needs the GIL.
#ifndef SHMDICT_PYTHON_METHODS_H_
#define SHMDICT_PYTHON_METHODS_H_

#include <pybind11/pybind11.h>

namespace shmdict::python {

namespace py = pybind11;

// Adds the methods to `type` (DictBase).
void DefineMethods(py::object type);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_METHODS_H_
