// SharedDict: one dict's handles for every thread of a process — a thread-safe owner of
// thread-compatible Dict handles.
//
// A Dict handle serves one thread at a time (dict.h), and opening one costs tens of microseconds.
// A server whose calls arrive on a pool of threads (the bridge) and a binding whose users start
// threads at will (Python) both need "a handle of this dict, for this thread, now". SharedDict
// keeps the dict's handles: Acquire() leases one (an idle one, or a newly attached one), the lease
// returns it when destroyed, and at most `max_idle_handles` idle handles are kept (the rest are
// closed).
//
// Why leases and not a handle per thread: a server's threads come and go with its thread pool,
// and a handle per thread would grow with every thread ever seen; a lease ties a handle to a call
// and the idle cap bounds what is kept. A caller that needs a thread to keep its handle across
// calls (Python: a thread's `with d.lock:` holds the writer lock through that handle, and the
// lock's recursion is per handle) keeps the lease for that thread; the pool is the same.
//
// The handle that Open() opened (the "first" handle: when it created the dict, the one whose
// Close() unlinks it under Options::auto_unlink) is never closed because of the cap; Close()
// closes it after every idle handle, and it goes to the first Acquire().
//
// Replaced dicts: every handle the pool attaches later must read the dict the first one read. A
// dict unlinked and created again under the same name (Dict::incarnation) is refused: Acquire()
// then fails with kAborted, and the owner should open a new SharedDict.
//
// Fork: a child made by fork() never uses a handle of its parent (another parent thread may have
// been inside a call on it; the child has none of the parent's threads or locks). At the fork the
// child's pool forgets its idle handles without closing them (their mappings stay; they are
// neither used nor unlinked), and a lease taken before the fork is forgotten the same way when it
// is destroyed in the child. The child's Acquire() attaches new handles by name, so it fails with
// kNotFound if the dict's name was unlinked meanwhile. auto_unlink stays with the parent.
//
// Thread-safety: every member of SharedDict may be called from any thread concurrently (moving
// or destroying it excepted). A Lease is thread-compatible: one thread at a time uses it and its
// Dict; it may be destroyed on another thread than the one that acquired it, but a LockGuard taken
// through it must be released before (dict.h).
//
// Lifetime: a Lease may outlive its SharedDict (it keeps the pool alive); a handle returned after
// Close() or destruction of the SharedDict is closed on return. Destroying a SharedDict closes it.
#ifndef SHMDICT_SHARED_DICT_H_
#define SHMDICT_SHARED_DICT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "shmdict/dict.h"
#include "shmdict/status.h"

namespace shmdict {

namespace internal {
struct HandlePool;
}  // namespace internal

class SharedDict {
 public:
  // The bridge's historical cap: enough idle handles for a burst of concurrent calls on one dict
  // without keeping one per thread the server ever ran.
  static constexpr size_t kDefaultMaxIdleHandles = 8;

  // Opens the first handle with `options` (create or attach, as options.create_mode says); later
  // handles attach to the same dict (kMustAttach, never auto_unlink). Errors: Dict::Open's.
  static Result<SharedDict> Open(const Options& options,
                                 size_t max_idle_handles = kDefaultMaxIdleHandles);

  SharedDict(SharedDict&& other) noexcept;
  SharedDict& operator=(SharedDict&& other) noexcept;
  SharedDict(const SharedDict&) = delete;
  SharedDict& operator=(const SharedDict&) = delete;
  ~SharedDict();  // Close(), its error ignored

  // One handle, used by one thread at a time until the lease is destroyed (then it goes back to
  // the pool, or is closed when the pool is full or closed). Movable.
  class Lease {
   public:
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    Dict& operator*() const { return *dict_; }
    Dict* operator->() const { return dict_.get(); }
    Dict& dict() const { return *dict_; }
    // Takes the handle out of the pool for good: the caller owns it (and, if it was the first
    // handle of a dict it created with auto_unlink, closing it unlinks the dict). A watch stream
    // does this: its watcher fails once its handle closes, so the handle lives as long as it.
    std::unique_ptr<Dict> Release() { return std::move(dict_); }

   private:
    friend class SharedDict;
    Lease(std::shared_ptr<internal::HandlePool> pool, std::unique_ptr<Dict> dict, bool first,
          uint64_t fork_count);
    void Return();
    std::shared_ptr<internal::HandlePool> pool_;
    std::unique_ptr<Dict> dict_;
    bool first_ = false;       // the handle Open() opened
    uint64_t fork_count_ = 0;  // ForkCount() when it was leased
  };

  // A handle for the calling thread: the first handle or an idle one if there is one, else a new
  // one attached by name. Errors: kFailedPrecondition after Close(); kAborted when the dict now
  // under the name is not the one this SharedDict opened (unlinked and created again); Dict::Open's
  // errors otherwise (kNotFound when the name was unlinked).
  Result<Lease> Acquire();

  // Closes the idle handles, then the first handle (which unlinks the dict if it created it with
  // auto_unlink), unless it is leased: then it is closed when its lease returns it. Later Acquire()
  // calls fail; leases still out close their handle on return. Returns the first close error.
  // Idempotent.
  Status Close();

  const std::string& name() const;
  // True if the first handle created the dict.
  bool created() const;
  // The first handle's Dict::incarnation(): compare with Dict::IncarnationOf(name()) to notice a
  // dict unlinked or replaced since.
  uint64_t incarnation() const;
  size_t max_idle_handles() const;
  // The handles the pool holds and no lease has (the first handle included when it is idle).
  size_t idle_handles() const;

  // How many fork()s made this process, counted from its ancestor's first call to ForkCount() or
  // Open() (0 there). A caller that keeps leases in a table of its own (one per thread) compares
  // it across calls to drop that table in a child: its entries belong to the parent's threads.
  // Cheap (an atomic load after the first call); thread-safe.
  static uint64_t ForkCount();

 private:
  explicit SharedDict(std::shared_ptr<internal::HandlePool> pool) : pool_(std::move(pool)) {}
  std::shared_ptr<internal::HandlePool> pool_;
};

}  // namespace shmdict

#endif  // SHMDICT_SHARED_DICT_H_
