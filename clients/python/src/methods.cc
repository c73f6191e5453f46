#include "methods.h"

#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "codec.h"
#include "lock.h"
#include "mapping.h"
#include "remote.h"
#include "state.h"
#include "wait.h"

namespace shmdict::python {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

CreateMode ToCreateMode(const py::object& create) {
  if (create.is_none()) return CreateMode::kAttachOrCreate;
  return create.cast<bool>() ? CreateMode::kMustCreate : CreateMode::kMustAttach;
}

void Open(py::handle self, const std::string& name, const py::object& create, uint64_t buffer_size,
          unsigned mode, bool auto_unlink, double lock_timeout, uint32_t user_flags) {
  if (StateOf(self.ptr()) != nullptr) throw py::value_error("the dict is already open");
  // The core has no "forever": a lock_timeout past kForeverSeconds is clamped to it.
  lock_timeout = CheckedTimeout(lock_timeout, "lock_timeout").value_or(kForeverSeconds);
  Options options;
  options.name = name;
  options.create_mode = ToCreateMode(create);
  options.buffer_size = buffer_size;
  options.mode = static_cast<mode_t>(mode);
  options.auto_unlink = auto_unlink;
  options.user_flags = user_flags;
  options.lock_timeout = milliseconds(static_cast<int64_t>(std::ceil(lock_timeout * 1000)));
  std::optional<Result<SharedDict>> shared;
  {
    py::gil_scoped_release unlocked;  // creating waits for the lock when racing another creator
    shared.emplace(SharedDict::Open(options));
  }
  SharedDict opened = ValueOrThrow(std::move(*shared));
  std::string dict_name = opened.name();
  const bool created = opened.created();
  auto state =
      std::make_unique<State>(std::move(dict_name), created, MakeLocalBackend(std::move(opened)));
  // The opening thread takes the first handle (the creator's, when it created the dict).
  if (state->backend->ForThread() == nullptr) throw py::error_already_set();
  Install(self, std::move(state));
}

py::object Get(py::handle self, py::handle key, py::object default_value) {
  PyObject* value = Lookup(self.ptr(), key.ptr());
  if (value != nullptr) return py::reinterpret_steal<py::object>(value);
  if (PyErr_Occurred()) throw py::error_already_set();
  return default_value;
}

// The entries of one revision, as (key, value) tuples, keys only, or values only. Copied out of
// the core first, then decoded: decoding may run Python code (see state.h's rule).
enum class Part { kItems, kKeys, kValues };
py::list Entries(py::handle self, Part part) {
  auto [s, h] = CallOrThrow(self);
  std::vector<std::pair<std::string, Value>> items = ValueOrThrow(
      CallStore(s, h, [](Store& d) { return d.Items(); }), s->backend->error_context());
  py::list out(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    py::object k, v;
    if (part != Part::kValues) {
      k = py::reinterpret_steal<py::object>(DecodeKey(self.ptr(), items[i].first));
      if (!k) throw py::error_already_set();
    }
    if (part != Part::kKeys) {
      v = py::reinterpret_steal<py::object>(DecodeValue(self.ptr(), items[i].second.view()));
      if (!v) throw py::error_already_set();
    }
    out[i] = part == Part::kKeys ? k : part == Part::kValues ? v : py::make_tuple(k, v);
  }
  return out;
}

std::vector<std::pair<std::string, Value>> EncodeItems(py::handle self, const py::iterable& items) {
  std::vector<std::pair<std::string, Value>> encoded;
  EncodedKey key;
  for (py::handle item : items) {
    auto pair = py::reinterpret_borrow<py::tuple>(item);
    if (pair.size() != 2) throw py::value_error("update() items must be (key, value) pairs");
    Value value;
    if (!EncodeKey(self.ptr(), pair[0].ptr(), &key) ||
        !EncodeValue(self.ptr(), pair[0].ptr(), pair[1].ptr(), &value)) {
      throw py::error_already_set();
    }
    encoded.emplace_back(std::string(key.bytes), std::move(value));
  }
  return encoded;
}

// Runs a write on this thread's handle without the GIL; throws its error (see ErrorContext for
// type_check). `write` takes the Store, or the local Dict when Target is Dict.
template <typename T, typename Target = Store, typename F>
T Write(py::handle self, F&& write, bool type_check = false) {
  auto [s, h] = CallOrThrow(self);
  Target* target;
  if constexpr (std::is_same_v<Target, Dict>) {
    target = &LocalDict(s, h);
  } else {
    target = h->store;
  }
  std::optional<Result<T>> result;
  {
    WithoutGil unlocked(s);
    result.emplace(write(*target));
  }
  return ValueOrThrow(std::move(*result), s->backend->error_context(type_check));
}

uint64_t Update(py::handle self, const py::iterable& items) {
  auto encoded = EncodeItems(self, items);
  if (encoded.empty()) return 0;
  return Write<uint64_t>(self, [&](Store& d) { return d.Update(encoded); });
}

// The current value of an encoded key, read on this thread's handle (nullopt: missing).
std::optional<Value> Current(py::handle self, std::string_view key) {
  auto [s, h] = CallOrThrow(self);
  return ValueOrThrow(CallStore(s, h, [&](Store& d) { return d.Get(key); }),
                      s->backend->error_context());
}

// Returns (True, value), or (False, None) when the key was missing. The value is read and
// decoded before it is removed, and removed only if it is still that encoding (retrying when it
// changed): a value that fails to decode (an unpickling error) stays in the dict.
py::tuple Pop(py::handle self, py::handle key) {
  EncodedKey k;
  if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
  while (true) {
    std::optional<Value> current = Current(self, k.bytes);
    if (!current) return py::make_tuple(false, py::none());
    PyObject* v = DecodeValue(self.ptr(), current->view());
    if (v == nullptr) throw py::error_already_set();
    auto value = py::reinterpret_steal<py::object>(v);
    if (Write<bool>(self,
                    [&](Store& d) { return d.CompareAndSet(k.bytes, current, std::nullopt); })) {
      return py::make_tuple(true, value);
    }
  }
}

// Native tags (and str/int/bytes/float keys) decode without Python code and cannot fail, so the
// core's PopItem serves them. Otherwise the entry is decoded after removal; if that fails it is
// put back (unless the key was set again meanwhile) before the error is raised.
py::object PopItem(py::handle self) {
  auto item = Write<std::optional<std::pair<std::string, Value>>>(
      self, [&](Store& d) { return d.PopItem(); });
  if (!item) {
    PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
    throw py::error_already_set();
  }
  auto k = py::reinterpret_steal<py::object>(DecodeKey(self.ptr(), item->first));
  py::object v;
  if (k) v = py::reinterpret_steal<py::object>(DecodeValue(self.ptr(), item->second.view()));
  if (!k || !v) {
    py::error_already_set error;  // fetched, so that the restoring write runs cleanly
    const std::optional<Value> restored(std::move(item->second));
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : s->backend->ForThread();
    if (h != nullptr) {
      WithoutGil unlocked(s);
      (void)h->store->CompareAndSet(item->first, std::nullopt, restored);
    }
    PyErr_Clear();
    throw error;
  }
  return py::make_tuple(k, v);
}

py::object SetDefault(py::handle self, py::handle key, py::handle default_value) {
  EncodedKey k;
  Value v;
  if (!EncodeKey(self.ptr(), key.ptr(), &k) ||
      !EncodeValue(self.ptr(), key.ptr(), default_value.ptr(), &v)) {
    throw py::error_already_set();
  }
  Value stored = Write<Value>(self, [&](Store& d) { return d.SetDefault(k.bytes, v); });
  PyObject* decoded = DecodeValue(self.ptr(), stored.view());
  if (decoded == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(decoded);
}

int64_t Increment(py::handle self, py::handle key, int64_t delta) {
  EncodedKey k;
  if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
  return Write<int64_t>(
      self, [&](Store& d) { return d.Increment(k.bytes, delta); }, /*type_check=*/true);
}

// expected / desired: a 1-tuple holding the value, or () for "absent".
bool CompareAndSet(py::handle self, py::handle key, const py::tuple& expected,
                   const py::tuple& desired) {
  EncodedKey k;
  if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
  auto encode = [&](const py::tuple& t) -> std::optional<Value> {
    if (t.empty()) return std::nullopt;
    Value v;
    if (!EncodeValue(self.ptr(), key.ptr(), t[0].ptr(), &v)) throw py::error_already_set();
    return v;
  };
  const std::optional<Value> e = encode(expected);
  const std::optional<Value> d = encode(desired);
  return Write<bool>(self, [&](Store& dict) { return dict.CompareAndSet(k.bytes, e, d); });
}

// compare_and_set for a value compared with Python's == (a non-native `expected`, whose
// encodings are not canonical): reads the current value, compares it decoded, and swaps only if
// the stored bytes are still the ones it read, retrying when they changed meanwhile. Needs no
// lock, so a remote dict uses it too. desired: as for CompareAndSet.
bool CompareAndSetEqual(py::handle self, py::handle key, py::handle expected,
                        const py::tuple& desired) {
  EncodedKey k;
  if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
  std::optional<Value> d;
  if (!desired.empty()) {
    d.emplace();
    if (!EncodeValue(self.ptr(), key.ptr(), desired[0].ptr(), &*d)) throw py::error_already_set();
  }
  while (true) {
    std::optional<Value> current = Current(self, k.bytes);
    if (!current) return false;
    auto value = py::reinterpret_steal<py::object>(DecodeValue(self.ptr(), current->view()));
    if (!value) throw py::error_already_set();
    const int equal = PyObject_RichCompareBool(value.ptr(), expected.ptr(), Py_EQ);
    if (equal < 0) throw py::error_already_set();
    if (equal == 0) return false;
    if (Write<bool>(self, [&](Store& st) { return st.CompareAndSet(k.bytes, current, d); })) {
      return true;
    }
  }
}

uint64_t Clear(py::handle self) {
  return Write<uint64_t>(self, [&](Store& d) { return d.Clear(); });
}

py::object WaitForChange(py::handle self, uint64_t after, std::optional<double> timeout) {
  timeout = CheckedTimeout(timeout, "timeout");
  auto [s, h] = CallOrThrow(self);
  Busy busy(s);  // signal handlers run between slices: h must stay valid
  Store* store = h->store;
  Status error;
  uint64_t revision = 0;
  const bool changed = WaitInterruptibly(s, timeout, [&](nanoseconds slice) {
    Result<uint64_t> r = store->WaitForChange(after, slice);
    if (r.ok())
      revision = *r;
    else if (r.status().code() != StatusCode::kDeadlineExceeded)
      error = r.status();
    return r.ok() || !error.ok();
  });
  if (!error.ok()) ThrowStatus(error, s->backend->error_context());
  if (!changed) return py::none();
  return py::int_(revision);
}

template <typename F, typename... Extra>
void AddMethod(py::object type, const char* name, F&& f, const Extra&... extra) {
  py::cpp_function method(std::forward<F>(f), py::name(name), py::is_method(type),
                          py::sibling(py::getattr(type, name, py::none())), extra...);
  py::setattr(type, name, method);
}

}  // namespace

void DefineMethods(py::object type) {
  // Each docstring starts with its signature in CPython's text-signature form, which help() and
  // inspect.signature() read; pybind11's own ("get(self: handle, key: handle)") would hide it.
  // No "$self": these are functions bound through instancemethod, not method descriptors.
  py::options options;
  options.disable_function_signatures();
  AddMethod(type, "_open", &Open, py::arg("name"), py::arg("create"), py::arg("buffer_size"),
            py::arg("mode"), py::arg("auto_unlink"), py::arg("lock_timeout"),
            py::arg("user_flags") = 0);
  // The creator's Options::user_flags (the UltraDict drop-in keeps `recurse` there).
  AddMethod(type, "_user_flags", [](py::handle self) {
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : s->backend->ForThread();
    if (h == nullptr) throw py::error_already_set();
    if (h->dict == nullptr) throw py::type_error("a remote dict has no user flags");
    return h->dict->user_flags();
  });
  // The main segment's inode this handle mapped (Dict::incarnation): the drop-in maps the
  // commit word by name and must tell whether that name still means this handle's dict.
  AddMethod(type, "_incarnation", [](py::handle self) {
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : s->backend->ForThread();
    if (h == nullptr) throw py::error_already_set();
    if (h->dict == nullptr) throw py::type_error("a remote dict has no incarnation");
    return h->dict->incarnation();
  });
  AddMethod(type, "_name", [](py::handle self) {
    if (Ready(self.ptr()) == nullptr) throw py::error_already_set();
    return StateOf(self.ptr())->name;
  });
  AddMethod(type, "_created", [](py::handle self) {
    if (Ready(self.ptr()) == nullptr) throw py::error_already_set();
    return StateOf(self.ptr())->created;
  });
  AddMethod(type, "get", &Get, py::arg("key"), py::arg("default") = py::none(),
            "get(self, key, default=None)\n--\n\n"
            "The value of key, or default when the key is missing. Reads never wait for the "
            "lock; Closed (a ValueError) after close().");
  AddMethod(type, "_items", [](py::handle self) { return Entries(self, Part::kItems); });
  AddMethod(type, "_keys", [](py::handle self) { return Entries(self, Part::kKeys); });
  AddMethod(type, "_values", [](py::handle self) { return Entries(self, Part::kValues); });
  AddMethod(type, "_update", &Update);
  AddMethod(type, "_pop", &Pop);
  AddMethod(type, "popitem", &PopItem,
            "popitem(self)\n--\n\n"
            "Removes some key and returns (key, value), atomically across processes; KeyError "
            "if the dict is empty. Waits for the lock as d[k] = v does.");
  AddMethod(type, "setdefault", &SetDefault, py::arg("key"), py::arg("default") = py::none(),
            "setdefault(self, key, default=None)\n--\n\n"
            "The value of key if present; otherwise stores default under key and returns it, "
            "atomically across processes. Waits for the lock as d[k] = v does.");
  AddMethod(type, "increment", &Increment, py::arg("key"), py::arg("delta") = 1,
            "increment(self, key, delta=1)\n--\n\n"
            "Adds delta to an int value (a missing key counts as 0), atomically across "
            "processes; returns the new value. WrongType (a TypeError) if the value is not an "
            "int, OutOfRange (an OverflowError) on int64 overflow.");
  AddMethod(type, "_compare_and_set", &CompareAndSet);
  AddMethod(type, "_compare_and_set_equal", &CompareAndSetEqual);
  AddMethod(type, "clear", &Clear,
            "clear(self)\n--\n\n"
            "Removes every key as one revision and returns that revision. Waits for the lock as "
            "d[k] = v does.");
  AddMethod(type, "_revision", [](py::handle self) {
    return CallOrThrow(self).h->store->revision();  // remote: an atomic load, no call
  });
  AddMethod(type, "_wait_for_change", &WaitForChange);
  AddMethod(type, "_refresh", [](py::handle self, bool force) {
    ThreadHandle& h = HandleOrThrow(self);
    Status st = LocalDict(StateOf(self.ptr()), &h).Refresh(force);
    if (!st.ok()) ThrowStatus(st);
  });
  AddMethod(type, "_dump", [](py::handle self) {
    return Write<uint64_t, Dict>(self, [](Dict& d) { return d.Dump(); });
  });
  AddMethod(type, "_status", [](py::handle self) {
    auto [s, h] = CallOrThrow(self);
    return s->backend->StatusDict(s, *h);
  });
  AddMethod(type, "_nested", [](py::handle self, py::handle key) {
    EncodedKey k;
    if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
    Dict child = Write<Dict, Dict>(
        self, [&](Dict& d) { return d.OpenNested(k.bytes); }, /*type_check=*/true);
    return child.name();
  });
  AddMethod(type, "_lock_acquire", &LockAcquire);
  AddMethod(type, "_lock_release", &LockRelease);
  AddMethod(type, "_lock_owned", &LockOwned);
  AddMethod(type, "_unlink", [](py::handle self) {
    ThreadHandle& h = HandleOrThrow(self);
    Status st = LocalDict(StateOf(self.ptr()), &h).Unlink();
    if (!st.ok()) ThrowStatus(st);
  });
  AddMethod(type, "_close", &CloseState);
  AddMethod(type, "_connect", &Connect, py::arg("address"), py::arg("name"), py::arg("mirror"),
            py::arg("timeout"), py::arg("token"), py::arg("tls_ca"), py::arg("tls_cert"),
            py::arg("tls_key"));
  // The read cache's state and bounds (read_cache.h), for tests and tuning.
  AddMethod(type, "_read_cache_info", [](py::handle self) {
    State* s = Ready(self.ptr());
    if (s == nullptr) throw py::error_already_set();
    py::dict info;
    info["keys"] = s->cache.size();
    info["bytes"] = s->cache.bytes();
    // What the cache was filled at: a local dict's revision, but for a remote dict's mirror
    // RemoteDict::mirror_generation() (revisions start over when the dict is replaced).
    info["revision"] = s->cache.revision();
    info["max_keys"] = s->cache.max_keys();
    info["max_bytes"] = s->cache.max_bytes();
    return info;
  });
  AddMethod(
      type, "_set_read_cache_limits",
      [](py::handle self, Py_ssize_t max_keys, size_t max_bytes) {
        State* s = Ready(self.ptr());
        if (s == nullptr) throw py::error_already_set();
        if (max_keys < 0) throw py::value_error("max_keys must be >= 0");
        s->cache.SetLimits(max_keys, max_bytes);
      },
      py::arg("max_keys"), py::arg("max_bytes"));
  AddMethod(type, "_closed", [](py::handle self) {
    State* s = StateOf(self.ptr());
    return s == nullptr || s->closed;
  });
}

}  // namespace shmdict::python
