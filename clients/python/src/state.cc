#include "state.h"

#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "status.h"

namespace shmdict::python {

std::optional<double> CheckedTimeout(std::optional<double> seconds, const char* what) {
  if (!seconds) return std::nullopt;
  if (!(*seconds >= 0)) throw py::value_error(std::string(what) + " must be >= 0 seconds");
  if (*seconds > kForeverSeconds) return std::nullopt;
  return seconds;
}

namespace {

// Leaves a thread's handle open for good: its mappings stay, nothing is unlocked or unlinked.
void Leak(std::unique_ptr<ThreadHandle> h) {
  if (h == nullptr) return;
  if (h->guard) new LockGuard(std::move(*h->guard));  // never released by this process
  h->guard.reset();
  if (h->lease) (void)h->lease->Release().release();
}

class LocalBackend final : public Backend {
 public:
  explicit LocalBackend(SharedDict shared)
      : shared_(std::move(shared)), primary_thread_(PyThread_get_thread_ident()) {}

  ThreadHandle* ForThread() override {
    const unsigned long thread = PyThread_get_thread_ident();
    // The thread that opened the dict (or the first one after a fork) skips the table.
    if (thread == primary_thread_) {
      if (primary_ == nullptr) primary_ = Attach();
      return primary_.get();
    }
    const uint64_t thread_state = PyThreadState_GetID(PyThreadState_Get());
    auto it = others_.find(thread);
    if (it != others_.end() && it->second->thread_state_id == thread_state) {
      return it->second.get();
    }
    // A thread not seen before, or one that got an ended thread's identity (and takes over its
    // handle, as a lock it holds cannot be given back otherwise).
    if (it != others_.end()) it->second->thread_state_id = thread_state;
    ReleaseEndedThreads(thread);
    it = others_.find(thread);
    if (it != others_.end()) return it->second.get();
    std::unique_ptr<ThreadHandle> handle = Attach();
    if (handle == nullptr) return nullptr;
    handle->thread_state_id = thread_state;
    return others_.emplace(thread, std::move(handle)).first->second.get();
  }

  void ForgetParent() override {
    // Only the forking thread exists in the child, and a new thread of the child can get a dead
    // thread's identity: every entry goes. Their leases, destroyed here, are the parent's: the
    // SharedDict forgets their handles without using them. The parent's locks are not the
    // child's either (a LockGuard from before the fork releases nothing in the child).
    auto forget = [](std::unique_ptr<ThreadHandle>& h) {
      if (h == nullptr) return;
      if (h->guard) new LockGuard(std::move(*h->guard));
      h.reset();
    };
    forget(primary_);
    for (auto& [thread, handle] : others_) forget(handle);
    others_.clear();
    primary_thread_ = PyThread_get_thread_ident();
  }

  bool LockedByOtherThread() const override {
    const unsigned long me = PyThread_get_thread_ident();
    auto locked = [me](unsigned long thread, const std::unique_ptr<ThreadHandle>& h) {
      return h != nullptr && h->lock_depth > 0 && thread != me;
    };
    if (locked(primary_thread_, primary_)) return true;
    for (const auto& [thread, handle] : others_) {
      if (locked(thread, handle)) return true;
    }
    return false;
  }

  void LeakLockedByOtherThreads() override {
    const unsigned long me = PyThread_get_thread_ident();
    if (primary_ != nullptr && primary_->lock_depth > 0 && primary_thread_ != me) {
      Leak(std::move(primary_));
    }
    for (auto it = others_.begin(); it != others_.end();) {
      if (it->second != nullptr && it->second->lock_depth > 0 && it->first != me) {
        Leak(std::move(it->second));
        it = others_.erase(it);
      } else {
        ++it;
      }
    }
  }

  Status Close() override {
    std::vector<std::unique_ptr<ThreadHandle>> handles;
    for (auto& [thread, handle] : others_) {
      if (handle != nullptr) handles.push_back(std::move(handle));
    }
    others_.clear();
    if (primary_ != nullptr) handles.push_back(std::move(primary_));
    Status first_error;
    Py_BEGIN_ALLOW_THREADS;
    // Each guard is released before its handle goes back; the SharedDict closes the creator's
    // handle last (it may unlink).
    for (std::unique_ptr<ThreadHandle>& h : handles) {
      h->guard.reset();
      h.reset();
    }
    first_error = shared_.Close();
    Py_END_ALLOW_THREADS;
    return first_error;
  }

  bool calls_may_block() const override { return false; }
  std::optional<uint64_t> CacheRevision(ThreadHandle& h) override {
    return h.dict->published_revision();
  }
  std::unique_ptr<Watcher> CacheWatcher(ThreadHandle& h, uint64_t* from) override {
    *from = h.dict->revision();
    Result<std::unique_ptr<Watcher>> watcher = h.dict->Watch(*from);
    return watcher.ok() ? std::move(*watcher) : nullptr;
  }
  ErrorContext error_context(bool type_check) const override {
    return ErrorContext{.type_check = type_check};
  }

  Result<WatchSource> Watch(ThreadHandle&, uint64_t from_revision) override {
    // A handle of its own, outside the SharedDict: the stream keeps working after d.close(), and
    // it never takes the creator's handle (and with it the unlinking) out of the pool.
    Options options;
    options.name = shared_.name();
    options.create_mode = CreateMode::kMustAttach;
    options.auto_unlink = false;
    options.background_compaction = false;  // a watcher never writes
    Result<Dict> dict = Dict::Open(options);
    if (!dict.ok()) return dict.status();
    WatchSource source;
    source.dict = std::make_unique<Dict>(std::move(*dict));
    Result<std::unique_ptr<Watcher>> watcher = source.dict->Watch(from_revision);
    if (!watcher.ok()) return watcher.status();
    source.watcher = std::move(*watcher);
    return source;
  }

  py::dict StatusDict(State*, ThreadHandle& h) override {
    return StatusToDict(h.dict->GetStatus());
  }

 private:
  // Returns the leases of threads whose Python thread state is gone (the thread ended) to the
  // pool, but for `keep`'s and those holding the lock. The GIL keeps thread states from being
  // deleted meanwhile; one created by PyGILState_Ensure meanwhile is only prepended to the list.
  void ReleaseEndedThreads(unsigned long keep) {
    std::unordered_set<uint64_t> live;
    for (PyThreadState* t = PyInterpreterState_ThreadHead(PyInterpreterState_Get()); t != nullptr;
         t = PyThreadState_Next(t)) {
      live.insert(PyThreadState_GetID(t));
    }
    std::vector<std::unique_ptr<ThreadHandle>> ended;
    for (auto it = others_.begin(); it != others_.end();) {
      const ThreadHandle& h = *it->second;
      if (it->first != keep && h.lock_depth == 0 && !h.guard && !live.count(h.thread_state_id)) {
        ended.push_back(std::move(it->second));
        it = others_.erase(it);
      } else {
        ++it;
      }
    }
    if (ended.empty()) return;
    // A handle the pool does not keep is closed, which joins its snapshot builder: that may wait
    // for the writer lock held by a thread of this process that needs the GIL (see Close()).
    Py_BEGIN_ALLOW_THREADS;
    ended.clear();
    Py_END_ALLOW_THREADS;
  }

  std::unique_ptr<ThreadHandle> Attach() {
    Result<SharedDict::Lease> lease = shared_.Acquire();
    if (!lease.ok()) {
      SetStatusError(lease.status());
      return nullptr;
    }
    auto handle = std::make_unique<ThreadHandle>();
    handle->lease.emplace(std::move(*lease));
    handle->dict = &handle->lease->dict();
    handle->store = handle->dict;
    return handle;
  }

  SharedDict shared_;
  unsigned long primary_thread_;
  std::unique_ptr<ThreadHandle> primary_;
  std::unordered_map<unsigned long, std::unique_ptr<ThreadHandle>> others_;
};

}  // namespace

std::unique_ptr<Backend> MakeLocalBackend(SharedDict shared) {
  return std::make_unique<LocalBackend>(std::move(shared));
}

State::State(std::string name_in, bool created_in, std::unique_ptr<Backend> backend_in)
    : name(std::move(name_in)),
      created(created_in),
      backend(std::move(backend_in)),
      fork_count(SharedDict::ForkCount()) {}

State::~State() = default;

void Install(py::handle self, std::unique_ptr<State> state) {
  if (StateOf(self.ptr()) != nullptr) throw py::value_error("the dict is already open");
  reinterpret_cast<CoreObject*>(self.ptr())->state = state.release();
}

void SyncFork(State* s) {
  const uint64_t forks = SharedDict::ForkCount();
  if (s->fork_count == forks) return;
  s->backend->ForgetParent();
  // The cache's watcher belongs to the parent's handles too.
  s->cache.Reset();
  // The calls that were in progress ran on threads that were not forked.
  s->busy_calls = 0;
  s->fork_count = forks;
}

State* Ready(PyObject* self) {
  State* s = StateOf(self);
  if (s == nullptr || s->closed) {
    PyErr_Format(g_closed, "dict '%s' is closed", s == nullptr ? "" : s->name.c_str());
    return nullptr;
  }
  SyncFork(s);
  return s;
}

ThreadHandle* HandleFor(PyObject* self) {
  State* s = Ready(self);
  return s == nullptr ? nullptr : s->backend->ForThread();
}

ThreadHandle& HandleOrThrow(py::handle self) {
  ThreadHandle* h = HandleFor(self.ptr());
  if (h == nullptr) throw py::error_already_set();
  return *h;
}

Call CallOrThrow(py::handle self) {
  State* s = Ready(self.ptr());
  ThreadHandle* h = s == nullptr ? nullptr : s->backend->ForThread();
  if (h == nullptr) throw py::error_already_set();
  return Call{s, h};
}

Dict& LocalDict(const State* s, ThreadHandle* h) {
  if (h->dict == nullptr) {
    PyErr_Format(g_error, "dict '%s' is remote: this call needs a local dict", s->name.c_str());
    throw py::error_already_set();
  }
  return *h->dict;
}

void CloseState(py::handle self) {
  State* s = StateOf(self.ptr());
  if (s == nullptr || s->closed) return;
  if (s->busy_calls > 0) {
    throw py::value_error("dict '" + s->name + "' is in use by another thread: close it there");
  }
  SyncFork(s);
  if (s->backend->LockedByOtherThread()) {
    throw py::value_error("dict '" + s->name +
                          "': another thread holds its lock; release it there before close()");
  }
  // Closed before the GIL is released: other threads then see a closed dict, not a handle that
  // is going away.
  s->closed = true;
  s->cache.Reset();
  const Status first = s->backend->Close();
  if (!first.ok()) ThrowStatus(first);
}

}  // namespace shmdict::python
