#include "lock.h"

#include <structmember.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "mapping.h"
#include "state.h"
#include "wait.h"

namespace shmdict::python {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

struct LockObject {
  PyObject_HEAD PyObject*
      dict_ref;  // weakref.ref to the DictBase: a lock does not keep its dict alive
};

PyObject* g_enter_slow = nullptr;

// The dict behind a lock (borrowed), or nullptr when it is gone or not a DictBase.
PyObject* LockedDict(PyObject* self) {
  PyObject* ref = reinterpret_cast<LockObject*>(self)->dict_ref;
  if (ref == nullptr || !PyWeakref_Check(ref)) return nullptr;
  PyObject* dict = PyWeakref_GetObject(ref);
  return PyObject_TypeCheck(dict, g_dict_type) ? dict : nullptr;
}

PyObject* LockEnter(PyObject* self, PyObject*) {
  if (PyObject* dict = LockedDict(self)) {
    ThreadHandle* h = HandleFor(dict);
    if (h == nullptr) return nullptr;
    if (h->dict == nullptr) return PyObject_CallMethod(self, "_enter_slow", nullptr);  // remote
    if (h->lock_depth > 0) {
      ++h->lock_depth;
      return Py_NewRef(self);
    }
    Result<LockGuard> r = h->dict->TryLock();
    if (r.ok()) {
      h->guard.emplace(std::move(*r));
      h->lock_depth = 1;
      return Py_NewRef(self);
    }
  }
  if (g_enter_slow == nullptr) g_enter_slow = PyUnicode_InternFromString("_enter_slow");
  return PyObject_CallMethodNoArgs(self, g_enter_slow);
}

PyObject* LockExit(PyObject* self, PyObject*) {
  PyObject* dict = LockedDict(self);
  if (dict == nullptr) {
    PyErr_SetString(g_closed, "the dict of this lock no longer exists");
    return nullptr;
  }
  ThreadHandle* h = HandleFor(dict);
  if (h == nullptr) return nullptr;
  if (h->lock_depth == 0) {
    PyErr_SetString(PyExc_RuntimeError, "release unlocked lock (this thread does not hold it)");
    return nullptr;
  }
  if (--h->lock_depth == 0) h->guard.reset();
  Py_RETURN_FALSE;
}

void LockDealloc(PyObject* self) {
  Py_CLEAR(reinterpret_cast<LockObject*>(self)->dict_ref);
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyMethodDef g_lock_methods[] = {
    {"__enter__", LockEnter, METH_NOARGS,
     "__enter__($self, /)\n--\n\n"
     "Takes the lock, waiting as configured (the dict's lock_timeout, or the timeout and "
     "blocking given to lock(...)): shmdict.Timeout (a TimeoutError) when the wait ends, "
     "shmdict.LockHeld (a BlockingIOError) when not blocking; both name the holder's pid."},
    {"__exit__", LockExit, METH_VARARGS,
     "__exit__($self, exc_type, exc_value, traceback, /)\n--\n\n"
     "Releases the lock taken by __enter__; never suppresses the exception."},
    {nullptr, nullptr, 0, nullptr},
};
PyMemberDef g_lock_members[] = {
    {"_dict_ref", T_OBJECT_EX, offsetof(LockObject, dict_ref), 0, "weakref.ref to the dict"},
    {nullptr, 0, 0, 0, nullptr},
};
PyType_Slot g_lock_slots[] = {
    {Py_tp_doc, const_cast<char*>("The C part of shmdict.Lock (its fast __enter__ and "
                                  "__exit__); use shmdict.Lock.")},
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(LockDealloc)},
    {Py_tp_methods, g_lock_methods},
    {Py_tp_members, g_lock_members},
    {0, nullptr},
};
PyType_Spec g_lock_spec = {
    "shmdict._core.LockBase",
    sizeof(LockObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    g_lock_slots,
};

}  // namespace

PyObject* MakeLockType() { return PyType_FromSpec(&g_lock_spec); }

bool LockAcquire(py::handle self, bool blocking, std::optional<double> timeout) {
  timeout = CheckedTimeout(timeout, "timeout");
  auto [s, h] = CallOrThrow(self);
  Dict& dict = LocalDict(s, h);
  if (h->lock_depth > 0) {
    ++h->lock_depth;
    return true;
  }
  Busy busy(s);  // signal handlers run between slices: h must stay valid
  Status error;
  std::optional<LockGuard> taken;
  auto attempt = [&](nanoseconds slice) {
    // Lock(0 ms) is a try-lock in the core.
    Result<LockGuard> r =
        dict.Lock(std::chrono::ceil<milliseconds>(std::max(slice, nanoseconds(0))));
    if (r.ok())
      taken.emplace(std::move(*r));
    else if (r.status().code() != StatusCode::kDeadlineExceeded &&
             r.status().code() != StatusCode::kUnavailable) {
      error = r.status();
    }
    return taken.has_value() || !error.ok();
  };
  if (!blocking) {
    WithoutGil unlocked(s);
    attempt(nanoseconds(0));
  } else {
    WaitInterruptibly(s, timeout, attempt);
  }
  if (!error.ok()) ThrowStatus(error);
  if (!taken) return false;
  h->guard = std::move(taken);
  h->lock_depth = 1;
  return true;
}

void LockRelease(py::handle self) {
  ThreadHandle& h = HandleOrThrow(self);
  if (h.lock_depth == 0) {
    // threading.Lock's error for the same mistake.
    PyErr_SetString(PyExc_RuntimeError, "release unlocked lock (this thread does not hold it)");
    throw py::error_already_set();
  }
  if (--h.lock_depth == 0) h.guard.reset();
}

bool LockOwned(py::handle self) { return HandleOrThrow(self).lock_depth > 0; }

}  // namespace shmdict::python
