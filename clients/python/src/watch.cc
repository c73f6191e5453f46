#include "watch.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <utility>

#include "codec.h"
#include "wait.h"

namespace shmdict::python {

using std::chrono::nanoseconds;

WatchStream::WatchStream(py::handle dict, uint64_t from_revision) {
  auto [s, h] = CallOrThrow(dict);
  context_ = s->backend->error_context();
  source_ = ValueOrThrow(
      CallStore(s, h, [&](Store&) { return s->backend->Watch(*h, from_revision); }), context_);
}

py::object WatchStream::Next(py::handle owner, size_t max_changes, std::optional<double> timeout) {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) throw py::value_error("a watch stream is being read by another thread");
  timeout = CheckedTimeout(timeout, "timeout");
  Watcher& watcher = *source_.watcher;
  std::optional<ChangeBatch> batch;
  std::optional<ChangeBatch> snapshot;  // the chunks received so far
  Status error;
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    nanoseconds slice = kSignalCheckInterval;
    if (timeout) {
      const auto left = std::chrono::duration_cast<nanoseconds>(
          std::chrono::duration<double>(*timeout) - (std::chrono::steady_clock::now() - start));
      slice = std::clamp(left, nanoseconds(0), slice);
    }
    {
      py::gil_scoped_release unlocked;
      Result<ChangeBatch> r = watcher.Next(max_changes, slice);
      if (!r.ok()) {
        error = r.status();
      } else if (r->is_snapshot) {
        if (r->snapshot_begins || !snapshot) {
          snapshot = std::move(*r);
        } else {
          std::move(r->snapshot_items.begin(), r->snapshot_items.end(),
                    std::back_inserter(snapshot->snapshot_items));
          // A remote snapshot's entries too large to send.
          std::move(r->changes.begin(), r->changes.end(), std::back_inserter(snapshot->changes));
          snapshot->revision = r->revision;
        }
        if (r->snapshot_ends) batch = std::move(snapshot);
      } else if (!r->changes.empty()) {
        batch = std::move(*r);
      }
    }
    if (!error.ok()) ThrowStatus(error, context_);
    if (snapshot && !batch) continue;  // the rest of the snapshot is ready: no wait
    if (batch) break;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (timeout &&
        std::chrono::steady_clock::now() - start >= std::chrono::duration<double>(*timeout)) {
      return py::none();
    }
  }
  auto key = [&](std::string_view k) {
    auto o = py::reinterpret_steal<py::object>(DecodeKey(owner.ptr(), k));
    if (!o) throw py::error_already_set();
    return o;
  };
  auto value = [&](const Value& v) {
    auto o = py::reinterpret_steal<py::object>(DecodeValue(owner.ptr(), v.view()));
    if (!o) throw py::error_already_set();
    return o;
  };
  // A value the bridge left out as too large (remote only) is read from the dict: it is the
  // key's value now, which may be newer than the change's.
  auto large_value = [&](const py::object& k) { return owner.attr("get")(k); };
  py::list items;
  for (const auto& [k, v] : batch->snapshot_items) items.append(py::make_tuple(key(k), value(v)));
  py::list changes;
  for (const Change& c : batch->changes) {
    if (batch->is_snapshot) {
      py::object k = key(c.key);
      items.append(py::make_tuple(k, large_value(k)));
      continue;
    }
    switch (c.op) {
      case ChangeOp::kSet:
        if (c.value_too_large) {
          py::object k = key(c.key);
          changes.append(py::make_tuple(c.revision, "set", k, large_value(k)));
        } else {
          changes.append(py::make_tuple(c.revision, "set", key(c.key), value(c.value)));
        }
        break;
      case ChangeOp::kErase:
        changes.append(py::make_tuple(c.revision, "delete", key(c.key), py::none()));
        break;
      case ChangeOp::kClear:
        changes.append(py::make_tuple(c.revision, "clear", py::none(), py::none()));
        break;
    }
  }
  return py::make_tuple(batch->is_snapshot, batch->snapshot_revision, items, changes,
                        batch->revision);
}

void DefineWatchStream(py::module_& m) {
  py::class_<WatchStream>(m, "WatchStream")
      .def(py::init<py::handle, uint64_t>())
      .def("next", &WatchStream::Next)
      .def_property_readonly("revision", &WatchStream::revision);
}

}  // namespace shmdict::python
