// The state of one shmdict._core.DictBase object: its backend (where each thread gets a handle),
// its read cache, and the bookkeeping that keeps handles valid across GIL releases and forks.
//
// Threads. A core Dict handle is thread-compatible only, and blocking calls (writes waiting for
// the cross-process lock, waits, Lock) must release the GIL. So each Python thread that uses a
// local dict keeps its own handle, leased from the dict's SharedDict (shmdict/shared_dict.h); no
// handle is ever used by two threads, and the GIL guards the table of leases and the read cache.
// A thread keeps its lease (rather than leasing per call) because `with d.lock:` holds the
// writer lock through that thread's handle, which gives it threading.Lock's meaning: other
// threads' writes wait for it like other processes' do. The leases of threads that ended go back
// to the pool when a thread not seen before uses the dict, so a program that starts threads for
// good (an asyncio notifier, a thread pool replacing its workers) keeps as many handles as it
// has live threads, plus the pool's idle ones; a dead thread's lease that holds the lock stays.
//
// Remote dicts (shmdict.connect, when built with the bridge). A RemoteDict is thread-safe, so all
// threads share its one handle, and calls release the GIL: they may wait on the network. It
// cannot cross fork() (gRPC's threads do not), so a forked child must connect again.
//
// Both kinds are a Backend; every operation goes through `Store`, the interface both handles
// implement, so local and remote share the code paths; only the local hot reads (d[k], `in`) call
// the Dict directly (non-virtual, it is final).
//
// Fork. A forked child never uses its parent's handles (SharedDict's rule) nor this module's
// bookkeeping of the parent's locks and calls in progress, which SyncFork drops.
//
// Rule for every caller: no ThreadHandle pointer or reference is held across a call that may run
// Python code (encoding a pickled key or value, decoding one): that code may use the same Dict on
// the same thread, or close it. Encoded keys and values are locals for the same reason (short ones
// fit in std::string's inline buffer, so this costs no allocation). Blocking calls, which must
// keep their handle across signal handlers, mark the dict Busy instead.
//
// Everything here needs the GIL unless it says otherwise.
#ifndef SHMDICT_PYTHON_STATE_H_
#define SHMDICT_PYTHON_STATE_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "errors.h"
#include "read_cache.h"
#include "shmdict/dict.h"
#include "shmdict/shared_dict.h"
#include "shmdict/store.h"

namespace shmdict::python {

// Timeouts beyond this many seconds (100 years; inf included) mean "forever": they would
// overflow the int64 nanosecond and millisecond counts of std::chrono.
inline constexpr double kForeverSeconds = 100.0 * 365 * 24 * 3600;

// A timeout argument in seconds: nullopt (forever) for None, inf or beyond kForeverSeconds.
// Throws ValueError for negative values and NaN.
std::optional<double> CheckedTimeout(std::optional<double> seconds, const char* what);

// One thread's handle of a dict.
struct ThreadHandle {
  Store* store = nullptr;                  // the local lease's Dict, or the shared RemoteDict
  Dict* dict = nullptr;                    // local only: the hot reads and the user lock
  std::optional<SharedDict::Lease> lease;  // local only: owns *dict
  std::optional<LockGuard> guard;          // the user lock, taken by this thread
  int lock_depth = 0;                      // re-entrant acquisitions by this thread
  uint64_t thread_state_id = 0;            // PyThreadState_GetID of the thread that uses it
};

// An owned Watcher with whatever keeps it working (a local watcher's own handle).
struct WatchSource {
  std::unique_ptr<Dict> dict;  // local only
  std::unique_ptr<Watcher> watcher;
};

class State;

// Where the threads of one dict get their handles: a local dict (state.cc) or a remote one
// (remote.cc).
class Backend {
 public:
  virtual ~Backend() = default;
  // The calling thread's handle, attached on its first use; nullptr with a Python exception set.
  virtual ThreadHandle* ForThread() = 0;
  // In a forked child, before anything else: leaves the parent's handles and locks alone for good.
  virtual void ForgetParent() = 0;
  // True when a thread other than the caller holds the user lock.
  virtual bool LockedByOtherThread() const = 0;
  // Dealloc: a lock held by another thread may only be released there, so it stays held, with
  // its handle, until this process exits (other processes then see the holder gone).
  virtual void LeakLockedByOtherThreads() = 0;
  // Takes every handle out and closes them without the GIL (the core's Close joins the
  // snapshot builder, which may wait for the writer lock held by another thread of this
  // process, and that thread may need the GIL to release it). Returns the first error.
  virtual Status Close() = 0;
  // Calls may wait on the network: release the GIL around each.
  virtual bool calls_may_block() const = 0;
  // The revision the read cache follows (after `h` caught up): a local dict's published revision
  // (one atomic load), a mirror's generation (RemoteDict::mirror_generation: its revision starts
  // over when the dict is replaced, the generation never repeats); nullopt when reads each ask the
  // bridge (no cache). The cache compares it for equality; it orders it only with a CacheWatcher.
  virtual std::optional<uint64_t> CacheRevision(ThreadHandle& h) = 0;
  // A watcher for the read cache, on `h`'s dict, starting after *from (set to the handle's
  // revision after catching up); nullptr when the backend cannot tell which keys changed (remote).
  virtual std::unique_ptr<Watcher> CacheWatcher(ThreadHandle& h, uint64_t* from) = 0;
  virtual ErrorContext error_context(bool type_check = false) const = 0;
  // A watcher of its own: it does not depend on which thread advances a generator, and a slow
  // consumer costs only its own position in the log.
  virtual Result<WatchSource> Watch(ThreadHandle& h, uint64_t from_revision) = 0;
  // d.status(): the status fields as a dict (status.cc).
  virtual py::dict StatusDict(State* s, ThreadHandle& h) = 0;
};

// A local dict's backend: a SharedDict, and a lease per thread that used the dict.
std::unique_ptr<Backend> MakeLocalBackend(SharedDict shared);

class State {
 public:
  State(std::string name, bool created, std::unique_ptr<Backend> backend);
  ~State();

  const std::string name;
  const bool created;  // the first handle created the dict
  const std::unique_ptr<Backend> backend;
  ReadCache cache;  // decoded values by key (read_cache.h)
  // Calls that use a handle across a GIL release or a signal handler; close() refuses meanwhile.
  int busy_calls = 0;
  bool closed = false;
  uint64_t fork_count;  // SharedDict::ForkCount() the handles belong to
};

struct CoreObject {
  PyObject_HEAD State* state;
};

inline State* StateOf(PyObject* self) { return reinterpret_cast<CoreObject*>(self)->state; }

// Makes `state` the object's (it must have none: "the dict is already open" otherwise).
void Install(py::handle self, std::unique_ptr<State> state);

// In a forked child, first thing: see Backend::ForgetParent.
void SyncFork(State* s);

// The object's state when it is open (after SyncFork); nullptr with Closed set if not.
State* Ready(PyObject* self);

// The handle to use for one call, or nullptr with an exception set.
ThreadHandle* HandleFor(PyObject* self);
ThreadHandle& HandleOrThrow(py::handle self);

// Ready and ForThread together, for calls that throw.
struct Call {
  State* s;
  ThreadHandle* h;
};
Call CallOrThrow(py::handle self);

// The local Dict behind a handle; shmdict.Error for a remote dict (Python's RemoteDict does not
// offer the calls that need it).
Dict& LocalDict(const State* s, ThreadHandle* h);

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
// without it when calls may block. Marks the dict busy meanwhile.
template <typename F>
auto CallStore(State* s, ThreadHandle* h, F&& f) -> decltype(f(*h->store)) {
  if (!s->backend->calls_may_block()) return f(*h->store);
  WithoutGil unlocked(s);
  return f(*h->store);
}

// Closes the object (d.close()): refuses while a call is in progress or another thread holds the
// lock (ValueError); raises the first close error.
void CloseState(py::handle self);

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_STATE_H_
