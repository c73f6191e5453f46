// Errors: the exception classes of shmdict (one per status code, each also a subclass of the
// built-in exception a Python user expects: NotFound is a FileNotFoundError, Timeout a
// TimeoutError, ...) and the conversion of a core Status into one of them.
//
// Every function here needs the GIL. The classes exist once DefineErrors ran (module import).
#ifndef SHMDICT_PYTHON_ERRORS_H_
#define SHMDICT_PYTHON_ERRORS_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pybind11/pybind11.h>

#include <utility>

#include "shmdict/status.h"

namespace shmdict::python {

namespace py = pybind11;

// shmdict.Error, the base of every class below.
extern PyObject* g_error;
// shmdict.Closed: a ValueError, like I/O on a closed file.
extern PyObject* g_closed;

// How a status maps to an exception class, beyond its code.
struct ErrorContext {
  // The call's FAILED_PRECONDITION means "the stored value has the wrong type" (WrongType, a
  // TypeError).
  bool type_check = false;
  // The status came from a remote dict: UNAVAILABLE is then Unavailable, a ConnectionError
  // (locally it means a held lock: LockHeld).
  bool remote = false;
};

// Sets the Python exception for a non-OK status; the instance carries `.code` ("NOT_FOUND").
void SetStatusError(const Status& status, ErrorContext context = {});

// SetStatusError, then throws py::error_already_set.
[[noreturn]] void ThrowStatus(const Status& status, ErrorContext context = {});

template <typename T>
T ValueOrThrow(Result<T> result, ErrorContext context = {}) {
  if (!result.ok()) ThrowStatus(result.status(), context);
  return std::move(*result);
}

// Creates the exception classes and adds them to the module.
void DefineErrors(py::module_& m);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_ERRORS_H_
