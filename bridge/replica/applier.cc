#include "applier.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <string_view>
#include <unordered_map>

namespace shmdict::replica {
namespace {

// WaitApplied maps an upstream revision to the local revision that applied it through this many
// recent commits; an older one answers with the current local revision, which also holds it.
constexpr size_t kRecentCommits = 4096;

// How long one Next waits before the feed thread checks whether it should stop.
constexpr auto kPollInterval = std::chrono::milliseconds(200);

// The changes that turn `current` into `wanted`, as one batch: a replacement after a relist shows
// local watchers only what really changed, never a clear followed by everything again.
std::vector<Change> DiffContents(std::vector<std::pair<std::string, Value>> current,
                                 std::vector<std::pair<std::string, Value>>& wanted) {
  if (current.empty()) {
    // The first listing into an empty dict: everything is a set, no lookups needed.
    std::vector<Change> sets;
    sets.reserve(wanted.size());
    for (auto& [key, value] : wanted) {
      Change set;
      set.op = ChangeOp::kSet;
      set.key = std::move(key);
      set.value = std::move(value);
      sets.push_back(std::move(set));
    }
    return sets;
  }
  std::unordered_map<std::string_view, const Value*> wanted_by_key;
  wanted_by_key.reserve(wanted.size());
  for (const auto& [key, value] : wanted) wanted_by_key[key] = &value;
  std::unordered_map<std::string_view, const Value*> current_by_key;
  current_by_key.reserve(current.size());
  std::vector<Change> changes;
  for (const auto& [key, value] : current) {
    current_by_key[key] = &value;
    if (!wanted_by_key.contains(key)) {
      Change erase;
      erase.op = ChangeOp::kErase;
      erase.key = key;
      changes.push_back(std::move(erase));
    }
  }
  for (auto& [key, value] : wanted) {
    auto found = current_by_key.find(key);
    if (found != current_by_key.end() && *found->second == value) continue;
    Change set;
    set.op = ChangeOp::kSet;
    set.key = key;
    set.value = std::move(value);
    changes.push_back(std::move(set));
  }
  return changes;
}

}  // namespace

Result<std::unique_ptr<Applier>> Applier::Start(Dict& dict, Upstream& upstream,
                                                ApplierOptions options) {
  ReplicaMarker marker;
  marker.description = upstream.description();
  ReplicaResumePoint resume;
  auto feed = ReplicaFeed::Adopt(dict, marker, &resume);
  if (!feed.ok()) return feed.status();
  spdlog::info("replica of {}: resuming after upstream revision {} (local revision {})",
               marker.description, resume.upstream_revision, resume.local_revision);
  Options attach;
  attach.name = dict.name();
  attach.create_mode = CreateMode::kMustAttach;
  attach.auto_unlink = false;
  auto own_handle = Dict::Open(attach);
  if (!own_handle.ok()) return own_handle.status();
  std::unique_ptr<Applier> applier(
      new Applier(std::move(*own_handle), upstream, options, std::move(*feed), resume));
  applier->thread_ = std::thread([raw = applier.get()] { raw->Run(); });
  return applier;
}

Applier::Applier(Dict own_handle, Upstream& upstream, ApplierOptions options, ReplicaFeed feed,
                 const ReplicaResumePoint& resume)
    : dict_(std::move(own_handle)), upstream_(upstream), options_(options), feed_(std::move(feed)) {
  applied_upstream_.store(resume.upstream_revision, std::memory_order_release);
  last_local_.store(resume.local_revision, std::memory_order_release);
  recorded_identity_ = resume.upstream_identity;
}

Applier::~Applier() { Stop(); }

void Applier::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_.store(true, std::memory_order_release);
    if (stream_) stream_->Cancel();
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  feed_.SetContact(false);
}

bool Applier::WaitReady(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  changed_.wait_until(lock, deadline, [&] {
    return ready_.load(std::memory_order_acquire) || stopping_.load(std::memory_order_acquire) ||
           fatal_.has_value();
  });
  return ready();
}

std::optional<Status> Applier::fatal() const {
  std::lock_guard lock(mu_);
  return fatal_;
}

Result<uint64_t> Applier::WaitApplied(uint64_t upstream_revision,
                                      std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  const bool applied = changed_.wait_until(lock, deadline, [&] {
    return applied_upstream_.load(std::memory_order_acquire) >= upstream_revision ||
           stopping_.load(std::memory_order_acquire);
  });
  if (applied_upstream_.load(std::memory_order_acquire) >= upstream_revision) {
    auto first_at_or_after = std::lower_bound(recent_.begin(), recent_.end(), upstream_revision,
                                              [](const std::pair<uint64_t, uint64_t>& entry,
                                                 uint64_t wanted) { return entry.first < wanted; });
    if (first_at_or_after != recent_.end()) return first_at_or_after->second;
    return last_local_.load(std::memory_order_acquire);
  }
  if (!applied || stopping_.load(std::memory_order_acquire)) {
    // Also when stopping: the upstream has the write, so the caller must not take this for a
    // write that failed (an Increment retried would count twice).
    return Status(StatusCode::kDeadlineExceeded,
                  "committed upstream at revision " + std::to_string(upstream_revision) +
                      ", not applied by this replica in time (upstream revision applied: " +
                      std::to_string(applied_upstream_.load()) + ")");
  }
  return Status(StatusCode::kUnavailable, "the replica is stopping");  // not reached
}

ApplierCounters Applier::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

Status Applier::SetListen(std::string_view address) {
  std::lock_guard lock(feed_mu_);
  return feed_.SetListen(address);
}

Result<uint64_t> Applier::Commit(const std::vector<Change>& changes, uint64_t upstream_revision,
                                 bool relist, bool history_restarted) {
  std::unique_lock feed_lock(feed_mu_);
  auto local = history_restarted ? feed_.ApplyRestartedHistory(changes, upstream_revision)
                                 : feed_.Apply(changes, upstream_revision);
  feed_lock.unlock();
  if (!local.ok()) return local;
  {
    std::lock_guard lock(mu_);
    applied_upstream_.store(upstream_revision, std::memory_order_release);
    last_local_.store(*local, std::memory_order_release);
    if (history_restarted) recent_.clear();  // its revisions belong to the old history
    if (!changes.empty()) {
      recent_.emplace_back(upstream_revision, *local);
      if (recent_.size() > kRecentCommits) recent_.pop_front();
    }
    ++counters_.steps_applied;
    if (relist) ++counters_.relists;
  }
  changed_.notify_all();
  return local;
}

Status Applier::ApplyStep(UpstreamStep& step) {
  const uint64_t applied = applied_upstream_.load(std::memory_order_acquire);
  switch (step.kind) {
    case UpstreamStep::Kind::kReplace: {
      auto current = dict_.Items();
      if (!current.ok()) return current.status();
      std::vector<Change> changes = DiffContents(std::move(*current), step.items);
      // Below what was applied only when the upstream's history started over (an etcd cluster
      // or a primary dict created again): never clamped, or the new history's first revisions
      // would be dropped as "already applied".
      const bool restarted = history_restarted_ || step.revision < applied;
      auto local = Commit(changes, step.revision, /*relist=*/true, restarted);
      if (!local.ok()) return local.status();
      history_restarted_ = false;
      if (step.identity != 0 && step.identity != recorded_identity_) {
        std::lock_guard lock(feed_mu_);
        Status recorded = feed_.SetUpstreamIdentity(step.identity);
        if (recorded.ok()) recorded_identity_ = step.identity;
      }
      spdlog::info("replica of {}: listed the upstream at revision {}: {} entries, {} changed",
                   upstream_.description(), step.revision, step.items.size(), changes.size());
      return Status();
    }
    case UpstreamStep::Kind::kChanges: {
      if (step.revision <= applied) return Status();  // already applied before a restart
      auto local = Commit(step.changes, step.revision);
      return local.ok() ? Status() : local.status();
    }
    case UpstreamStep::Kind::kProgress: {
      if (step.revision <= applied) return Status();
      auto local = Commit({}, step.revision);
      return local.ok() ? Status() : local.status();
    }
  }
  return Status();
}

void Applier::Sleep(std::chrono::milliseconds duration) {
  std::unique_lock lock(mu_);
  changed_.wait_for(lock, duration, [&] { return stopping_.load(std::memory_order_acquire); });
}

bool Applier::CheckIdentity() {
  auto identity = upstream_.Identity();
  if (!identity.ok()) {
    spdlog::warn("replica of {}: cannot reach the upstream: {}", upstream_.description(),
                 identity.status().ToString());
    return false;
  }
  if (*identity != 0 && recorded_identity_ != 0 && *identity != recorded_identity_) {
    spdlog::warn(
        "replica of {}: the upstream is another one (identity {:x}, was {:x}): its "
        "history started over; listing it again",
        upstream_.description(), *identity, recorded_identity_);
    history_restarted_ = true;
  }
  return true;
}

void Applier::Run() {
  std::mt19937_64 random{std::random_device{}()};
  std::chrono::milliseconds backoff = options_.initial_backoff;
  bool pause = false;
  while (!stopping_.load(std::memory_order_acquire)) {
    if (pause) {
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      Sleep(std::chrono::milliseconds(static_cast<int64_t>(backoff.count() * jitter(random))));
      backoff = std::min(backoff * 2, options_.max_backoff);
      if (stopping_.load(std::memory_order_acquire)) break;
      std::lock_guard lock(mu_);
      ++counters_.reconnects;
    }
    // Back off only after an attempt that got nowhere: a stream that delivered and then broke
    // (a member killed) is followed again at once, from the next endpoint.
    pause = true;
    if (!CheckIdentity()) {
      feed_.SetContact(false);
      continue;
    }
    const uint64_t from =
        history_restarted_ ? 0 : applied_upstream_.load(std::memory_order_acquire);
    auto stream = upstream_.Follow(from, [this](bool connected) { feed_.SetContact(connected); });
    if (!stream.ok()) {
      feed_.SetContact(false);
      spdlog::warn("replica of {}: cannot follow the upstream: {}", upstream_.description(),
                   stream.status().ToString());
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (stopping_.load(std::memory_order_acquire)) break;
      stream_ = std::move(*stream);
    }
    Status ended;
    bool delivered = false;
    while (!stopping_.load(std::memory_order_acquire)) {
      auto steps = stream_->Next(kPollInterval);
      if (!steps.ok()) {
        ended = steps.status();
        break;
      }
      for (UpstreamStep& step : *steps) {
        ended = ApplyStep(step);
        if (!ended.ok()) break;
      }
      if (!ended.ok()) break;
      if (!steps->empty()) {
        delivered = true;
        backoff = options_.initial_backoff;  // a working stream resets the backoff
        if (!ready_.load(std::memory_order_acquire)) {
          std::lock_guard lock(mu_);
          ready_.store(true, std::memory_order_release);
          changed_.notify_all();
        }
      }
    }
    {
      std::lock_guard lock(mu_);
      stream_.reset();
    }
    feed_.SetContact(false);
    if (stopping_.load(std::memory_order_acquire)) break;
    if (ended.code() == StatusCode::kFailedPrecondition &&
        ended.message().find("no longer owns") != std::string::npos) {
      spdlog::error("replica of {}: {}; stopping", upstream_.description(), ended.message());
      std::lock_guard lock(mu_);
      fatal_ = ended;
      changed_.notify_all();
      return;
    }
    if (ended.code() == StatusCode::kOutOfRange) {
      // The upstream says its revisions went back (a primary dict created again).
      history_restarted_ = true;
    }
    if (delivered && ended.code() != StatusCode::kOutOfRange) pause = false;
    spdlog::warn("replica of {}: the upstream stream ended: {}; following again",
                 upstream_.description(), ended.ToString());
  }
}

}  // namespace shmdict::replica
