// ReplicaStore: the Store that carries one write call the replica's --listen service receives. Its
// writes go to the upstream (Upstream::Writer) and return once the replica has applied them,
// with the local revision that did (read-your-writes on this host: a client that reads this
// host's dict after the call sees its write). Reads and streams come from the local dict.
//
// Thread-safety: one object per call, used by one thread. Lifetime: the Dict, the Applier and
// the writer outlive it (the service holds the Dict's lease for the call).
#ifndef SHMDICT_BRIDGE_REPLICA_REPLICA_STORE_H_
#define SHMDICT_BRIDGE_REPLICA_REPLICA_STORE_H_

#include <chrono>
#include <memory>

#include "applier.h"
#include "shmdict/dict.h"

namespace shmdict::replica {

class ReplicaStore final : public Store {
 public:
  // `apply_timeout`: how long a write that the upstream committed may take to arrive here; then
  // kDeadlineExceeded saying the upstream has it.
  ReplicaStore(Dict& local, Applier& applier, std::unique_ptr<Store> upstream_writer,
               std::chrono::milliseconds apply_timeout);

  const std::string& name() const override { return local_.name(); }
  Result<std::optional<Value>> Get(std::string_view key) override { return local_.Get(key); }
  Result<bool> Get(std::string_view key, Value* out) override { return local_.Get(key, out); }
  Result<bool> Contains(std::string_view key) override { return local_.Contains(key); }
  Result<uint64_t> Size() override { return local_.Size(); }
  Result<std::vector<std::pair<std::string, Value>>> Items() override { return local_.Items(); }
  Result<std::vector<std::string>> Keys() override { return local_.Keys(); }

  Result<uint64_t> Set(std::string_view key, const Value& value) override;
  Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) override;
  Result<uint64_t> Apply(const std::vector<Change>& changes) override;
  Result<bool> Erase(std::string_view key) override;
  Result<std::optional<Value>> Pop(std::string_view key) override;
  Result<std::optional<std::pair<std::string, Value>>> PopItem() override;
  Result<Value> SetDefault(std::string_view key, const Value& default_value) override;
  Result<uint64_t> Clear() override;
  Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                             const std::optional<Value>& desired) override;
  Result<int64_t> Increment(std::string_view key, int64_t delta) override;

  // The local revision that applied this object's latest write (0 if none).
  uint64_t last_commit_revision() const override { return last_local_revision_; }
  uint64_t revision() override { return local_.revision(); }
  Result<uint64_t> WaitForChange(uint64_t after_revision,
                                 std::chrono::nanoseconds timeout) override {
    return local_.WaitForChange(after_revision, timeout);
  }
  Result<std::unique_ptr<Watcher>> Watch(uint64_t after_revision) override {
    return local_.Watch(after_revision);
  }

 private:
  // After a write upstream succeeded: waits until it is applied here and records the local
  // revision (the current one when the write changed nothing upstream).
  Status AwaitApplied();
  template <typename T>
  Result<T> Awaited(Result<T> result) {
    if (!result.ok()) return result;
    Status applied = AwaitApplied();
    if (!applied.ok()) return applied;
    return result;
  }

  Dict& local_;
  Applier& applier_;
  std::unique_ptr<Store> writer_;
  const std::chrono::milliseconds apply_timeout_;
  uint64_t last_local_revision_ = 0;
};

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_REPLICA_STORE_H_
