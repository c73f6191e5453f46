// Remote dicts: shmdict.connect opens a dict through shmdict-bridge (the C++ RemoteDict,
// clients/cpp) into a DictBase, as a Backend (state.h) whose one thread-safe handle serves every
// thread. Built only with the bridge client (SHMDICT_PYTHON_REMOTE); otherwise Connect raises
// ImportError saying so. Needs the GIL.
#ifndef SHMDICT_PYTHON_REMOTE_H_
#define SHMDICT_PYTHON_REMOTE_H_

#include <pybind11/pybind11.h>

#include <optional>
#include <string>

namespace shmdict::python {

namespace py = pybind11;

// DictBase._connect: opens `name` through the bridge at `address` into `self` (which must not be
// open). Raises the open's error (Unavailable, a ConnectionError, when the bridge cannot be
// reached; NotFound when the dict does not exist).
void Connect(py::handle self, const std::string& address, const std::string& name, bool mirror,
             std::optional<double> timeout, const std::string& token, const std::string& tls_ca,
             const std::string& tls_cert, const std::string& tls_key);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_REMOTE_H_
