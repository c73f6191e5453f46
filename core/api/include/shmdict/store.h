// Store: the one interface of a shmdict dictionary, whatever the transport. The local Dict
// (shared memory, dict.h) and RemoteDict (through shmdict-bridge, clients/cpp) both implement it,
// so code written against Store runs in a process that maps /dev/shm and in a container that only
// reaches a bridge.
//
// Why reads return Result here: over a network "unreachable" must never read as "missing". A
// local Dict's reads cannot fail (they always return OK); a RemoteDict's return kUnavailable or
// kDeadlineExceeded when neither its mirror nor the bridge can answer.
//
// Revisions: every committed change (or atomic batch) of a dict gets the next revision 1, 2, 3...
// Every write returns, or records in last_commit_revision(), the revision it committed; a write
// that changed nothing (erasing a missing key, a failed compare-and-set) commits none.
//
// Thread-safety: implementations are thread-compatible unless they say otherwise (RemoteDict is
// thread-safe). Watcher::Cancel() alone may be called from any thread at any time.
// Lifetime: a Watcher holds what it reads (mappings, a stream) and may outlive its Store; once the
// Store is closed or destroyed its Next() fails with kFailedPrecondition or kCancelled, never
// touching released memory.
//
// Errors common to every call: kInvalidArgument (a bad key or argument), kResourceExhausted (a key
// or value over the limits, shared memory full), kFailedPrecondition (a value of the wrong type
// for the operation), kDeadlineExceeded (the writer lock or a wait timed out), kUnavailable (a
// remote store cannot reach its bridge), kNotFound (the dict no longer exists, remote only),
// kDataLoss (a corrupted dict). Each message names the dict.
#ifndef SHMDICT_STORE_H_
#define SHMDICT_STORE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict {

enum class ChangeOp : uint8_t { kSet = 1, kErase = 2, kClear = 3 };

struct Change {
  uint64_t revision = 0;  // the changes of one atomic batch share a revision
  ChangeOp op = ChangeOp::kSet;
  std::string key;  // empty for kClear
  Value value;      // only for kSet
  // Remote watchers only: the value was larger than the bridge's message limit and left out
  // (`value` then holds only its type tag); read the key to get it.
  bool value_too_large = false;
  uint64_t value_size = 0;
};

// What Watcher::Next returns: either changes following the caller's revision, or one chunk of a
// snapshot. When the changes a watcher needs are older than the log holds, it delivers the whole
// dict at `snapshot_revision` in chunks (the first has snapshot_begins, the last snapshot_ends);
// a receiver keeping a copy clears it at snapshot_begins and has the dict at snapshot_revision
// once it applied the chunk with snapshot_ends. Live changes after it follow in later batches.
struct ChangeBatch {
  bool is_snapshot = false;  // this batch is a chunk of a snapshot: snapshot_items, no changes
  bool snapshot_begins = false;
  bool snapshot_ends = false;
  uint64_t snapshot_revision = 0;
  std::vector<std::pair<std::string, Value>> snapshot_items;
  // Live changes; in a snapshot chunk of a remote watcher, the entries whose values were too
  // large to send (value_too_large set, revision 0).
  std::vector<Change> changes;
  // Everything up to and including this revision has been delivered. During a snapshot it stays
  // at the watcher's previous revision until the chunk with snapshot_ends, which sets it to
  // snapshot_revision.
  uint64_t revision = 0;
};

// Bounds of one Watcher::Next result. An atomic batch is never split, so one batch larger than
// both bounds is returned alone; a snapshot chunk stops at the bounds (at least one item).
struct WatchLimits {
  size_t max_changes = 4096;           // changes or snapshot items
  size_t max_bytes = size_t{4} << 20;  // keys + values
};

// A stream of a dict's changes after a revision, in revision order with no gap and no duplicate.
// Thread-compatible, except Cancel().
class Watcher {
 public:
  virtual ~Watcher() = default;
  // Waits up to `timeout` for changes after revision(), then returns what limits allow. An empty
  // batch that is not a snapshot chunk means the timeout passed with nothing new. kCancelled after
  // Cancel(); kFailedPrecondition when the dict's handle was closed; kDataLoss if the log is
  // corrupted; a remote watcher's transport errors (kUnavailable...).
  virtual Result<ChangeBatch> Next(const WatchLimits& limits, std::chrono::nanoseconds timeout) = 0;
  Result<ChangeBatch> Next(size_t max_changes, std::chrono::nanoseconds timeout) {
    return Next(WatchLimits{max_changes, std::numeric_limits<size_t>::max()}, timeout);
  }
  // Wakes a blocked Next, which returns kCancelled, as does every later call. Any thread;
  // idempotent.
  virtual void Cancel() = 0;
  // The last revision delivered (after a snapshot's last chunk: its revision).
  virtual uint64_t revision() const = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual const std::string& name() const = 0;

  // ---- Reads (a local Dict: never an error).
  virtual Result<std::optional<Value>> Get(std::string_view key) = 0;
  // Copies into *out, reusing its capacity (allocation-free locally); false when missing.
  virtual Result<bool> Get(std::string_view key, Value* out) = 0;
  virtual Result<bool> Contains(std::string_view key) = 0;
  virtual Result<uint64_t> Size() = 0;
  // Every entry of one consistent revision, in unspecified order.
  virtual Result<std::vector<std::pair<std::string, Value>>> Items() = 0;
  virtual Result<std::vector<std::string>> Keys() = 0;

  // ---- Writes: each commits one revision (returned, or in last_commit_revision()).
  virtual Result<uint64_t> Set(std::string_view key, const Value& value) = 0;
  // Sets all items as one revision.
  virtual Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) = 0;
  // Applies kSet/kErase/kClear changes in order as one revision (Change::revision is ignored).
  // Erasing a missing key is not an error. Returns the revision, or the current one if nothing
  // changed.
  virtual Result<uint64_t> Apply(const std::vector<Change>& changes) = 0;
  // True if the key existed (and a revision was committed).
  virtual Result<bool> Erase(std::string_view key) = 0;
  // Removes and returns the value; nullopt if missing.
  virtual Result<std::optional<Value>> Pop(std::string_view key) = 0;
  // Removes and returns some entry; nullopt if the dict is empty.
  virtual Result<std::optional<std::pair<std::string, Value>>> PopItem() = 0;
  // Returns the existing value, or stores and returns `default_value`.
  virtual Result<Value> SetDefault(std::string_view key, const Value& default_value) = 0;
  virtual Result<uint64_t> Clear() = 0;
  // Sets `desired` (nullopt: erase) only if the current value equals `expected` (nullopt: the key
  // must be absent). True if it swapped.
  virtual Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                                     const std::optional<Value>& desired) = 0;
  // Adds delta to an int64 value (a missing key counts as 0); returns the new value.
  // kFailedPrecondition if the value is not an int; kOutOfRange on overflow.
  virtual Result<int64_t> Increment(std::string_view key, int64_t delta) = 0;
  // The revision of this object's latest commit (0 if none).
  virtual uint64_t last_commit_revision() const = 0;

  // ---- Revisions and change streaming.
  // The revision reads reflect (a RemoteDict: how fresh its mirror is).
  virtual uint64_t revision() = 0;
  // Blocks until the dict's revision exceeds `after_revision`; returns it. kDeadlineExceeded when
  // the timeout passes first.
  virtual Result<uint64_t> WaitForChange(uint64_t after_revision,
                                         std::chrono::nanoseconds timeout) = 0;
  // The changes after `after_revision`; starts with a snapshot when the log no longer holds them
  // (or after_revision is 0 and the dict has a snapshot).
  virtual Result<std::unique_ptr<Watcher>> Watch(uint64_t after_revision) = 0;
};

}  // namespace shmdict

#endif  // SHMDICT_STORE_H_
