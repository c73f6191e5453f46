// shmdict._core: the C++ engine for Python. This file only assembles the module; each job has
// its file:
//   errors      the exception classes and Status → exception
//   state       a dict object's state: its backend (a handle per thread over a SharedDict, or a
//               remote dict's one handle), fork handling, close
//   read_cache  decoded values by key, each kept until the log reports its key changed
//   mapping     DictBase, a CPython heap type: the slots d[k], d[k] = v, del, len, `in`
//   lock        LockBase (the C part of shmdict.Lock) and the lock methods
//   methods     DictBase's other methods, bound with pybind11
//   remote      shmdict.connect: a dict through shmdict-bridge
//   status      d.status() and shmdict.inspect() as Python dicts
//   watch       WatchStream
//   codec       Python keys and values ↔ shmdict's bytes and type tags
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "errors.h"
#include "lock.h"
#include "mapping.h"
#include "methods.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/shared_dict.h"
#include "shmdict/value.h"
#include "status.h"
#include "watch.h"

namespace py = pybind11;

namespace shmdict::python {
namespace {

void DefineModule(py::module_& m) {
  m.doc() = "The C++ engine of the shmdict package (use shmdict, not this module).";
  // Counting forks from now on: a dict's state compares the count to notice it runs in a child.
  (void)SharedDict::ForkCount();

  DefineErrors(m);
#ifdef SHMDICT_PYTHON_REMOTE
  m.attr("HAS_REMOTE") = true;
#else
  m.attr("HAS_REMOTE") = false;
#endif

  auto type = py::reinterpret_steal<py::object>(MakeDictType());
  if (!type) throw py::error_already_set();
  type.attr("__module__") = "shmdict._core";
  m.add_object("DictBase", type);

  auto lock_type = py::reinterpret_steal<py::object>(MakeLockType());
  if (!lock_type) throw py::error_already_set();
  lock_type.attr("__module__") = "shmdict._core";
  m.add_object("LockBase", lock_type);

  DefineMethods(type);
  DefineWatchStream(m);

  // What shmdict.ultradict checks before it reads a dict's commit word from its own mapping: a
  // number of its own would silently send every UltraDict to the slower engine call once the
  // layout is bumped (as it did from version 4 to 5).
  m.attr("LAYOUT_VERSION") = Dict::LayoutVersion();

  m.def("unlink_by_name", [](const std::string& name) {
    Status st = Dict::UnlinkByName(name);
    if (!st.ok()) ThrowStatus(st);
  });
  m.def("inspect", [](const std::string& name) {
    return StatusToDict(ValueOrThrow(LocalCatalog().Inspect(name)));
  });
  m.def("list_names", []() { return ValueOrThrow(LocalCatalog().ListNames()); });
  // For the tests: raises what a status with this code and message from a local (remote=False)
  // or remote dict raises, so the mapping of a bridge's refusals is checked without that bridge.
  m.def("_raise_status", [](int code, const std::string& message, bool remote) {
    ThrowStatus(Status(static_cast<StatusCode>(code), message), ErrorContext{.remote = remote});
  });
  // For _decode_other: a nested-dict value is followed only when it names a child of the dict it
  // was read from (as Dict::OpenNested checks); FailedPrecondition naming it otherwise.
  m.def("check_nested_reference", [](const std::string& dict, const py::bytes& reference) {
    const std::string name = reference;
    if (Status own = CheckNestedReference(dict, name); !own.ok()) {
      ThrowStatus(Status(
          StatusCode::kFailedPrecondition,
          "dict '" + dict + "': a nested-dict value names '" + name.substr(0, kMaxNameLength) +
              "', which is not one of its children: not followed (" + own.message() + ")"));
    }
  });
}

}  // namespace
}  // namespace shmdict::python

PYBIND11_MODULE(_core, m) { shmdict::python::DefineModule(m); }
