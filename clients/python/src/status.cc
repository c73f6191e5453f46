#include "status.h"

#include <chrono>
#include <cmath>
#include <optional>

#include "errors.h"
#include "state.h"
#ifdef SHMDICT_PYTHON_REMOTE
#include "shmdict/remote_dict.h"
#endif

namespace shmdict::python {

py::dict StatusToDict(const DictStatus& st) {
  py::dict d;
  d["name"] = st.name;
  d["layout_version"] = st.layout_version;
  d["revision"] = st.revision;
  d["entries"] = st.entries;
  d["log_capacity"] = st.log_capacity;
  d["log_used"] = st.log_used;
  d["snapshot_generation"] = st.snapshot_generation;
  d["snapshot_revision"] = st.snapshot_revision;
  d["snapshots_built"] = st.snapshots_built;
  d["lock_held"] = st.lock_held;
  d["lock_holder_pid"] = st.lock_holder_pid;
  d["lock_holder_pid_namespace"] = st.lock_holder_pid_namespace;
  d["lock_holder_in_this_pid_namespace"] = st.lock_holder_in_this_pid_namespace;
  d["lock_recoveries"] = st.lock_recoveries;
  d["creator_pid"] = st.creator_pid;
  d["creator_alive"] = st.creator_alive;
  d["attached"] = st.attached;
  d["segment_bytes"] = st.segment_bytes;
  d["mode"] = static_cast<unsigned>(st.mode);
  return d;
}

#ifdef SHMDICT_PYTHON_REMOTE
py::dict RemoteStatus(State* s, RemoteDict& remote, const RemoteEndpoint& endpoint) {
  RemoteOptions options;
  options.address = endpoint.address;
  options.dict = s->name;
  options.call_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(std::ceil(endpoint.call_timeout * 1000)));
  std::optional<Result<RemoteDictStatus>> status;
  {
    WithoutGil unlocked(s);
    status.emplace(RemoteDict::Inspect(options));
  }
  const RemoteDictStatus st = ValueOrThrow(std::move(*status), s->backend->error_context());
  py::dict d;
  d["name"] = st.name;
  d["layout_version"] = st.layout_version;
  d["revision"] = st.revision;
  d["entries"] = st.entries;
  d["log_capacity"] = st.log_capacity;
  d["log_used"] = st.log_used;
  d["snapshot_revision"] = st.snapshot_revision;
  d["lock_held"] = st.lock_held;
  d["segment_bytes"] = st.segment_bytes;
  d["address"] = endpoint.address;
  d["mirror"] = endpoint.mirror;
  d["mirror_revision"] = endpoint.mirror ? py::object(py::int_(remote.revision())) : py::none();
  d["mirror_connected"] = remote.mirror_connected();
  d["mirror_resyncs"] = remote.mirror_resyncs();
  return d;
}
#endif

}  // namespace shmdict::python
