#include "bridge_upstream.h"

#include <mutex>
#include <vector>

#include "shmdict/remote_catalog.h"
#include "shmdict/replica_feed.h"

namespace shmdict::replica {
namespace {

// A watcher stays silent while the primary is idle and while its bridge is unreachable alike
// (RemoteWatcher reconnects by itself): after this long without a message, one Status call tells
// which, for the dict's upstream_connected.
constexpr auto kProbeAfterSilence = std::chrono::seconds(5);

// What the primary's values may not carry into this host: a nested-dict reference names a dict of
// the primary's host (here it would open an unrelated local dict of that name), and a pickle runs
// code in every Python reader unless the operator allowed it (--allow-pickle, as on the bridge).
// Both arrive as bytes, as the etcd upstream decodes them.
void Sanitize(Value& value, bool allow_pickle) {
  if (value.type() == ValueType::kNestedDict ||
      (value.type() == ValueType::kPickle && !allow_pickle)) {
    value = Value::Bytes(value.data());
  }
}

class BridgeStream final : public UpstreamStream {
 public:
  BridgeStream(std::unique_ptr<RemoteDict> remote, std::unique_ptr<Watcher> watcher,
               std::unique_ptr<RemoteCatalog> catalog, uint64_t after, bool allow_pickle,
               std::function<void(bool)> connected)
      : remote_(std::move(remote)),
        watcher_(std::move(watcher)),
        catalog_(std::move(catalog)),
        connected_(std::move(connected)),
        allow_pickle_(allow_pickle),
        last_(after) {}

  void Cancel() override { watcher_->Cancel(); }

  Result<std::vector<UpstreamStep>> Next(std::chrono::milliseconds timeout) override {
    auto batch = watcher_->Next(WatchLimits{}, timeout);
    if (!batch.ok()) {
      connected_(false);
      return batch.status();
    }
    std::vector<UpstreamStep> steps;
    if (!batch->is_snapshot && batch->changes.empty() && batch->revision <= last_) {
      if (!answered_) {
        // Nothing comes for a primary with nothing after our revision (an empty one, or one we
        // have whole): its status says so, and the feed counts as caught up.
        auto status = catalog_->Inspect(remote_->name());
        if (status.ok() && status->revision <= last_) {
          answered_ = true;
          UpstreamStep answered;
          answered.kind = UpstreamStep::Kind::kProgress;
          answered.revision = last_;
          steps.push_back(std::move(answered));
          connected_(true);
          return steps;
        }
      }
      Status probed = ProbeIfSilent();
      if (!probed.ok()) return probed;
      return steps;
    }
    answered_ = true;
    last_contact_ = std::chrono::steady_clock::now();
    for (auto& item : batch->snapshot_items) Sanitize(item.second, allow_pickle_);
    for (Change& change : batch->changes) Sanitize(change.value, allow_pickle_);
    if (batch->is_snapshot) {
      // The primary's log no longer reaches back to our revision (or this is the first start):
      // gather the snapshot's chunks and replace the contents at its revision, as one step.
      if (batch->snapshot_begins) snapshot_.clear();
      for (auto& item : batch->snapshot_items) snapshot_.push_back(std::move(item));
      Status fetched = FetchTooLarge(batch->changes, &snapshot_);
      if (!fetched.ok()) return fetched;
      if (batch->snapshot_ends) {
        UpstreamStep replace;
        replace.kind = UpstreamStep::Kind::kReplace;
        replace.revision = batch->snapshot_revision;
        replace.items = std::move(snapshot_);
        snapshot_.clear();
        steps.push_back(std::move(replace));
        last_ = batch->snapshot_revision;
      }
    } else {
      for (Change& change : batch->changes) {
        if (change.value_too_large) {
          // Left out by the bridge's message limit: read it. The value may already be newer;
          // the change that made it newer follows, so the end state is the same.
          auto value = remote_->Get(change.key);
          if (!value.ok()) return value.status();
          if (!*value) {
            change.op = ChangeOp::kErase;
          } else {
            change.value = std::move(**value);
            Sanitize(change.value, allow_pickle_);
          }
          change.value_too_large = false;
        }
        if (steps.empty() || steps.back().revision != change.revision) {
          UpstreamStep step;
          step.kind = UpstreamStep::Kind::kChanges;
          step.revision = change.revision;
          steps.push_back(std::move(step));
        }
        steps.back().changes.push_back(std::move(change));
      }
      if (batch->revision > (steps.empty() ? last_ : steps.back().revision)) {
        UpstreamStep progress;
        progress.kind = UpstreamStep::Kind::kProgress;
        progress.revision = batch->revision;
        steps.push_back(std::move(progress));
      }
      if (!steps.empty()) last_ = steps.back().revision;
    }
    connected_(true);
    return steps;
  }

 private:
  // See kProbeAfterSilence. A primary whose revision is below what was applied was unlinked and
  // created again: OUT_OF_RANGE, and the applier lists it again as a new history.
  Status ProbeIfSilent() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_contact_ < kProbeAfterSilence) return Status();
    last_contact_ = now;
    auto status = catalog_->Inspect(remote_->name());
    if (!status.ok()) {
      connected_(false);
      return Status();  // the watcher keeps trying; so does the next probe
    }
    connected_(true);
    if (status->revision < last_) {
      return Status(StatusCode::kOutOfRange, "the primary dict is at revision " +
                                                 std::to_string(status->revision) + ", below the " +
                                                 std::to_string(last_) +
                                                 " applied here: it was created again");
    }
    return Status();
  }

  Status FetchTooLarge(const std::vector<Change>& too_large,
                       std::vector<std::pair<std::string, Value>>* items) {
    for (const Change& change : too_large) {
      auto value = remote_->Get(change.key);
      if (!value.ok()) return value.status();
      if (*value) {
        Sanitize(**value, allow_pickle_);
        items->emplace_back(change.key, std::move(**value));
      }
    }
    return Status();
  }

  std::unique_ptr<RemoteDict> remote_;
  std::unique_ptr<Watcher> watcher_;
  std::unique_ptr<RemoteCatalog> catalog_;
  std::function<void(bool)> connected_;
  const bool allow_pickle_;
  std::vector<std::pair<std::string, Value>> snapshot_;
  uint64_t last_;
  bool answered_ = false;  // the first step was delivered
  std::chrono::steady_clock::time_point last_contact_ = std::chrono::steady_clock::now();
};

// Writes through one RemoteDict taken from a pool for the call, so that its
// last_commit_revision() is this call's (RemoteDict keeps one per object).
class PooledWriter final : public Store {
 public:
  using Pool = std::pair<std::mutex, std::vector<std::unique_ptr<RemoteDict>>>;
  PooledWriter(std::shared_ptr<Pool> pool, std::unique_ptr<RemoteDict> remote)
      : pool_(std::move(pool)), remote_(std::move(remote)) {}
  ~PooledWriter() override {
    std::lock_guard lock(pool_->first);
    if (pool_->second.size() < kMaxPooled) pool_->second.push_back(std::move(remote_));
  }

  const std::string& name() const override { return remote_->name(); }
  Result<std::optional<Value>> Get(std::string_view key) override { return remote_->Get(key); }
  Result<bool> Get(std::string_view key, Value* out) override { return remote_->Get(key, out); }
  Result<bool> Contains(std::string_view key) override { return remote_->Contains(key); }
  Result<uint64_t> Size() override { return remote_->Size(); }
  Result<std::vector<std::pair<std::string, Value>>> Items() override { return remote_->Items(); }
  Result<std::vector<std::string>> Keys() override { return remote_->Keys(); }
  Result<uint64_t> Set(std::string_view key, const Value& value) override {
    return remote_->Set(key, value);
  }
  Result<uint64_t> Update(const std::vector<std::pair<std::string, Value>>& items) override {
    return remote_->Update(items);
  }
  Result<uint64_t> Apply(const std::vector<Change>& changes) override {
    return remote_->Apply(changes);
  }
  Result<bool> Erase(std::string_view key) override { return remote_->Erase(key); }
  Result<std::optional<Value>> Pop(std::string_view key) override { return remote_->Pop(key); }
  Result<std::optional<std::pair<std::string, Value>>> PopItem() override {
    return remote_->PopItem();
  }
  Result<Value> SetDefault(std::string_view key, const Value& default_value) override {
    return remote_->SetDefault(key, default_value);
  }
  Result<uint64_t> Clear() override { return remote_->Clear(); }
  Result<bool> CompareAndSet(std::string_view key, const std::optional<Value>& expected,
                             const std::optional<Value>& desired) override {
    return remote_->CompareAndSet(key, expected, desired);
  }
  Result<int64_t> Increment(std::string_view key, int64_t delta) override {
    return remote_->Increment(key, delta);
  }
  uint64_t last_commit_revision() const override { return remote_->last_commit_revision(); }
  uint64_t revision() override { return remote_->revision(); }
  Result<uint64_t> WaitForChange(uint64_t after_revision,
                                 std::chrono::nanoseconds timeout) override {
    return remote_->WaitForChange(after_revision, timeout);
  }
  Result<std::unique_ptr<Watcher>> Watch(uint64_t after_revision) override {
    return remote_->Watch(after_revision);
  }

 private:
  static constexpr size_t kMaxPooled = 16;
  std::shared_ptr<Pool> pool_;
  std::unique_ptr<RemoteDict> remote_;
};

class BridgeUpstream final : public Upstream {
 public:
  BridgeUpstream(RemoteOptions options, std::string description, bool allow_pickle)
      : options_(std::move(options)),
        description_(std::move(description)),
        allow_pickle_(allow_pickle) {
    options_.mirror = false;
  }

  const std::string& description() const override { return description_; }

  // A primary dict created again is recognized by its revision going back (ProbeIfSilent).
  Result<uint64_t> Identity() override { return uint64_t{0}; }

  Result<std::unique_ptr<UpstreamStream>> Follow(uint64_t after_revision,
                                                 std::function<void(bool)> connected) override {
    auto remote = RemoteDict::Open(options_);
    if (!remote.ok()) return remote.status();
    // The watcher resumes after its own reconnects; after_revision 0 starts with a snapshot.
    auto watcher = (*remote)->Watch(after_revision);
    if (!watcher.ok()) return watcher.status();
    connected(true);  // Open answered: the primary exists and its bridge serves
    return std::unique_ptr<UpstreamStream>(new BridgeStream(
        std::move(*remote), std::move(*watcher), std::make_unique<RemoteCatalog>(options_),
        after_revision, allow_pickle_, std::move(connected)));
  }

  Result<std::unique_ptr<Store>> Writer() override {
    std::unique_ptr<RemoteDict> remote;
    {
      std::lock_guard lock(pool_->first);
      if (!pool_->second.empty()) {
        remote = std::move(pool_->second.back());
        pool_->second.pop_back();
      }
    }
    if (!remote) {
      auto opened = RemoteDict::Open(options_);
      if (!opened.ok()) return opened.status();
      remote = std::move(*opened);
    }
    return std::unique_ptr<Store>(new PooledWriter(pool_, std::move(remote)));
  }

 private:
  RemoteOptions options_;
  std::string description_;
  const bool allow_pickle_;
  std::shared_ptr<PooledWriter::Pool> pool_ = std::make_shared<PooledWriter::Pool>();
};

}  // namespace

Result<std::unique_ptr<Upstream>> MakeBridgeUpstream(const RemoteOptions& options,
                                                     bool allow_pickle) {
  if (options.address.empty() || options.dict.empty()) {
    return Status(StatusCode::kInvalidArgument, "--bridge and --source are both needed");
  }
  // Never cut (see etcd_upstream.cc): too long is refused below.
  std::string description =
      "bridge:" + EscapeUntrustedText(options.address, ReplicaMarker::kMaxUpstreamBytes) +
      " dict=" + EscapeUntrustedText(options.dict, ReplicaMarker::kMaxUpstreamBytes);
  if (description.size() > ReplicaMarker::kMaxUpstreamBytes) {
    return Status(StatusCode::kInvalidArgument, "--bridge and --source are too long");
  }
  return std::unique_ptr<Upstream>(
      new BridgeUpstream(options, std::move(description), allow_pickle));
}

}  // namespace shmdict::replica
