// Status rendering: a dict's status as the Python dict that d.status() and shmdict.inspect()
// return, for a local dict (DictStatus) and a remote one (the bridge's answer plus the mirror's
// state). Needs the GIL.
#ifndef SHMDICT_PYTHON_STATUS_H_
#define SHMDICT_PYTHON_STATUS_H_

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "shmdict/catalog.h"
#include "shmdict/dict.h"

namespace shmdict {
class RemoteDict;
}  // namespace shmdict

namespace shmdict::python {

namespace py = pybind11;

class State;

py::dict StatusToDict(const DictStatus& st);

// What RemoteStatus needs to ask the bridge about the dict again: the bridge's catalog, made with
// the connection's own address, token, TLS files and timeout (a RemoteCatalog), so status() is
// allowed wherever the dict's other calls are, and reuses one channel.
struct RemoteEndpoint {
  std::string address;
  bool mirror = false;
  std::shared_ptr<Catalog> catalog;
};

// A remote dict's status as the bridge reports it (one call, without the GIL), plus the mirror's
// state. Raises the call's error. Only in builds with the bridge client (SHMDICT_PYTHON_REMOTE).
py::dict RemoteStatus(State* s, RemoteDict& remote, const RemoteEndpoint& endpoint);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_STATUS_H_
