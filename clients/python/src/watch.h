// shmdict._core.WatchStream: a dict's changes for shmdict.Dict.watch and its async forms, read
// through a watcher of its own (Backend::Watch). Thread-safety: one reader at a time (a second
// concurrent next() raises ValueError). Lifetime: it keeps working after its dict closes (a
// local stream has its own handle; a remote one its own Watch stream to the bridge).
#ifndef SHMDICT_PYTHON_WATCH_H_
#define SHMDICT_PYTHON_WATCH_H_

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "errors.h"
#include "state.h"

namespace shmdict::python {

namespace py = pybind11;

class WatchStream {
 public:
  // Raises the watch's errors (Backend::Watch).
  WatchStream(py::handle dict, uint64_t from_revision);

  // Returns (is_snapshot, snapshot_revision, snapshot_items, changes, revision), where changes
  // are (revision, op, key, value) with op 'set', 'delete' or 'clear'; None on timeout. A
  // snapshot, which the core delivers in chunks, is returned whole. `owner` decodes keys and
  // values.
  py::object Next(py::handle owner, size_t max_changes, std::optional<double> timeout);

  uint64_t revision() const { return source_.watcher->revision(); }

 private:
  std::mutex mu_;  // one reader at a time; try-locked, never waited for with the GIL held
  ErrorContext context_;
  WatchSource source_;
};

// Adds WatchStream to the module.
void DefineWatchStream(py::module_& m);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_WATCH_H_
