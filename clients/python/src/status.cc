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

// Every field the transport reported, from the one table (shmdict/dict_status.h); a file mode
// stays a number (Python users write oct(mode)). Unknown fields are left out, never shown as zero.
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

#ifdef SHMDICT_PYTHON_REMOTE
py::dict RemoteStatus(State* s, RemoteDict& remote, const RemoteEndpoint& endpoint) {
  std::optional<Result<DictStatus>> status;
  {
    WithoutGil unlocked(s);
    status.emplace(endpoint.catalog->Inspect(s->name));
  }
  // The dict's status as the bridge reports it, plus this handle's mirror.
  py::dict d = StatusToDict(ValueOrThrow(std::move(*status), s->backend->error_context()));
  d["address"] = endpoint.address;  // as `bridge`; kept for the scripts that read it
  d["mirror"] = endpoint.mirror;
  d["mirror_revision"] = endpoint.mirror ? py::object(py::int_(remote.revision())) : py::none();
  d["mirror_connected"] = remote.mirror_connected();
  d["mirror_resyncs"] = remote.mirror_resyncs();
  return d;
}
#endif

}  // namespace shmdict::python
