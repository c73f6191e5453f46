#include "remote.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <utility>

#include "state.h"
#include "status.h"
#ifdef SHMDICT_PYTHON_REMOTE
#include "shmdict/remote_catalog.h"
#include "shmdict/remote_dict.h"
#endif

namespace shmdict::python {

#ifdef SHMDICT_PYTHON_REMOTE
namespace {

class RemoteBackend final : public Backend {
 public:
  RemoteBackend(std::unique_ptr<RemoteDict> remote, RemoteEndpoint endpoint, std::string name)
      : remote_(std::move(remote)), endpoint_(std::move(endpoint)), name_(std::move(name)) {
    handle_.store = remote_.get();
  }

  ThreadHandle* ForThread() override {
    if (remote_ == nullptr) {
      PyErr_Format(g_closed,
                   "remote dict '%s' was connected before fork(): call shmdict.connect() again "
                   "in the child",
                   name_.c_str());
      return nullptr;
    }
    return &handle_;
  }

  void ForgetParent() override {
    // Leaked: its gRPC threads are not in the child, and destroying it would join them.
    (void)remote_.release();
    handle_.store = nullptr;
  }

  bool LockedByOtherThread() const override { return false; }  // no lock remotely
  void LeakLockedByOtherThreads() override {}

  Status Close() override {
    std::unique_ptr<RemoteDict> remote = std::move(remote_);
    handle_.store = nullptr;
    Py_BEGIN_ALLOW_THREADS;
    remote.reset();  // stops its mirror: joins threads, so without the GIL
    Py_END_ALLOW_THREADS;
    return Status();
  }

  bool calls_may_block() const override { return true; }
  // Not the mirror's revision: that one starts over when the dict is deleted and created again,
  // and a cache filled at revision R of the old dict would pass for the new dict at R. The
  // mirror's generation never repeats.
  std::optional<uint64_t> CacheRevision(ThreadHandle&) override {
    if (endpoint_.mirror) return remote_->mirror_generation();
    return std::nullopt;
  }
  // A mirror tells only that its contents moved: every move empties the cache.
  std::unique_ptr<Watcher> CacheWatcher(ThreadHandle&, uint64_t*) override { return nullptr; }
  ErrorContext error_context(bool type_check) const override {
    return ErrorContext{.type_check = type_check, .remote = true};
  }

  Result<WatchSource> Watch(ThreadHandle& h, uint64_t from_revision) override {
    // Its own Watch stream to the bridge, which resumes after the last revision it delivered
    // when the connection breaks (RemoteDict::Watch).
    Result<std::unique_ptr<Watcher>> watcher = h.store->Watch(from_revision);
    if (!watcher.ok()) return watcher.status();
    WatchSource source;
    source.watcher = std::move(*watcher);
    return source;
  }

  py::dict StatusDict(State* s, ThreadHandle&) override {
    return RemoteStatus(s, *remote_, endpoint_);
  }

 private:
  std::unique_ptr<RemoteDict> remote_;
  const RemoteEndpoint endpoint_;
  const std::string name_;
  ThreadHandle handle_;  // every thread's
};

}  // namespace
#endif

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
  options.call_timeout = std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000)));
  options.open_timeout = options.call_timeout;
  std::optional<Result<std::unique_ptr<RemoteDict>>> remote;
  {
    py::gil_scoped_release unlocked;
    remote.emplace(RemoteDict::Open(options));
  }
  std::unique_ptr<RemoteDict> opened =
      ValueOrThrow(std::move(*remote), ErrorContext{.remote = true});
  RemoteEndpoint endpoint{
      .address = address, .mirror = mirror, .catalog = std::make_shared<RemoteCatalog>(options)};
  Install(self, std::make_unique<State>(
                    name, /*created=*/false,
                    std::make_unique<RemoteBackend>(std::move(opened), std::move(endpoint), name)));
#else
  (void)address, (void)name, (void)mirror, (void)timeout, (void)token, (void)tls_ca, (void)tls_cert,
      (void)tls_key;
  PyErr_SetString(PyExc_ImportError,
                  "shmdict.connect needs the bridge client: this shmdict was built without it. "
                  "Install gRPC (Debian: apt install libgrpc++-dev protobuf-compiler-grpc) and "
                  "reinstall (pip install --no-build-isolation clients/python), or build with "
                  "CMake's -DSHMDICT_BUILD_BRIDGE=ON");
  throw py::error_already_set();
#endif
}

}  // namespace shmdict::python
