// Dict: a named key-value dictionary in POSIX shared memory, shared by every process on the host
// that opens the same name, with no daemon.
//
// The shared segment is the source of truth. Every committed change (or atomic batch) gets the
// next revision (1, 2, 3, ...), appended as one record to a log ring in shared memory; a handle
// keeps a process-local view (the latest immutable snapshot, mapped read-only and shared by all
// processes, plus an overlay of the changes since) and catches up by replaying the log. Reading
// when nothing changed costs one atomic load plus the local lookup.
//
//   auto dict = shmdict::Dict::Open({.name = "orders"});
//   if (!dict.ok()) { /* dict.status().message() names the cause */ }
//   dict->Set("apples", shmdict::Value::Int(3)).IgnoreError();
//   std::optional<shmdict::Value> v = *dict->Get("apples");  // a local read is always OK
//
// Thread-safety: a Dict handle is thread-compatible, like std::unordered_map: concurrent calls on
// one handle need external synchronization. Open one handle per thread instead; handles are cheap
// (the snapshot index is mapped, not copied) and every write from any handle in any process is
// serialized by the dict's cross-process writer lock. A Watcher (Watch) is an object of its own:
// several watchers of one handle may run on different threads, concurrently with each other and
// with the handle; each watcher is thread-compatible, except Cancel() (any thread).
//
// Lifetime: the handle owns its mappings; destroying it closes it. When the handle created the
// dict and Options::auto_unlink is true, destroying (or Close()) also unlinks the dict's names
// (other processes keep working on their mappings; new opens no longer find it). Values returned
// by copy (Value, std::string) are owned by the caller; ValueView passed to ForEach callbacks is
// valid only during the callback. A Watcher maps what it reads itself, so it may outlive its Dict:
// once the Dict is closed or destroyed, its Next() returns kFailedPrecondition.
//
// Fork: a handle may be used in a child made by fork() (Python's multiprocessing does so). The
// child never inherits the writer lock, even if the parent held it at the fork (a LockGuard from
// before the fork releases nothing in the child), and its first write takes a lock identity of its
// own, so a child that dies holding the lock never blocks its parent. auto_unlink stays with the
// creating process: a child closing its copy of the creator's handle does not unlink the dict.
// Locks work between processes in different pid namespaces sharing /dev/shm (the containers of a
// pod).
//
// Errors (StatusCode): kInvalidArgument for a bad name or option; kNotFound when must-attach finds
// no dict; kAlreadyExists when must-create finds one; kPermissionDenied when the segment mode
// forbids access; kFailedPrecondition for a segment of another layout version, a value of the
// wrong type for an operation, a lock not held, or any write (every call that may commit,
// OpenNested included) to a replica dict, which only its shmdict-replica writes
// (shmdict/replica_feed.h: the message names the replica's --listen address, or its upstream);
// kDataLoss for a truncated or corrupted segment; kDeadlineExceeded when the writer lock or a wait
// timed out (the message names the holder: its pid, or, for a holder in another pid namespace, that
// namespace and the holder's start time); kUnavailable for a try-lock that found the lock held;
// kResourceExhausted when a key or value is larger than the limits or shared memory is exhausted;
// kInternal for an unexpected OS error.
#ifndef SHMDICT_DICT_H_
#define SHMDICT_DICT_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmdict/dict_status.h"
#include "shmdict/log_sink.h"
#include "shmdict/status.h"
#include "shmdict/store.h"
#include "shmdict/value.h"

namespace shmdict {

inline constexpr size_t kMaxNameLength = 200;
inline constexpr size_t kMaxKeyBytes = 64 * 1024;
inline constexpr uint64_t kMaxValueBytes = 0xFFFFFFFFull;  // lengths are 32-bit on disk

enum class CreateMode {
  kAttachOrCreate,  // default: attach if it exists, create it otherwise
  kMustCreate,      // kAlreadyExists if it exists
  kMustAttach,      // kNotFound if it does not exist
};

struct Options {
  // 1..200 characters of [A-Za-z0-9_.-], not "." and without "..", not starting with '-' (it would
  // read as a flag on every command line). kMustAttach also takes a nested child's name
  // ("PARENT@c" + hex, IsNestedChildName in value.h); any other name holding '@' belongs to a
  // dict's internal segments and is kInvalidArgument. Empty: a random name is chosen (Dict::name()
  // tells it).
  std::string name;
  CreateMode create_mode = CreateMode::kAttachOrCreate;
  // Size of the shared change log in bytes (only used when creating); rounded up to a power of
  // two, at least 64 KiB. A full log triggers a snapshot; values larger than a quarter of it are
  // stored in their own segment, so any size works.
  uint64_t buffer_size = uint64_t{4} << 20;
  // File mode of the segments this handle creates.
  mode_t mode = 0600;
  // When this handle created the dict, unlink it when the handle closes.
  bool auto_unlink = true;
  // Stored in the dict when this handle creates it (ignored when attaching), for every attacher
  // to read back with Dict::user_flags(): a client's per-dict settings that all its processes
  // must share. The library gives them no meaning. A nested child is created with its parent's.
  uint32_t user_flags = 0;
  // How long a write (or Lock() without an explicit timeout) waits for the writer lock.
  std::chrono::milliseconds lock_timeout{10000};
  // Build snapshots on a background thread of this process, starting when an eighth of the log is
  // unpublished (half, while the dict is smaller than 8 logs), so that writers do not stall on
  // O(n) work. false: build them inline, under the writer lock, once the log is half full
  // (single-threaded programs).
  bool background_compaction = true;
  // Where the library reports snapshot builds and lock recoveries (log_sink.h). Null: nowhere.
  std::shared_ptr<LogSink> log_sink;
};

class Dict;
class ReplicaFeed;

// Holds the dict's cross-process writer lock: every write from any handle waits while it is held,
// so a read-modify-write between Lock() and the guard's destruction is atomic. Writes through the
// handle that took the lock proceed (the lock is recursive for its holder thread). Movable; the
// lock is released on destruction or Unlock(). Must be released on the thread that took it and
// before its Dict is destroyed.
class LockGuard {
 public:
  LockGuard() = default;
  LockGuard(LockGuard&& other) noexcept;
  LockGuard& operator=(LockGuard&& other) noexcept;
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard();

  bool owns_lock() const { return dict_ != nullptr; }
  void Unlock();

 private:
  friend class Dict;
  struct Holder;  // the Dict's stable internals: a guard survives moving its Dict
  explicit LockGuard(Holder* holder) : dict_(holder) {}
  Holder* dict_ = nullptr;
};

// The local implementation of Store (store.h): final, so calls through a Dict (not a Store&)
// are direct and the allocation-free Get stays as cheap as a plain function call. Reads never
// fail (they return OK); see the header comment for the errors of the other calls.
class Dict final : public Store {
 public:
  // Creates or attaches per options.create_mode. See the header comment for the errors.
  static Result<Dict> Open(const Options& options);
  // Removes every name of the dict (main segment, snapshots, large-value segments, nested
  // children). Processes that have it open keep their mappings. kNotFound if nothing was there;
  // kInvalidArgument for a bad name, including an internal segment's ("NAME@s1"): only dicts
  // (top-level or nested children) are unlinked by name.
  static Status UnlinkByName(std::string_view name);
  // (Listing and inspecting dicts without attaching: LocalCatalog, local_catalog.h.)
  // kInvalidArgument naming the problem, or OK: a name Open may create (never with '@').
  static Status ValidateName(std::string_view name);
  // kInvalidArgument naming the problem, or OK: a name Open with kMustAttach, UnlinkByName,
  // IncarnationOf and LocalCatalog accept, a top-level dict's or a nested child's ("PARENT@c" +
  // hex), never a dict's internal segment's. For a server that checks a client's name before
  // anything else; the message quotes the name bounded (QuoteForMessage).
  static Status ValidateAttachName(std::string_view name);
  // The incarnation (see incarnation()) of the dict now named `name`, without attaching: one
  // stat of its main segment. kNotFound if there is none; kInvalidArgument for a bad name (as for
  // UnlinkByName: a nested child's name is a dict's, an internal segment's is not).
  static Result<uint64_t> IncarnationOf(std::string_view name);
  // Whether this process may attach the dict named `name` (read and write its main segment, by
  // the effective ids): a server lists only what its calls could open. A check, not a promise: the
  // answer can change at once. False for a bad name or a dict that does not exist.
  static bool MayAttach(std::string_view name);
  // The shared-memory layout version this build creates and attaches (docs/LAYOUT.md; `shmdict
  // --version`, `shmdict-bridge --version`). Every process that maps a dict must read the same
  // one: Open of a dict of another version is kFailedPrecondition. Constant; thread-safe.
  static uint32_t LayoutVersion();

  Dict(Dict&& other) noexcept;
  Dict& operator=(Dict&& other) noexcept;
  Dict(const Dict&) = delete;
  Dict& operator=(const Dict&) = delete;
  ~Dict() override;

  const std::string& name() const override;
  // True if this handle created the dict.
  bool created() const;
  // The Options::user_flags its creator stored (0 for a dict created without them).
  uint32_t user_flags() const;
  // Whether the dict is a replica of a dict kept elsewhere (replica_feed.h, docs/REPLICA.md):
  // its writes through the core are refused; GetStatus() says of what. One load.
  bool is_replica() const;
  // Identifies this creation of the dict's name: the main segment's inode, taken when the handle
  // opened it. A dict unlinked and created again under the same name has another one (while
  // anyone maps the old segment its inode cannot be reused), so a server holding a handle can
  // compare it with IncarnationOf(name()) to notice that its handle reads a dict nobody else
  // finds any more.
  uint64_t incarnation() const;

  // ---- Reads: catch up with the log first (one atomic load when nothing changed). A corrupted
  // log makes reads return what the handle last knew; Refresh() reports the kDataLoss. Always OK.
  Result<std::optional<Value>> Get(std::string_view key) override;
  // Allocation-free variant: copies into *out (reusing its capacity); false when missing.
  // Inline, so that a direct call folds the Result away and costs what a bool-returning call did.
  Result<bool> Get(std::string_view key, Value* out) override { return CopyValue(key, out); }
  Result<bool> Contains(std::string_view key) override;
  Result<uint64_t> Size() override;
  // Calls fn for every entry of one consistent revision, in unspecified order; returns that
  // revision.
  uint64_t ForEach(const std::function<void(std::string_view key, ValueView value)>& fn);
  Result<std::vector<std::string>> Keys() override;
  Result<std::vector<std::pair<std::string, Value>>> Items() override;
  std::map<std::string, Value> Export();

  // ---- Writes: each commits one revision (returned) under the cross-process writer lock.
  Result<uint64_t> Set(std::string_view key, const Value& value) override;
  // Atomically sets all items as one revision.
  Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) override;
  Result<uint64_t> Update(const std::map<std::string, Value>& items);
  // Applies kSet/kErase/kClear in order as one revision; erasing a key that is missing at that
  // point of the batch is skipped. Returns the revision, or the current one when nothing changed.
  // kInvalidArgument for an op outside ChangeOp.
  Result<uint64_t> Apply(const std::vector<Change>& changes) override;
  // True if the key existed (and a revision was committed); false if it was missing.
  Result<bool> Erase(std::string_view key) override;
  // Removes and returns the value; nullopt if missing.
  Result<std::optional<Value>> Pop(std::string_view key) override;
  // Removes and returns some entry; nullopt if the dict is empty.
  Result<std::optional<std::pair<std::string, Value>>> PopItem() override;
  // Returns the existing value, or stores and returns `default_value`.
  Result<Value> SetDefault(std::string_view key, const Value& default_value) override;
  Result<uint64_t> Clear() override;
  // Sets `desired` (nullopt: erase) only if the current value equals `expected` (nullopt: the
  // key must be absent). True if it swapped.
  Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                             const std::optional<Value>& desired) override;
  // Adds delta to an int64 value (a missing key counts as 0) and returns the new value.
  // kFailedPrecondition if the value is not kInt64; kOutOfRange on overflow.
  Result<int64_t> Increment(std::string_view key, int64_t delta = 1) override;
  // The revision of this handle's latest commit (0 if none).
  uint64_t last_commit_revision() const override;

  // ---- Nested dicts: the value under `key` names a child dict, unlinked with this one.
  // Opens the child, creating it (and the reference) if the key is missing.
  // kFailedPrecondition if the key holds a value that is not a nested dict, or a nested-dict
  // reference that is not one of this dict's own children (CheckNestedReference, value.h; the
  // message names it): such a reference is never followed. Only references to this dict's own
  // children are retired (unlinked) when a change drops them.
  Result<Dict> OpenNested(std::string_view key);

  // ---- The user lock (see LockGuard). kDeadlineExceeded / kUnavailable name the holder's pid.
  Result<LockGuard> Lock();
  Result<LockGuard> Lock(std::chrono::milliseconds timeout);
  Result<LockGuard> TryLock();

  // ---- Revisions and change streaming.
  // The handle's revision after catching up.
  uint64_t revision() override;
  // The latest committed revision (one atomic load, no catch-up).
  uint64_t published_revision() const;
  // Catches up with the log (UltraDict's apply_update / load). force: reload from the latest
  // snapshot even if the log would do, and verify the snapshot's contents against its checksum
  // (O(dict size)). kDataLoss if the log or snapshot is corrupted.
  Status Refresh(bool force = false);
  // Blocks (futex, no polling) until the published revision exceeds `after_revision`; returns it.
  // kDeadlineExceeded when the timeout passes first.
  Result<uint64_t> WaitForChange(uint64_t after_revision,
                                 std::chrono::nanoseconds timeout) override;
  // A stream of changes after `from_revision`. When the log no longer holds the revision after
  // it (or from_revision is 0 and a snapshot exists), the stream starts with a snapshot, sent in
  // chunks. The watcher maps the dict itself (it never touches this handle's state): it may run on
  // another thread and outlive the handle (then its Next returns kFailedPrecondition).
  // kResourceExhausted / kInternal if the dict cannot be mapped again.
  Result<std::unique_ptr<Watcher>> Watch(uint64_t from_revision) override;
  // Builds and publishes a snapshot of the current state now (UltraDict's dump()); returns its
  // generation.
  Result<uint64_t> Dump();

  DictStatus GetStatus();
  // Closes the handle (and unlinks if auto_unlink applies). Waits for this handle's background
  // snapshot builder; watchers blocked in Next wake and fail with kFailedPrecondition. Any later
  // call other than Close() or destruction aborts. Idempotent.
  Status Close();
  // Unlinks this dict's names now (as UnlinkByName); the handle stays usable.
  Status Unlink();

  class Impl;  // internal; public only so that the engine's helpers can name it

 private:
  friend class LockGuard;
  friend class ReplicaFeed;  // a replica's one writer (replica_feed.h) reaches the engine
  explicit Dict(std::unique_ptr<Impl> impl);
  // Get(key, out) without the Result: the read path itself, out of line.
  bool CopyValue(std::string_view key, Value* out);
  // Open, where allow_nested_child_name lets OpenNested create "parent@c..." children.
  static Result<Dict> OpenWithNameRules(const Options& options, bool allow_nested_child_name);
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmdict

#endif  // SHMDICT_DICT_H_
