#include "shmdict/shared_dict.h"

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace shmdict {
namespace internal {

// The state every SharedDict and Lease of one dict share.
struct HandlePool {
  // Constant after Open.
  Options attach_options;  // kMustAttach, no auto_unlink: how later handles attach
  std::string name;
  bool created = false;
  uint64_t incarnation = 0;
  size_t max_idle = 0;

  mutable std::mutex mu;  // guards what follows; never held across a Dict call
  bool closed = false;
  std::unique_ptr<Dict> first;              // the handle Open opened, when not leased
  std::vector<std::unique_ptr<Dict>> idle;  // never more than max_idle
  uint64_t fork_count = 0;                  // ForkCount() the handles above belong to
};

namespace {

// ---- Fork. Every live pool's mutex is held across fork() by the prepare handler, so that the
// child finds each pool consistent (no thread of the parent was halfway through a push or pop)
// and can forget its handles before any thread of the child runs.
std::mutex live_pools_mu;                     // held from prepare to parent/child
std::set<HandlePool*>* live_pools = nullptr;  // guarded by live_pools_mu; never freed
std::atomic<uint64_t> fork_count{0};

void BeforeFork() {
  live_pools_mu.lock();
  for (HandlePool* pool : *live_pools) pool->mu.lock();
}

void AfterForkInParent() {
  for (HandlePool* pool : *live_pools) pool->mu.unlock();
  live_pools_mu.unlock();
}

void AfterForkInChild() {
  const uint64_t count = fork_count.fetch_add(1, std::memory_order_relaxed) + 1;
  for (HandlePool* pool : *live_pools) {
    // Leaked, not closed: closing would join a builder thread the child does not have, and the
    // creator's handle would unlink the parent's dict.
    (void)pool->first.release();
    for (std::unique_ptr<Dict>& handle : pool->idle) (void)handle.release();
    pool->idle.clear();
    pool->fork_count = count;
    pool->mu.unlock();
  }
  live_pools_mu.unlock();
}

// Installed on first use of either, so that a process counts its forks even before (or without)
// opening a SharedDict: ForkCount() serves callers with tables of their own.
void InstallForkHandlers() {
  static const bool installed = [] {
    live_pools = new std::set<HandlePool*>();
    pthread_atfork(BeforeFork, AfterForkInParent, AfterForkInChild);
    return true;
  }();
  (void)installed;
}

void Register(HandlePool* pool) {
  InstallForkHandlers();
  std::lock_guard lock(live_pools_mu);
  live_pools->insert(pool);
}

void Unregister(HandlePool* pool) {
  std::lock_guard lock(live_pools_mu);
  live_pools->erase(pool);
}

// Closes handles taken out of a pool (outside its mutex: Close joins the snapshot builder).
Status CloseAll(std::vector<std::unique_ptr<Dict>> handles) {
  Status first_error;
  for (std::unique_ptr<Dict>& handle : handles) {
    Status st = handle->Close();
    if (first_error.ok() && !st.ok()) first_error = st;
  }
  return first_error;
}

}  // namespace
}  // namespace internal

using internal::HandlePool;

Result<SharedDict> SharedDict::Open(const Options& options, size_t max_idle_handles) {
  Result<Dict> opened = Dict::Open(options);
  if (!opened.ok()) return opened.status();
  // The pool is made before it is registered, and unregistered before it is freed (custom
  // deleter), so that the fork handlers only ever see whole pools.
  std::shared_ptr<HandlePool> pool(new HandlePool(), [](HandlePool* p) {
    internal::Unregister(p);
    // Handles still in the pool when the last owner goes: the SharedDict was closed, or this
    // is a forked child that leaked them already.
    std::vector<std::unique_ptr<Dict>> handles = std::move(p->idle);
    if (p->first) handles.push_back(std::move(p->first));
    internal::CloseAll(std::move(handles)).IgnoreError();
    delete p;
  });
  pool->name = opened->name();
  pool->created = opened->created();
  pool->incarnation = opened->incarnation();
  pool->max_idle = max_idle_handles;
  pool->attach_options = options;
  pool->attach_options.name = pool->name;
  pool->attach_options.create_mode = CreateMode::kMustAttach;
  pool->attach_options.auto_unlink = false;
  pool->first = std::make_unique<Dict>(std::move(*opened));
  pool->fork_count = ForkCount();
  internal::Register(pool.get());
  return SharedDict(std::move(pool));
}

SharedDict::SharedDict(SharedDict&& other) noexcept = default;

SharedDict& SharedDict::operator=(SharedDict&& other) noexcept {
  if (this != &other) {
    if (pool_) Close().IgnoreError();
    pool_ = std::move(other.pool_);
  }
  return *this;
}

SharedDict::~SharedDict() {
  if (pool_) Close().IgnoreError();
}

uint64_t SharedDict::ForkCount() {
  internal::InstallForkHandlers();
  return internal::fork_count.load(std::memory_order_relaxed);
}

Result<SharedDict::Lease> SharedDict::Acquire() {
  HandlePool& pool = *pool_;
  {
    std::lock_guard lock(pool.mu);
    if (pool.closed) {
      return Status(StatusCode::kFailedPrecondition,
                    "dict " + QuoteForMessage(pool.name) + ": its shared handle is closed");
    }
    if (pool.first) return Lease(pool_, std::move(pool.first), /*first=*/true, pool.fork_count);
    if (!pool.idle.empty()) {
      std::unique_ptr<Dict> handle = std::move(pool.idle.back());
      pool.idle.pop_back();
      return Lease(pool_, std::move(handle), /*first=*/false, pool.fork_count);
    }
  }
  // Attaching takes tens of microseconds and may wait on the file system: not under the mutex.
  // A fork meanwhile makes this handle the child's own (it was opened by the forking thread) or
  // leaves it with a thread the child does not have.
  const uint64_t fork_count_before = ForkCount();
  Result<Dict> opened = Dict::Open(pool.attach_options);
  if (!opened.ok()) return opened.status();
  auto handle = std::make_unique<Dict>(std::move(*opened));
  if (handle->incarnation() != pool.incarnation) {
    handle->Close().IgnoreError();  // attached, never created: closing unlinks nothing
    return Status(StatusCode::kAborted, "dict " + QuoteForMessage(pool.name) +
                                            " was deleted and created again since it was "
                                            "opened: open it again");
  }
  return Lease(pool_, std::move(handle), /*first=*/false, fork_count_before);
}

Status SharedDict::Close() {
  if (!pool_) return Status();
  std::vector<std::unique_ptr<Dict>> handles;
  {
    std::lock_guard lock(pool_->mu);
    pool_->closed = true;
    handles = std::move(pool_->idle);
    pool_->idle.clear();
    if (pool_->first) handles.push_back(std::move(pool_->first));  // last: it may unlink
  }
  return internal::CloseAll(std::move(handles));
}

const std::string& SharedDict::name() const { return pool_->name; }
bool SharedDict::created() const { return pool_->created; }
uint64_t SharedDict::incarnation() const { return pool_->incarnation; }
size_t SharedDict::max_idle_handles() const { return pool_->max_idle; }

size_t SharedDict::idle_handles() const {
  std::lock_guard lock(pool_->mu);
  return pool_->idle.size() + (pool_->first ? 1 : 0);
}

SharedDict::Lease::Lease(std::shared_ptr<HandlePool> pool, std::unique_ptr<Dict> dict, bool first,
                         uint64_t fork_count)
    : pool_(std::move(pool)), dict_(std::move(dict)), first_(first), fork_count_(fork_count) {}

SharedDict::Lease& SharedDict::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Return();
    pool_ = std::move(other.pool_);
    dict_ = std::move(other.dict_);
    first_ = other.first_;
    fork_count_ = other.fork_count_;
  }
  return *this;
}

SharedDict::Lease::~Lease() { Return(); }

void SharedDict::Lease::Return() {
  if (!dict_ || !pool_) return;
  std::unique_ptr<Dict> to_close;
  {
    std::lock_guard lock(pool_->mu);
    if (fork_count_ != pool_->fork_count) {
      // Leased before a fork: in the child it is the parent's handle (see the header).
      (void)dict_.release();
    } else if (pool_->closed) {
      to_close = std::move(dict_);
    } else if (first_) {
      pool_->first = std::move(dict_);
    } else if (pool_->idle.size() < pool_->max_idle) {
      pool_->idle.push_back(std::move(dict_));
    } else {
      to_close = std::move(dict_);
    }
  }
  if (to_close) to_close->Close().IgnoreError();  // a destructor has no caller to report to
  pool_.reset();
}

}  // namespace shmdict
