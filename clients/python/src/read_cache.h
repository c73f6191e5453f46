// ReadCache: one dict object's decoded values by key (State::cache), so that reading a key that
// did not change costs one atomic load, a Python dict lookup and, for a list or dict value, a copy
// of its containers, instead of copying the bytes out of shared memory and decoding them.
//
// Validity. The cache describes the dict at revision(): each entry holds its key's value at that
// revision or later. When the published revision moves, Sync learns which keys changed from a
// Watcher of the cache's own (local dicts), which replays the log from revision() on, and drops
// only those entries: a value stays cached until that key changes, whatever else is written. It
// drops every entry when it cannot know: the log no longer reaches back (the watcher would start
// with a snapshot), more than kMaxCatchUpRevisions passed (replaying them would cost more than
// decoding again), a clear, a fork, a RemoteDict (its mirror tells only that something changed),
// a watcher that cannot be opened (tried again every kWatcherRetryMoves moves, since what stopped
// it, such as running out of descriptors or mappings, may pass). A dict unlinked and created again
// under the same name is another dict: this handle keeps reading the one it mapped, and so does its
// cache.
//
// Mutable values. A list or dict value is cached decoded and every read returns a new copy of its
// lists and dicts (at every level; the leaves, which are immutable, are shared), so a caller that
// mutates what it read never changes what the next read returns: the same contract as decoding
// each time, at the cost of one allocation and an incref per element instead of a full decode.
// Only trees the copy can make independent are cached: dicts, lists, tuples (of immutable
// elements), None, bool, int, float, str and bytes, which covers every JSON value. Any other
// decoded object (an arbitrary pickled class, a numpy array, a nested Dict) is decoded on every
// read, since its mutability is unknown.
//
// Bounds. At most max_keys entries and max_bytes bytes (kDefaultMaxKeys, kDefaultMaxBytes;
// _set_read_cache_limits changes them per dict object), an entry's bytes estimated as its
// encoded value plus 128, plus 40 per object of a decoded list or dict (a pointer and a small
// int: a JSON list of small ints decodes to ~6x its bytes). An entry over a quarter of max_bytes
// is never cached. An insertion that would pass a bound empties the cache first (not LRU:
// constant bookkeeping, and a workload cycling over more keys than the bound gains nothing from
// LRU either).
//
// Thread-safety: needs the GIL (every member). Lifetime: owned by its State; the watcher maps the
// dict itself, so it stays safe to destroy after the handles closed.
#ifndef SHMDICT_PYTHON_READ_CACHE_H_
#define SHMDICT_PYTHON_READ_CACHE_H_

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "shmdict/store.h"
#include "shmdict/value.h"

namespace shmdict::python {

class State;
struct ThreadHandle;

inline constexpr Py_ssize_t kDefaultMaxKeys = 8192;
inline constexpr size_t kDefaultMaxBytes = size_t{256} << 20;
// A larger lag is caught up by starting over: the cache is emptied and a new watcher starts now.
inline constexpr uint64_t kMaxCatchUpRevisions = 4096;
// After a watcher failed to open, this many moves of the revision drop the whole cache before
// opening one is tried again: each try costs a mapping, so not on every move.
inline constexpr uint32_t kWatcherRetryMoves = 64;

class ReadCache {
 public:
  ReadCache();  // throws py::error_already_set when Python is out of memory
  ~ReadCache();
  ReadCache(const ReadCache&) = delete;
  ReadCache& operator=(const ReadCache&) = delete;

  // Makes the cache describe `published` (the backend's CacheRevision, read after `h` was
  // obtained) or a later revision. Never raises.
  void Sync(State* s, ThreadHandle& h, uint64_t published) {
    if (published != revision_) SyncSlow(s, h, published);
  }

  // The cached value of `key` (a new reference; a fresh copy for lists and dicts unless
  // `shared`), or nullptr: a miss without an exception, or an error (out of memory) with one.
  PyObject* Get(PyObject* key, bool shared = false);
  // -1 with an exception, 0 or 1.
  int Contains(PyObject* key);

  // Identifies the cache's contents: it changes whenever entries are dropped, the revision
  // moves or this process writes a key (Forget). A reader takes it before reading the core and
  // passes it to Keep, so that a value read before Python code ran (decoding does) is not cached
  // after another thread moved the cache past a change of that key or wrote the key itself (a
  // remote mirror may not have moved yet, and the write's own Forget found nothing to drop).
  uint64_t epoch() const { return epoch_; }
  // Keeps `decoded` (a reference the call takes over), read from the core after the cache had
  // `epoch`, when it is of a cacheable shape and within the bounds, and returns what the reader
  // gets: `decoded` itself, or a copy of it when the cache keeps it, it is a list or dict and
  // not `shared`. Never raises: an error (out of memory) leaves `decoded` uncached and returns it.
  PyObject* Keep(uint64_t epoch, PyObject* key, PyObject* decoded, size_t encoded_bytes,
                 bool shared = false);
  // Drops `key`'s entry and changes the epoch (this process wrote the key).
  void Forget(PyObject* key);
  // Drops every entry and the watcher (close, fork: the watcher belongs to the parent's handles).
  void Reset();

  void SetLimits(Py_ssize_t max_keys, size_t max_bytes);
  Py_ssize_t size() const { return PyDict_GET_SIZE(entries_); }
  size_t bytes() const { return bytes_; }
  uint64_t revision() const { return revision_; }
  Py_ssize_t max_keys() const { return max_keys_; }
  size_t max_bytes() const { return max_bytes_; }

 private:
  void SyncSlow(State* s, ThreadHandle& h, uint64_t published);
  // Empties the cache and starts a watcher at the handle's revision; without one (remote, or
  // the watcher cannot be opened) the cache describes `published`.
  void Restart(State* s, ThreadHandle& h, uint64_t published);
  // Applies one batch of the watcher; false when it cannot (a snapshot: the log moved on).
  bool Apply(const ChangeBatch& batch);
  // Adds the entry; false when it was not added.
  bool Put(PyObject* key, PyObject* decoded, size_t encoded_bytes);
  // Drops `key`'s entry, if any, keeping the epoch.
  void Remove(PyObject* key);
  void ForgetEncoded(std::string_view encoded_key);
  void DropEntries();

  PyObject* entries_;  // key -> decoded value
  PyObject* sizes_;    // key -> int: the bytes counted for it
  size_t bytes_ = 0;
  uint64_t revision_ = 0;
  uint64_t epoch_ = 0;
  Py_ssize_t max_keys_ = kDefaultMaxKeys;
  size_t max_bytes_ = kDefaultMaxBytes;
  std::unique_ptr<Watcher> watcher_;
  // Moves left before opening a watcher is tried again; 0 while none failed. Until then every
  // move drops the cache.
  uint32_t watcher_retry_in_ = 0;
};

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_READ_CACHE_H_
