#include "replica_store.h"

namespace shmdict::replica {

ReplicaStore::ReplicaStore(Dict& local, Applier& applier, std::unique_ptr<Store> upstream_writer,
                           std::chrono::milliseconds apply_timeout)
    : local_(local),
      applier_(applier),
      writer_(std::move(upstream_writer)),
      apply_timeout_(apply_timeout) {}

Status ReplicaStore::AwaitApplied() {
  const uint64_t upstream_revision = writer_->last_commit_revision();
  if (upstream_revision == 0) {
    // Nothing changed upstream (a failed compare, a missing key): its revision may belong to
    // another part of the upstream and never arrive here; the dict as it is now answers.
    last_local_revision_ = local_.revision();
    return Status();
  }
  auto local =
      applier_.WaitApplied(upstream_revision, std::chrono::steady_clock::now() + apply_timeout_);
  if (!local.ok()) return local.status();
  last_local_revision_ = *local;
  return Status();
}

Result<uint64_t> ReplicaStore::Set(std::string_view key, const Value& value) {
  auto written = Awaited(writer_->Set(key, value));
  if (!written.ok()) return written;
  return last_local_revision_;
}

Result<uint64_t> ReplicaStore::Update(const std::vector<std::pair<std::string, Value>>& items) {
  auto written = Awaited(writer_->Update(items));
  if (!written.ok()) return written;
  return last_local_revision_;
}

Result<uint64_t> ReplicaStore::Apply(const std::vector<Change>& changes) {
  auto written = Awaited(writer_->Apply(changes));
  if (!written.ok()) return written;
  return last_local_revision_;
}

Result<bool> ReplicaStore::Erase(std::string_view key) { return Awaited(writer_->Erase(key)); }

Result<std::optional<Value>> ReplicaStore::Pop(std::string_view key) {
  return Awaited(writer_->Pop(key));
}

Result<std::optional<std::pair<std::string, Value>>> ReplicaStore::PopItem() {
  return Awaited(writer_->PopItem());
}

Result<Value> ReplicaStore::SetDefault(std::string_view key, const Value& default_value) {
  return Awaited(writer_->SetDefault(key, default_value));
}

Result<uint64_t> ReplicaStore::Clear() {
  auto written = Awaited(writer_->Clear());
  if (!written.ok()) return written;
  return last_local_revision_;
}

Result<bool> ReplicaStore::CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                                         const std::optional<Value>& desired) {
  return Awaited(writer_->CompareAndSet(key, expected, desired));
}

Result<int64_t> ReplicaStore::Increment(std::string_view key, int64_t delta) {
  return Awaited(writer_->Increment(key, delta));
}

}  // namespace shmdict::replica
