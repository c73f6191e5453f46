// The user lock of a local dict (shmdict.Lock, re-entrant per thread; see _dict.py for its
// Python shape): held through the taking thread's handle (state.h), so other threads' writes wait
// for it like other processes' do.
//
// LockBase is the C part of shmdict.Lock. `with d.lock:` is the hot path of every
// read-modify-write, so __enter__ and __exit__ are C methods that take the lock when it is free
// (a try-lock, no GIL hand-over) and leave every other case (waiting, timeouts, errors that name
// the holder) to the Python method _enter_slow, which calls DictBase._lock_acquire. Needs the GIL.
#ifndef SHMDICT_PYTHON_LOCK_H_
#define SHMDICT_PYTHON_LOCK_H_

#include <pybind11/pybind11.h>

#include <optional>

namespace shmdict::python {

namespace py = pybind11;

// Creates LockBase (a new reference); nullptr with an exception set.
PyObject* MakeLockType();

// DictBase._lock_acquire: true when taken, false when not within the timeout (or, not blocking,
// when held elsewhere). Raises the lock's other errors.
bool LockAcquire(py::handle self, bool blocking, std::optional<double> timeout);
// DictBase._lock_release: RuntimeError when this thread does not hold it.
void LockRelease(py::handle self);
// DictBase._lock_owned: this thread holds it.
bool LockOwned(py::handle self);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_LOCK_H_
