// shmdict._core: the C++ engine for Python.
//
// `_core.DictBase` is the base of shmdict.Dict (clients/python/shmdict/_dict.py, which adds the
// MutableMapping API, the value codecs that need Python, the lock object and asyncio). It is a
// CPython heap type rather than a pybind11 class for two reasons:
//   - speed: `d[k]` and `d[k] = v` are C slots (mp_subscript, ...). pybind11's dispatcher costs
//     more than a whole cached read, and the targets are ratios to a plain dict;
//   - inheritance: pybind11 classes have their own metaclass, which conflicts with ABCMeta, so
//     shmdict.Dict could not also be a collections.abc.MutableMapping.
// Everything else is bound with pybind11 onto that type.
//
// Threads. A core Dict handle is thread-compatible only, and blocking calls (writes waiting for
// the cross-process lock, waits, Lock) must release the GIL. So each Python thread that uses a
// DictBase gets its own core handle (handles are cheap: the snapshot is mapped, not copied); no
// core handle is ever used by two threads, and the GIL guards the table of handles and the read
// cache. This also gives `with d.lock:` threading.Lock's meaning: the lock is held by one
// thread's handle, and other threads' writes wait for it like other processes' do.
//
// Remote dicts (shmdict.connect, when built with the bridge). The same DictBase holds a
// RemoteDict instead of local handles, and every operation below goes through `Store`, the
// interface both implement, so local and remote share these code paths; only the local hot reads
// (d[k], `in`) call the Dict directly (non-virtual, it is final). A RemoteDict is thread-safe, so
// all threads share its one handle (the primary), and calls release the GIL: they may wait on the
// network. It cannot cross fork() (gRPC's threads do not), so a forked child must connect again.
//
// Fork. A forked child may use and close its copies of the parent's handles (dict.h, "Fork");
// closing the creator's copy does not unlink the dict. What the child must not inherit is this
// module's bookkeeping of the parent's locks and calls in progress, which SyncFork drops.
#include <pthread.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <structmember.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "codec.h"
#include "shmdict/dict.h"
#include "shmdict/dict_status.h"
#include "shmdict/local_catalog.h"
#ifdef SHMDICT_PYTHON_REMOTE
#include "shmdict/remote_catalog.h"
#include "shmdict/remote_dict.h"
#endif

namespace py = pybind11;

namespace shmdict::python {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using Clock = std::chrono::steady_clock;

// Blocking calls wait in slices this long, checking for signals in between, so that Ctrl-C
// interrupts them: a signal only sets a flag in the C handler, and Python raises
// KeyboardInterrupt once control is back in the interpreter.
constexpr milliseconds kSignalCheckInterval{100};
// The read cache is dropped when it grows past this many keys between two changes.
constexpr Py_ssize_t kMaxCachedKeys = 8192;

// Timeouts beyond this many seconds (100 years; inf included) mean "forever": they would
// overflow the int64 nanosecond and millisecond counts of std::chrono.
constexpr double kForeverSeconds = 100.0 * 365 * 24 * 3600;

// A timeout argument in seconds: nullopt (forever) for None, inf or beyond kForeverSeconds.
// Throws ValueError for negative values and NaN.
std::optional<double> CheckedTimeout(std::optional<double> seconds, const char* what) {
  if (!seconds) return std::nullopt;
  if (!(*seconds >= 0)) throw py::value_error(std::string(what) + " must be >= 0 seconds");
  if (*seconds > kForeverSeconds) return std::nullopt;
  return seconds;
}

std::atomic<uint64_t> g_fork_generation{0};
// The thread that called fork(): the only thread of the parent that exists in the child. Written
// before the generation changes (and read after seeing it change, under the GIL).
std::atomic<unsigned long> g_forking_thread{0};
void OnForkInChild() {
  g_forking_thread.store(PyThread_get_thread_ident(), std::memory_order_relaxed);
  g_fork_generation.fetch_add(1, std::memory_order_release);
}

// ---- Exceptions: one class per status code, each also a subclass of the built-in exception a
// Python user expects (NotFound is a FileNotFoundError, Timeout a TimeoutError, ...).
PyObject* g_error = nullptr;  // shmdict.Error
struct ErrorClass {
  StatusCode code;
  const char* name;
  PyObject* builtin;
  PyObject* cls;
};
ErrorClass g_errors[] = {
    {StatusCode::kInvalidArgument, "InvalidArgument", PyExc_ValueError, nullptr},
    {StatusCode::kNotFound, "NotFound", PyExc_FileNotFoundError, nullptr},
    {StatusCode::kAlreadyExists, "AlreadyExists", PyExc_FileExistsError, nullptr},
    {StatusCode::kPermissionDenied, "PermissionDenied", PyExc_PermissionError, nullptr},
    {StatusCode::kDeadlineExceeded, "Timeout", PyExc_TimeoutError, nullptr},
    {StatusCode::kUnavailable, "LockHeld", PyExc_BlockingIOError, nullptr},
    {StatusCode::kFailedPrecondition, "FailedPrecondition", nullptr, nullptr},
    {StatusCode::kOutOfRange, "OutOfRange", PyExc_OverflowError, nullptr},
    {StatusCode::kResourceExhausted, "ResourceExhausted", PyExc_MemoryError, nullptr},
    {StatusCode::kDataLoss, "DataLoss", nullptr, nullptr},
};
// shmdict.Unavailable: a remote dict's UNAVAILABLE (the bridge cannot be reached), a
// ConnectionError. Locally UNAVAILABLE means a held lock (LockHeld).
PyObject* g_unavailable = nullptr;
PyObject* g_closed = nullptr;  // shmdict.Closed: a ValueError, like I/O on a closed file
// shmdict.WrongType: a FailedPrecondition that is a TypeError, for the calls whose only
// precondition is the type of the stored value (increment, nested).
PyObject* g_wrong_type = nullptr;

// How a status maps to an exception class, beyond its code.
struct ErrorContext {
  // The call's FAILED_PRECONDITION means "the stored value has the wrong type".
  bool type_check = false;
  // The status came from a remote dict (UNAVAILABLE is then a ConnectionError).
  bool remote = false;
};

// Sets the Python exception for a non-OK status; the instance carries `.code` ("NOT_FOUND").
void SetStatusError(const Status& status, ErrorContext context = {}) {
  PyObject* cls = g_error;
  for (const ErrorClass& e : g_errors) {
    if (e.code == status.code()) cls = e.cls;
  }
  if (context.type_check && status.code() == StatusCode::kFailedPrecondition) cls = g_wrong_type;
  if (context.remote && status.code() == StatusCode::kUnavailable) cls = g_unavailable;
  PyObject* exc = PyObject_CallFunction(cls, "s", status.message().c_str());
  if (exc == nullptr) return;
  PyObject* code = PyUnicode_FromStringAndSize(StatusCodeName(status.code()).data(),
                                               StatusCodeName(status.code()).size());
  if (code != nullptr) {
    PyObject_SetAttrString(exc, "code", code);
    Py_DECREF(code);
  }
  PyErr_SetObject(cls, exc);
  Py_DECREF(exc);
}

[[noreturn]] void ThrowStatus(const Status& status, ErrorContext context = {}) {
  SetStatusError(status, context);
  throw py::error_already_set();
}

template <typename T>
T ValueOrThrow(Result<T> result, ErrorContext context = {}) {
  if (!result.ok()) ThrowStatus(result.status(), context);
  return std::move(*result);
}

// ---- The per-thread handle and the object's state.
struct ThreadHandle {
  std::unique_ptr<Dict> dict;      // a local dict's handle; null for a remote one
  std::unique_ptr<Store> remote;   // a remote dict's (shared by all threads)
  Store* store = nullptr;          // whichever of the two is set
  std::optional<LockGuard> guard;  // the user lock, taken by this thread
  int lock_depth = 0;              // re-entrant acquisitions by this thread
};

// Rule for everything below: no ThreadHandle pointer or reference is held across a call that
// may run Python code (encoding a pickled key or value, decoding one): that code may use the
// same Dict on the same thread, or close it. Encoded keys and values are locals for the same
// reason (short ones fit in std::string's inline buffer, so this costs no allocation). Blocking
// calls, which must keep their handle across signal handlers, mark the dict Busy instead.

struct State {
  std::string name;
  Options attach_options;  // how other threads and forked children attach
  std::unique_ptr<ThreadHandle> primary;
  unsigned long primary_thread = 0;
  std::unordered_map<unsigned long, std::unique_ptr<ThreadHandle>> others;
  uint64_t fork_generation = 0;
  // Decoded immutable values by key, valid while the published revision equals cache_revision.
  PyObject* cache = nullptr;
  uint64_t cache_revision = 0;
  // Calls that use a handle across a GIL release or a signal handler; close() refuses meanwhile.
  int busy_calls = 0;
  bool created = false;  // the primary handle created the dict
  bool closed = false;
  // A remote dict: one thread-safe handle (the primary) for every thread.
  bool remote = false;
  bool mirror = false;         // remote with a local mirror: the read cache follows its revision
  std::string address;         // the bridge (remote)
  double call_timeout = 10.0;  // seconds (remote)
};

ErrorContext ContextOf(const State* s, bool type_check = false) {
  return ErrorContext{type_check, s != nullptr && s->remote};
}

struct CoreObject {
  PyObject_HEAD State* state;
};

State* StateOf(PyObject* self) { return reinterpret_cast<CoreObject*>(self)->state; }

// Leaves a handle open for good: its mappings stay, nothing is unlocked or unlinked.
void Leak(std::unique_ptr<ThreadHandle>& h) {
  if (h == nullptr) return;
  if (h->guard) new LockGuard(std::move(*h->guard));  // never released by this process
  h->guard.reset();
  (void)h->dict.release();
  (void)h->remote.release();
  (void)h.release();
}

// Moves every handle out of `s` (the others first, the primary last: the creator's may unlink).
// Needs the GIL, which guards the table of handles.
std::vector<std::unique_ptr<ThreadHandle>> TakeHandles(State* s) {
  std::vector<std::unique_ptr<ThreadHandle>> handles;
  for (auto& [thread, handle] : s->others) {
    if (handle != nullptr) handles.push_back(std::move(handle));
  }
  s->others.clear();
  if (s->primary != nullptr) handles.push_back(std::move(s->primary));
  return handles;
}

// Closes handles taken out of a State, without the GIL: the core's Close joins the background
// snapshot builder, which may wait (up to lock_timeout) for the writer lock held by another
// thread of this process, and that thread may need the GIL to release it. Each guard is
// released before its dict closes. Returns the first error.
Status CloseWithoutGil(std::vector<std::unique_ptr<ThreadHandle>> handles) {
  Status first;
  Py_BEGIN_ALLOW_THREADS;
  for (std::unique_ptr<ThreadHandle>& h : handles) {
    h->guard.reset();
    if (h->dict != nullptr) {
      Status st = h->dict->Close();
      if (first.ok() && !st.ok()) first = st;
    }
    h.reset();  // a RemoteDict stops its mirror: joins threads, so also without the GIL
  }
  Py_END_ALLOW_THREADS;
  return first;
}

// True when the handle of `thread` holds the user lock and `thread` is not the caller. Such a
// lock may only be released on its own thread (the core's rule for LockGuard).
bool LockedByOtherThread(unsigned long thread, const std::unique_ptr<ThreadHandle>& h) {
  return h != nullptr && h->lock_depth > 0 && thread != PyThread_get_thread_ident();
}

std::unique_ptr<ThreadHandle> Attach(State* s) {
  if (s->remote) {  // only after a fork (SyncFork)
    PyErr_Format(g_closed,
                 "remote dict '%s' was connected before fork(): call shmdict.connect() again in "
                 "the child",
                 s->name.c_str());
    return nullptr;
  }
  Result<Dict> dict = Dict::Open(s->attach_options);
  if (!dict.ok()) {
    SetStatusError(dict.status());
    return nullptr;
  }
  auto handle = std::make_unique<ThreadHandle>();
  handle->dict = std::make_unique<Dict>(std::move(*dict));
  handle->store = handle->dict.get();
  return handle;
}

// In a forked child, first thing. Only the forking thread exists in the child; every other
// thread's handle may have been in the middle of a call (its state is whatever the fork caught),
// and a new thread of the child can get a dead thread's identity. So those handles are leaked,
// never used or closed, and the forking thread's handle, if it had one, becomes the primary.
// The parent's locks are not the child's either (a LockGuard from before the fork releases
// nothing in the child), and the calls that were in progress ran on threads that were not forked.
void SyncFork(State* s) {
  const uint64_t generation = g_fork_generation.load(std::memory_order_acquire);
  if (s->fork_generation == generation) return;
  const unsigned long forking = g_forking_thread.load(std::memory_order_relaxed);
  std::unique_ptr<ThreadHandle> kept;
  if (s->remote) {
    // Leaked below: its gRPC threads are not in the child.
  } else if (forking == s->primary_thread) {
    kept = std::move(s->primary);
  } else if (auto it = s->others.find(forking); it != s->others.end()) {
    kept = std::move(it->second);
  }
  Leak(s->primary);
  for (auto& [thread, handle] : s->others) Leak(handle);
  s->others.clear();
  if (kept != nullptr) {
    kept->guard.reset();
    kept->lock_depth = 0;
  }
  s->primary = std::move(kept);  // nullptr: ForThread attaches a new one on first use
  s->primary_thread = forking;
  s->busy_calls = 0;
  s->fork_generation = generation;
}

// Checks that the object is open; sets an exception if not.
State* Ready(PyObject* self) {
  State* s = StateOf(self);
  if (s == nullptr || s->closed) {
    PyErr_Format(g_closed, "dict '%s' is closed", s == nullptr ? "" : s->name.c_str());
    return nullptr;
  }
  SyncFork(s);
  return s;
}

// This thread's handle, attached on its first use. Needs the GIL.
ThreadHandle* ForThread(State* s) {
  const unsigned long thread = PyThread_get_thread_ident();
  if (thread == s->primary_thread || s->remote) {
    if (s->primary == nullptr) s->primary = Attach(s);  // after a fork (SyncFork)
    return s->primary.get();
  }
  auto it = s->others.find(thread);
  if (it != s->others.end()) return it->second.get();
  std::unique_ptr<ThreadHandle> handle = Attach(s);
  if (handle == nullptr) return nullptr;
  return s->others.emplace(thread, std::move(handle)).first->second.get();
}

// The handle to use for one call, or nullptr with an exception set.
ThreadHandle* HandleFor(PyObject* self) {
  State* s = Ready(self);
  return s == nullptr ? nullptr : ForThread(s);
}

ThreadHandle& HandleOrThrow(py::handle self) {
  ThreadHandle* h = HandleFor(self.ptr());
  if (h == nullptr) throw py::error_already_set();
  return *h;
}

// Marks a call that keeps using a handle across points where other Python code may run (a GIL
// release, a signal handler), so that close() does not pull the handle away meanwhile.
class Busy {
 public:
  explicit Busy(State* s) : state_(s) { ++state_->busy_calls; }
  ~Busy() { --state_->busy_calls; }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;

 private:
  State* state_;
};

// Releases the GIL for a blocking core call.
class WithoutGil {
 public:
  explicit WithoutGil(State* s) : busy_(s) { saved_ = PyEval_SaveThread(); }
  ~WithoutGil() { PyEval_RestoreThread(saved_); }
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;

 private:
  Busy busy_;
  PyThreadState* saved_;
};

// Calls `f(store)` on the handle's store and returns its result: with the GIL for a local dict,
// without it for a remote one (which may wait on the network). Marks the dict busy meanwhile.
template <typename F>
auto CallStore(State* s, ThreadHandle* h, F&& f) -> decltype(f(*h->store)) {
  if (!s->remote) return f(*h->store);
  WithoutGil unlocked(s);
  return f(*h->store);
}

// The revision the read cache follows: the local dict's published revision (one atomic load), a
// mirror's revision; nullopt when the cache is off (a remote dict without a mirror, whose reads
// each ask the bridge).
std::optional<uint64_t> CacheRevision(State* s, ThreadHandle* h) {
  if (h->dict != nullptr) return h->dict->published_revision();
  if (s->mirror) return h->store->revision();
  return std::nullopt;
}

// Makes the cache describe `revision`, dropping it when that is not the revision it describes.
void SyncCache(State* s, uint64_t revision) {
  if (revision != s->cache_revision) {
    PyDict_Clear(s->cache);
    s->cache_revision = revision;
  }
}

// After this process committed `revision` for `key`: when nothing else was committed since the
// cache's revision, the cache stays valid with the new value; otherwise it is dropped lazily.
void CacheOwnWrite(State* s, uint64_t revision, PyObject* key, PyObject* value, ValueType type) {
  if (s->remote && !s->mirror) return;
  if (revision != s->cache_revision + 1) return;
  s->cache_revision = revision;
  if (value != nullptr && IsCacheableKey(key) && IsCacheableValue(type)) {
    if (PyDict_GET_SIZE(s->cache) >= kMaxCachedKeys) PyDict_Clear(s->cache);
    if (PyDict_SetItem(s->cache, key, value) != 0) PyErr_Clear();
  } else if (PyDict_DelItem(s->cache, key) != 0) {
    PyErr_Clear();
  }
}

// The read path shared by d[k], d.get and `in`. Returns a new reference; nullptr with no
// exception set when the key is missing.
PyObject* Lookup(PyObject* self, PyObject* key) {
  State* s = Ready(self);
  if (s == nullptr) return nullptr;
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) return nullptr;
  const std::optional<uint64_t> cache_revision = CacheRevision(s, h);
  const bool cacheable_key = cache_revision && IsCacheableKey(key);
  if (cacheable_key) {
    // One atomic load: when nothing was committed, the cached object is the current value.
    SyncCache(s, *cache_revision);
    if (PyObject* cached = PyDict_GetItemWithError(s->cache, key)) {
      Py_INCREF(cached);
      return cached;
    }
    if (PyErr_Occurred()) return nullptr;
  }
  EncodedKey encoded;
  if (!EncodeKey(self, key, &encoded)) return nullptr;
  if (!cacheable_key && (h = HandleFor(self)) == nullptr) return nullptr;  // Python ran
  // The handle catches up first, so the value is at least as new as cache_revision: if it is
  // newer, the published revision has moved on and the next read drops the cache.
  Value value;
  if (h->dict != nullptr) {
    if (!*h->dict->Get(encoded.bytes, &value)) return nullptr;  // local reads are always OK
  } else {
    Result<bool> found = CallStore(s, h, [&](Store& d) { return d.Get(encoded.bytes, &value); });
    if (!found.ok()) {
      SetStatusError(found.status(), ContextOf(s));
      return nullptr;
    }
    if (!*found) return nullptr;
  }
  PyObject* decoded = DecodeValue(self, value.view());
  if (decoded != nullptr && cacheable_key && IsCacheableValue(value.type())) {
    if (PyDict_GET_SIZE(s->cache) >= kMaxCachedKeys) PyDict_Clear(s->cache);
    if (PyDict_SetItem(s->cache, key, decoded) != 0) PyErr_Clear();
  }
  return decoded;
}

PyObject* GetItem(PyObject* self, PyObject* key) {
  PyObject* value = Lookup(self, key);
  if (value == nullptr && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
  return value;
}

int SetOrDeleteItem(PyObject* self, PyObject* key, PyObject* value) {
  EncodedKey encoded_key;
  Value encoded_value;
  if (!EncodeKey(self, key, &encoded_key)) return -1;
  if (value != nullptr && !EncodeValue(self, value, &encoded_value)) return -1;
  State* s = Ready(self);
  if (s == nullptr) return -1;
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) return -1;
  Status error;
  uint64_t revision = 0;
  bool existed = true;
  {
    // A thread holding the user lock cannot wait for the lock (the core's lock is recursive for
    // its holder), so it keeps the GIL and saves the cost of handing it over.
    std::optional<WithoutGil> unlocked;
    if (h->lock_depth == 0) unlocked.emplace(s);
    if (value != nullptr) {
      Result<uint64_t> r = h->store->Set(encoded_key.bytes, encoded_value);
      if (r.ok())
        revision = *r;
      else
        error = r.status();
    } else {
      Result<bool> r = h->store->Erase(encoded_key.bytes);
      if (r.ok())
        existed = *r;
      else
        error = r.status();
      if (r.ok() && *r) revision = h->store->last_commit_revision();
    }
  }
  if (!error.ok()) {
    SetStatusError(error, ContextOf(s));
    return -1;
  }
  if (!existed) {
    PyErr_SetObject(PyExc_KeyError, key);
    return -1;
  }
  CacheOwnWrite(s, revision, key, value, encoded_value.type());
  return 0;
}

Py_ssize_t Length(PyObject* self) {
  State* s = Ready(self);
  ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
  if (h == nullptr) return -1;
  Result<uint64_t> size = CallStore(s, h, [](Store& d) { return d.Size(); });
  if (!size.ok()) {
    SetStatusError(size.status(), ContextOf(s));
    return -1;
  }
  return static_cast<Py_ssize_t>(*size);
}

// `key in d`: from the cache when it knows the key, else from the core without decoding the
// value (which could mean unpickling it).
int Contains(PyObject* self, PyObject* key) {
  State* s = Ready(self);
  if (s == nullptr) return -1;
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) return -1;
  const std::optional<uint64_t> cache_revision = CacheRevision(s, h);
  if (cache_revision && IsCacheableKey(key)) {
    SyncCache(s, *cache_revision);
    if (PyDict_GetItemWithError(s->cache, key) != nullptr) return 1;
    if (PyErr_Occurred()) return -1;
  }
  EncodedKey encoded;
  if (!EncodeKey(self, key, &encoded)) return -1;
  if ((h = HandleFor(self)) == nullptr) return -1;  // encoding may have run Python
  if (h->dict != nullptr) return *h->dict->Contains(encoded.bytes) ? 1 : 0;
  Result<bool> found = CallStore(s, h, [&](Store& d) { return d.Contains(encoded.bytes); });
  if (!found.ok()) {
    SetStatusError(found.status(), ContextOf(s));
    return -1;
  }
  return *found ? 1 : 0;
}

void Dealloc(PyObject* self) {
  State* s = StateOf(self);
  if (s != nullptr) {
    SyncFork(s);
    // A lock held by another thread may only be released there: it stays held, with its
    // handle, until this process exits (other processes then see the holder gone and take
    // over). Python code that collects a dict inside another thread's `with d.lock:` does this.
    for (auto& [thread, handle] : s->others) {
      if (LockedByOtherThread(thread, handle)) Leak(handle);
    }
    if (LockedByOtherThread(s->primary_thread, s->primary)) Leak(s->primary);
    Py_CLEAR(s->cache);
    std::vector<std::unique_ptr<ThreadHandle>> handles = TakeHandles(s);
    delete s;
    reinterpret_cast<CoreObject*>(self)->state = nullptr;
    // The creator's handle unlinks when auto_unlink. A dealloc has no caller to report to.
    (void)CloseWithoutGil(std::move(handles));
  }
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
}

PyType_Slot g_slots[] = {
    {Py_tp_doc, const_cast<char*>("The C++ engine under shmdict.Dict; use shmdict.Dict.")},
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Dealloc)},
    {Py_mp_subscript, reinterpret_cast<void*>(GetItem)},
    {Py_mp_ass_subscript, reinterpret_cast<void*>(SetOrDeleteItem)},
    {Py_mp_length, reinterpret_cast<void*>(Length)},
    {Py_sq_contains, reinterpret_cast<void*>(Contains)},
    {0, nullptr},
};
PyType_Spec g_spec = {
    "shmdict._core.DictBase",
    sizeof(CoreObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_MAPPING,
    g_slots,
};

// ---- LockBase: the C part of shmdict.Lock. `with d.lock:` is the hot path of every
// read-modify-write, so __enter__ and __exit__ are C methods that take the lock when it is free
// (a try-lock, no GIL hand-over) and leave every other case (waiting, timeouts, errors that name
// the holder) to the Python method _enter_slow.
struct LockObject {
  PyObject_HEAD PyObject*
      dict_ref;  // weakref.ref to the DictBase: a lock does not keep its dict alive
};

PyTypeObject* g_dict_type = nullptr;
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
    {"__enter__", LockEnter, METH_NOARGS, "Takes the lock (see shmdict.Lock)."},
    {"__exit__", LockExit, METH_VARARGS, "Releases the lock."},
    {nullptr, nullptr, 0, nullptr},
};
PyMemberDef g_lock_members[] = {
    {"_dict_ref", T_OBJECT_EX, offsetof(LockObject, dict_ref), 0, "weakref.ref to the dict"},
    {nullptr, 0, 0, 0, nullptr},
};
PyType_Slot g_lock_slots[] = {
    {Py_tp_doc, const_cast<char*>("The C part of shmdict.Lock; use shmdict.Lock.")},
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

// ---- Methods bound with pybind11.

CreateMode ToCreateMode(const py::object& create) {
  if (create.is_none()) return CreateMode::kAttachOrCreate;
  return create.cast<bool>() ? CreateMode::kMustCreate : CreateMode::kMustAttach;
}

void Open(py::handle self, const std::string& name, const py::object& create, uint64_t buffer_size,
          unsigned mode, bool auto_unlink, double lock_timeout) {
  if (StateOf(self.ptr()) != nullptr) throw py::value_error("the dict is already open");
  // The core has no "forever": a lock_timeout past kForeverSeconds is clamped to it.
  lock_timeout = CheckedTimeout(lock_timeout, "lock_timeout").value_or(kForeverSeconds);
  Options options;
  options.name = name;
  options.create_mode = ToCreateMode(create);
  options.buffer_size = buffer_size;
  options.mode = static_cast<mode_t>(mode);
  options.auto_unlink = auto_unlink;
  options.lock_timeout = milliseconds(static_cast<int64_t>(std::ceil(lock_timeout * 1000)));
  std::optional<Result<Dict>> dict;
  {
    py::gil_scoped_release unlocked;  // creating waits for the lock when racing another creator
    dict.emplace(Dict::Open(options));
  }
  auto state = std::make_unique<State>();
  state->primary = std::make_unique<ThreadHandle>();
  state->primary->dict = std::make_unique<Dict>(ValueOrThrow(std::move(*dict)));
  state->primary->store = state->primary->dict.get();
  state->name = state->primary->dict->name();
  state->created = state->primary->dict->created();
  state->attach_options = options;
  state->attach_options.name = state->name;
  state->attach_options.create_mode = CreateMode::kMustAttach;
  state->attach_options.auto_unlink = false;
  state->primary_thread = PyThread_get_thread_ident();
  state->fork_generation = g_fork_generation.load(std::memory_order_relaxed);
  state->cache = PyDict_New();
  if (state->cache == nullptr) throw py::error_already_set();
  reinterpret_cast<CoreObject*>(self.ptr())->state = state.release();
}

py::object Get(py::handle self, py::handle key, py::object default_value) {
  PyObject* value = Lookup(self.ptr(), key.ptr());
  if (value != nullptr) return py::reinterpret_steal<py::object>(value);
  if (PyErr_Occurred()) throw py::error_already_set();
  return default_value;
}

// The entries of one revision, as (key, value) tuples, keys only, or values only. Copied out of
// the core first, then decoded: decoding may run Python code (see the rule above).
enum class Part { kItems, kKeys, kValues };
py::list Entries(py::handle self, Part part) {
  State* s = Ready(self.ptr());
  ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
  if (h == nullptr) throw py::error_already_set();
  std::vector<std::pair<std::string, Value>> items =
      ValueOrThrow(CallStore(s, h, [](Store& d) { return d.Items(); }), ContextOf(s));
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
        !EncodeValue(self.ptr(), pair[1].ptr(), &value)) {
      throw py::error_already_set();
    }
    encoded.emplace_back(std::string(key.bytes), std::move(value));
  }
  return encoded;
}

// The local Dict behind a handle; shmdict.Error for a remote dict (Python's RemoteDict does not
// offer the calls that need it).
Dict& LocalDict(const State* s, ThreadHandle* h) {
  if (h->dict == nullptr) {
    PyErr_Format(g_error, "dict '%s' is remote: this call needs a local dict", s->name.c_str());
    throw py::error_already_set();
  }
  return *h->dict;
}

// Runs a write on this thread's handle without the GIL; throws its error (see ErrorContext for
// type_check). `write` takes the Store, or the local Dict when Target is Dict.
template <typename T, typename Target = Store, typename F>
T Write(py::handle self, F&& write, bool type_check = false) {
  State* s = Ready(self.ptr());
  if (s == nullptr) throw py::error_already_set();
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) throw py::error_already_set();
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
  return ValueOrThrow(std::move(*result), ContextOf(s, type_check));
}

uint64_t Update(py::handle self, const py::iterable& items) {
  auto encoded = EncodeItems(self, items);
  if (encoded.empty()) return 0;
  return Write<uint64_t>(self, [&](Store& d) { return d.Update(encoded); });
}

// Returns (True, value), or (False, None) when the key was missing. The value is read and
// decoded before it is removed, and removed only if it is still that encoding (retrying when it
// changed): a value that fails to decode (an unpickling error) stays in the dict.
py::tuple Pop(py::handle self, py::handle key) {
  EncodedKey k;
  if (!EncodeKey(self.ptr(), key.ptr(), &k)) throw py::error_already_set();
  while (true) {
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
    if (h == nullptr) throw py::error_already_set();
    std::optional<Value> current =
        ValueOrThrow(CallStore(s, h, [&](Store& d) { return d.Get(k.bytes); }), ContextOf(s));
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
    ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
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
  if (!EncodeKey(self.ptr(), key.ptr(), &k) || !EncodeValue(self.ptr(), default_value.ptr(), &v)) {
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
    if (!EncodeValue(self.ptr(), t[0].ptr(), &v)) throw py::error_already_set();
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
    if (!EncodeValue(self.ptr(), desired[0].ptr(), &*d)) throw py::error_already_set();
  }
  while (true) {
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
    if (h == nullptr) throw py::error_already_set();
    std::optional<Value> current =
        ValueOrThrow(CallStore(s, h, [&](Store& st) { return st.Get(k.bytes); }), ContextOf(s));
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

// Waits in slices so that signal handlers (KeyboardInterrupt) run; returns false on timeout.
// `attempt(slice)` returns true when done.
template <typename F>
bool WaitInterruptibly(State* s, std::optional<double> timeout_seconds, F&& attempt) {
  const auto start = Clock::now();
  while (true) {
    nanoseconds slice = kSignalCheckInterval;
    if (timeout_seconds) {
      const auto left = std::chrono::duration_cast<nanoseconds>(
          std::chrono::duration<double>(*timeout_seconds) - (Clock::now() - start));
      if (left < slice) slice = std::max(left, nanoseconds(0));
    }
    bool done;
    {
      WithoutGil unlocked(s);
      done = attempt(slice);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (timeout_seconds &&
        Clock::now() - start >= std::chrono::duration<double>(*timeout_seconds)) {
      return false;
    }
  }
}

py::object WaitForChange(py::handle self, uint64_t after, std::optional<double> timeout) {
  timeout = CheckedTimeout(timeout, "timeout");
  State* s = Ready(self.ptr());
  if (s == nullptr) throw py::error_already_set();
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) throw py::error_already_set();
  Busy busy(s);  // signal handlers run between slices: h must stay valid
  Status error;
  uint64_t revision = 0;
  const bool changed = WaitInterruptibly(s, timeout, [&](nanoseconds slice) {
    Result<uint64_t> r = h->store->WaitForChange(after, slice);
    if (r.ok())
      revision = *r;
    else if (r.status().code() != StatusCode::kDeadlineExceeded)
      error = r.status();
    return r.ok() || !error.ok();
  });
  if (!error.ok()) ThrowStatus(error, ContextOf(s));
  if (!changed) return py::none();
  return py::int_(revision);
}

// ---- The user lock (re-entrant per thread; see _dict.py's Lock for the Python shape).
bool LockAcquire(py::handle self, bool blocking, std::optional<double> timeout) {
  timeout = CheckedTimeout(timeout, "timeout");
  State* s = Ready(self.ptr());
  if (s == nullptr) throw py::error_already_set();
  ThreadHandle* h = ForThread(s);
  if (h == nullptr) throw py::error_already_set();
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

// Every field the transport reported, from the one table (dict_status.h); a file mode stays a
// number (Python users write oct(mode)). Unknown fields are left out, never shown as zero.
py::dict StatusToDict(const DictStatus& status) {
  py::dict d;
  for (const StatusField& field : StatusFields()) {
    std::optional<StatusFieldValue> value = field.get(status);
    if (!value) continue;
    std::visit([&](const auto& v) { d[py::str(field.name.data(), field.name.size())] = v; },
               *value);
  }
  return d;
}

// Opens a remote dict through shmdict-bridge into `self` (shmdict.connect).
void Connect(py::handle self, const std::string& address, const std::string& name, bool mirror,
             std::optional<double> timeout, const std::string& token, const std::string& tls_ca,
             const std::string& tls_cert, const std::string& tls_key) {
  if (StateOf(self.ptr()) != nullptr) throw py::value_error("the dict is already open");
#ifdef SHMDICT_PYTHON_REMOTE
  const double seconds = CheckedTimeout(timeout, "timeout").value_or(kForeverSeconds);
  RemoteOptions options;
  options.address = address;
  options.dict = name;
  options.mirror = mirror;
  options.token = token;
  options.tls_ca = tls_ca;
  options.tls_cert = tls_cert;
  options.tls_key = tls_key;
  options.call_timeout = milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000)));
  options.open_timeout = options.call_timeout;
  std::optional<Result<std::unique_ptr<RemoteDict>>> remote;
  {
    py::gil_scoped_release unlocked;
    remote.emplace(RemoteDict::Open(options));
  }
  auto state = std::make_unique<State>();
  state->remote = true;
  state->primary = std::make_unique<ThreadHandle>();
  state->primary->remote = ValueOrThrow(std::move(*remote), ErrorContext{.remote = true});
  state->primary->store = state->primary->remote.get();
  state->name = name;
  state->mirror = mirror;
  state->address = address;
  state->call_timeout = seconds;
  state->primary_thread = PyThread_get_thread_ident();
  state->fork_generation = g_fork_generation.load(std::memory_order_relaxed);
  state->cache = PyDict_New();
  if (state->cache == nullptr) throw py::error_already_set();
  reinterpret_cast<CoreObject*>(self.ptr())->state = state.release();
#else
  (void)address, (void)name, (void)mirror, (void)timeout, (void)token, (void)tls_ca, (void)tls_cert,
      (void)tls_key;
  PyErr_SetString(PyExc_ImportError,
                  "shmdict.connect needs the bridge client: this shmdict was built without it "
                  "(rebuild with -DSHMDICT_BUILD_BRIDGE=ON, which needs gRPC)");
  throw py::error_already_set();
#endif
}

// A remote dict's status as the bridge reports it (one call), plus the mirror's state.
py::dict RemoteStatus(State* s, ThreadHandle& h) {
#ifdef SHMDICT_PYTHON_REMOTE
  auto& remote = static_cast<RemoteDict&>(*h.store);
  RemoteOptions options;
  options.address = s->address;
  options.dict = s->name;
  options.call_timeout = milliseconds(static_cast<int64_t>(std::ceil(s->call_timeout * 1000)));
  std::optional<Result<DictStatus>> status;
  {
    WithoutGil unlocked(s);
    status.emplace(RemoteCatalog(options).Inspect(s->name));
  }
  py::dict d = StatusToDict(ValueOrThrow(std::move(*status), ContextOf(s)));
  d["address"] = s->address;
  d["mirror"] = s->mirror;
  d["mirror_revision"] = s->mirror ? py::object(py::int_(remote.revision())) : py::none();
  d["mirror_connected"] = remote.mirror_connected();
  d["mirror_resyncs"] = remote.mirror_resyncs();
  return d;
#else
  (void)h;
  ThrowStatus(Status(StatusCode::kInternal, "dict '" + s->name + "' is not remote"));
#endif
}

void Close(py::handle self) {
  State* s = StateOf(self.ptr());
  if (s == nullptr || s->closed) return;
  if (s->busy_calls > 0) {
    throw py::value_error("dict '" + s->name + "' is in use by another thread: close it there");
  }
  SyncFork(s);
  bool locked_elsewhere = LockedByOtherThread(s->primary_thread, s->primary);
  for (auto& [thread, handle] : s->others) {
    locked_elsewhere = locked_elsewhere || LockedByOtherThread(thread, handle);
  }
  if (locked_elsewhere) {
    throw py::value_error("dict '" + s->name +
                          "': another thread holds its lock; release it there before close()");
  }
  // Closed before the GIL is released: other threads then see a closed dict, not a handle that
  // is going away.
  std::vector<std::unique_ptr<ThreadHandle>> handles = TakeHandles(s);
  s->closed = true;
  PyDict_Clear(s->cache);
  const Status first = CloseWithoutGil(std::move(handles));
  if (!first.ok()) ThrowStatus(first);
}

// ---- Watching: a stream with its own handle, so that it does not depend on which thread
// advances a generator, and so that a slow consumer costs only its own position in the log. A
// remote dict's watcher has its own Watch stream to the bridge, which resumes after the last
// revision it delivered when the connection breaks (RemoteDict::Watch).
class WatchStream {
 public:
  WatchStream(py::handle dict, uint64_t from_revision) {
    State* s = Ready(dict.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
    if (h == nullptr) throw py::error_already_set();
    context_ = ContextOf(s);
    if (s->remote) {
      watcher_ =
          ValueOrThrow(CallStore(s, h, [&](Store& d) { return d.Watch(from_revision); }), context_);
      return;
    }
    Options options;
    options.name = s->name;
    options.create_mode = CreateMode::kMustAttach;
    options.auto_unlink = false;
    options.background_compaction = false;  // a watcher never writes
    dict_ = std::make_unique<Dict>(ValueOrThrow(Dict::Open(options)));
    watcher_ = ValueOrThrow(dict_->Watch(from_revision));
  }

  // Returns (is_snapshot, snapshot_revision, snapshot_items, changes, revision), where changes
  // are (revision, op, key, value) with op 'set', 'delete' or 'clear'; None on timeout. A
  // snapshot, which the core delivers in chunks, is returned whole.
  py::object Next(py::handle owner, size_t max_changes, std::optional<double> timeout) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) throw py::value_error("a watch stream is being read by another thread");
    timeout = CheckedTimeout(timeout, "timeout");
    std::optional<ChangeBatch> batch;
    std::optional<ChangeBatch> snapshot;  // the chunks received so far
    Status error;
    const auto start = Clock::now();
    while (true) {
      nanoseconds slice = kSignalCheckInterval;
      if (timeout) {
        const auto left = std::chrono::duration_cast<nanoseconds>(
            std::chrono::duration<double>(*timeout) - (Clock::now() - start));
        slice = std::clamp(left, nanoseconds(0), slice);
      }
      {
        py::gil_scoped_release unlocked;
        Result<ChangeBatch> r = watcher_->Next(max_changes, slice);
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
      if (timeout && Clock::now() - start >= std::chrono::duration<double>(*timeout)) {
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

  uint64_t revision() const { return watcher_->revision(); }

 private:
  std::mutex mu_;  // one reader at a time; try-locked, never waited for with the GIL held
  ErrorContext context_;
  std::unique_ptr<Dict> dict_;        // local only
  std::unique_ptr<Watcher> watcher_;  // declared after dict_: destroyed before it
};

template <typename F, typename... Extra>
void AddMethod(py::object type, const char* name, F&& f, const Extra&... extra) {
  py::cpp_function method(std::forward<F>(f), py::name(name), py::is_method(type),
                          py::sibling(py::getattr(type, name, py::none())), extra...);
  py::setattr(type, name, method);
}

void DefineModule(py::module_& m) {
  m.doc() = "The C++ engine of the shmdict package (use shmdict, not this module).";
  pthread_atfork(nullptr, nullptr, OnForkInChild);

  g_error = PyErr_NewExceptionWithDoc("shmdict.Error", "Base of every shmdict error.",
                                      PyExc_Exception, nullptr);
  if (g_error == nullptr) throw py::error_already_set();
  m.add_object("Error", py::handle(g_error));
  for (ErrorClass& e : g_errors) {
    py::tuple bases = e.builtin != nullptr
                          ? py::make_tuple(py::handle(g_error), py::handle(e.builtin))
                          : py::make_tuple(py::handle(g_error));
    const std::string qualified = std::string("shmdict.") + e.name;
    e.cls = PyErr_NewException(qualified.c_str(), bases.ptr(), nullptr);
    if (e.cls == nullptr) throw py::error_already_set();
    m.add_object(e.name, py::handle(e.cls));
  }
  g_closed = PyErr_NewException(
      "shmdict.Closed", py::make_tuple(py::handle(g_error), py::handle(PyExc_ValueError)).ptr(),
      nullptr);
  if (g_closed == nullptr) throw py::error_already_set();
  m.add_object("Closed", py::handle(g_closed));
  PyObject* failed_precondition = nullptr;
  for (const ErrorClass& e : g_errors) {
    if (e.code == StatusCode::kFailedPrecondition) failed_precondition = e.cls;
  }
  g_wrong_type = PyErr_NewException(
      "shmdict.WrongType",
      py::make_tuple(py::handle(failed_precondition), py::handle(PyExc_TypeError)).ptr(), nullptr);
  if (g_wrong_type == nullptr) throw py::error_already_set();
  m.add_object("WrongType", py::handle(g_wrong_type));
  g_unavailable = PyErr_NewException(
      "shmdict.Unavailable",
      py::make_tuple(py::handle(g_error), py::handle(PyExc_ConnectionError)).ptr(), nullptr);
  if (g_unavailable == nullptr) throw py::error_already_set();
  m.add_object("Unavailable", py::handle(g_unavailable));
#ifdef SHMDICT_PYTHON_REMOTE
  m.attr("HAS_REMOTE") = true;
#else
  m.attr("HAS_REMOTE") = false;
#endif

  auto type = py::reinterpret_steal<py::object>(PyType_FromSpec(&g_spec));
  if (!type) throw py::error_already_set();
  type.attr("__module__") = "shmdict._core";
  m.add_object("DictBase", type);
  g_dict_type = reinterpret_cast<PyTypeObject*>(type.ptr());

  auto lock_type = py::reinterpret_steal<py::object>(PyType_FromSpec(&g_lock_spec));
  if (!lock_type) throw py::error_already_set();
  lock_type.attr("__module__") = "shmdict._core";
  m.add_object("LockBase", lock_type);

  AddMethod(type, "_open", &Open, py::arg("name"), py::arg("create"), py::arg("buffer_size"),
            py::arg("mode"), py::arg("auto_unlink"), py::arg("lock_timeout"));
  AddMethod(type, "_name", [](py::handle self) {
    if (Ready(self.ptr()) == nullptr) throw py::error_already_set();
    return StateOf(self.ptr())->name;
  });
  AddMethod(type, "_created", [](py::handle self) {
    if (Ready(self.ptr()) == nullptr) throw py::error_already_set();
    return StateOf(self.ptr())->created;
  });
  AddMethod(type, "get", &Get, py::arg("key"), py::arg("default") = py::none(),
            "d.get(key, default=None): the value, or default when the key is missing.");
  AddMethod(type, "_items", [](py::handle self) { return Entries(self, Part::kItems); });
  AddMethod(type, "_keys", [](py::handle self) { return Entries(self, Part::kKeys); });
  AddMethod(type, "_values", [](py::handle self) { return Entries(self, Part::kValues); });
  AddMethod(type, "_update", &Update);
  AddMethod(type, "_pop", &Pop);
  AddMethod(type, "popitem", &PopItem, "Removes and returns some (key, value); KeyError if empty.");
  AddMethod(type, "setdefault", &SetDefault, py::arg("key"), py::arg("default") = py::none(),
            "The existing value, or stores and returns default (atomically).");
  AddMethod(type, "increment", &Increment, py::arg("key"), py::arg("delta") = 1,
            "Adds delta to an int value (a missing key counts as 0), atomically across "
            "processes; returns the new value. WrongType (a TypeError) if the value is not an "
            "int, OutOfRange (an OverflowError) on int64 overflow.");
  AddMethod(type, "_compare_and_set", &CompareAndSet);
  AddMethod(type, "_compare_and_set_equal", &CompareAndSetEqual);
  AddMethod(type, "clear", &Clear, "Removes every key as one revision; returns it.");
  AddMethod(type, "_revision", [](py::handle self) {
    State* s = Ready(self.ptr());
    ThreadHandle* h = s == nullptr ? nullptr : ForThread(s);
    if (h == nullptr) throw py::error_already_set();
    return h->store->revision();  // remote: an atomic load, no call
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
    ThreadHandle& h = HandleOrThrow(self);
    State* s = StateOf(self.ptr());
    if (s->remote) return RemoteStatus(s, h);
    return StatusToDict(h.dict->GetStatus());
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
  AddMethod(type, "_lock_owned",
            [](py::handle self) { return HandleOrThrow(self).lock_depth > 0; });
  AddMethod(type, "_unlink", [](py::handle self) {
    ThreadHandle& h = HandleOrThrow(self);
    Status st = LocalDict(StateOf(self.ptr()), &h).Unlink();
    if (!st.ok()) ThrowStatus(st);
  });
  AddMethod(type, "_close", &Close);
  AddMethod(type, "_connect", &Connect, py::arg("address"), py::arg("name"), py::arg("mirror"),
            py::arg("timeout"), py::arg("token"), py::arg("tls_ca"), py::arg("tls_cert"),
            py::arg("tls_key"));
  AddMethod(type, "_closed", [](py::handle self) {
    State* s = StateOf(self.ptr());
    return s == nullptr || s->closed;
  });

  py::class_<WatchStream>(m, "WatchStream")
      .def(py::init<py::handle, uint64_t>())
      .def("next", &WatchStream::Next)
      .def_property_readonly("revision", &WatchStream::revision);

  m.def("unlink_by_name", [](const std::string& name) {
    Status st = Dict::UnlinkByName(name);
    if (!st.ok()) ThrowStatus(st);
  });
  m.def("inspect", [](const std::string& name) {
    return StatusToDict(ValueOrThrow(LocalCatalog().Inspect(name)));
  });
  m.def("list_names", []() { return ValueOrThrow(LocalCatalog().ListNames()); });
}

}  // namespace
}  // namespace shmdict::python

PYBIND11_MODULE(_core, m) { shmdict::python::DefineModule(m); }
