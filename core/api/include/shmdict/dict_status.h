// DictStatus: what a dict reports about itself, one schema for every transport, and the one field
// table from which the CLI, the Python package and the bridge's wire mapping render it.
//
// Every transport fills the fields without std::optional. An optional field is one a transport
// may not know: the local catalog (LocalCatalog, Dict::GetStatus) fills all of them; a bridge of
// shmdict.v1.2 or later fills all but `lock_holder_in_this_pid_namespace` (it is about the
// caller's own pid namespace, which a remote caller does not share); an older bridge fills only
// the plain ones; the replica fields (replica_of and after) need a bridge of shmdict.v1.4.
// `bridge` is set only when the status came through a bridge.
//
// Why a table: the list of fields was written by hand four times (the CLI's text and JSON, Python's
// local and remote dicts) and drifted. Renderers iterate StatusFields() instead, and the wire
// mapping (proto/shmdict/v1/wire.h) finds each field of shmdict.v1.StatusResponse by the table's
// name, so a field added here is rendered everywhere, and a test checks that the wire has it.
//
// Thread-safety: plain values; StatusFields() returns a static, immutable table.
#ifndef SHMDICT_DICT_STATUS_H_
#define SHMDICT_DICT_STATUS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace shmdict {

struct DictStatus {
  std::string name;
  uint32_t layout_version = 0;
  uint64_t revision = 0;  // latest committed
  uint64_t entries = 0;   // at `revision`
  uint64_t log_capacity = 0;
  uint64_t log_used = 0;  // bytes written since the latest snapshot
  uint64_t snapshot_revision = 0;
  bool lock_held = false;  // the writer lock (a dead holder counts until a writer takes over)
  uint64_t segment_bytes = 0;

  std::optional<uint64_t> snapshot_generation;
  std::optional<uint64_t> snapshots_built;
  // The holder's pid as its own pid namespace numbers it (0: free, or not recorded yet). Only
  // comparable with getpid() when lock_holder_in_this_pid_namespace: containers of one pod that
  // share /dev/shm usually have pid namespaces of their own.
  std::optional<uint32_t> lock_holder_pid;
  std::optional<uint64_t> lock_holder_pid_namespace;  // inode of its /proc/PID/ns/pid; 0: unknown
  std::optional<bool> lock_holder_in_this_pid_namespace;
  std::optional<uint64_t> lock_recoveries;  // times a dead holder's lock was repaired
  std::optional<uint32_t> creator_pid;      // in the pid namespace of the dict's host
  std::optional<bool> creator_alive;
  std::optional<bool> attached;  // some process (possibly the caller) has it open
  std::optional<mode_t> mode;    // the segments' file mode

  // A replica dict (shmdict/replica_feed.h; written only by its shmdict-replica): the upstream it
  // copies ("etcd:http://h1:2379 prefix=/app/", "bridge:ADDR dict=SRC"), empty when the dict is
  // not a replica; the replica's --listen address (empty: none), where writes go; the upstream
  // revision whose data the dict holds; whether its feed is alive and connected upstream now
  // (false once the feed's process died); its last contact with the upstream (unix ms, 0: never).
  // Since shmdict.v1.4 on the wire.
  std::optional<std::string> replica_of;
  std::optional<std::string> replica_listen;
  std::optional<uint64_t> upstream_revision;
  std::optional<bool> upstream_connected;
  std::optional<uint64_t> last_upstream_contact;

  // The bridge this status came through ("unix:/run/shmdict.sock"); unset for the local catalog.
  std::optional<std::string> bridge;

  // A dict nobody has open and whose creator is gone: a candidate for `shmdict unlink`. Unknown
  // (nullopt) when the transport does not report both facts.
  std::optional<bool> abandoned() const {
    if (!creator_alive || !attached) return std::nullopt;
    return !*creator_alive && !*attached;
  }
};

// How a field is rendered: numbers and flags as such, a file mode as octal text ("0600") in text
// and JSON, as a number in Python.
enum class StatusFieldKind { kText, kFlag, kCount, kFileMode };

using StatusFieldValue = std::variant<std::string, bool, uint64_t>;

struct StatusField {
  // The field's name in C++ (the member), the CLI's JSON and text, Python's status() dict and
  // shmdict.v1.StatusResponse -- except `name`, which the frozen v1 wire calls `dict`.
  std::string_view name;
  // The field of shmdict.v1.StatusResponse; empty for a field the wire does not carry.
  std::string_view wire_name;
  StatusFieldKind kind;
  // The value, or nullopt when the transport did not report it.
  std::optional<StatusFieldValue> (*get)(const DictStatus&);
  // Stores a value of the field's kind: a std::string for kText, a bool for kFlag, a uint64_t for
  // kCount and kFileMode (truncated to the member's width, which the wire's own width matches).
  // A value of another alternative aborts: it is a mapping out of step with the table.
  void (*set)(DictStatus&, const StatusFieldValue&);
};

// Every field of DictStatus, in the order the CLI prints them.
std::span<const StatusField> StatusFields();

// "0600": how text and JSON show a file mode.
std::string OctalFileMode(uint64_t mode);

}  // namespace shmdict

#endif  // SHMDICT_DICT_STATUS_H_
