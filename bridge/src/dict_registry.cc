#include "dict_registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "log_text.h"

namespace shmdict::bridge {

DictRegistry::DictRegistry(Limits limits, ServingCallback on_serving)
    : limits_(limits), on_serving_(std::move(on_serving)) {}

DictRegistry::~DictRegistry() { Shutdown(Status(StatusCode::kUnavailable, "the bridge stopped")); }

namespace {

Status Replaced(const std::string& name) {
  return Status(StatusCode::kAborted,
                "dict '" + name + "' was deleted or replaced: watch it again from revision 0");
}

Status ShuttingDown(std::string_view name) {
  return Status(StatusCode::kUnavailable,
                "dict '" + std::string(name) + "': the bridge is shutting down");
}

}  // namespace

Result<DictRegistry::Lease> DictRegistry::Acquire(std::string_view name) {
  // Cheap (a stat): catches a dict unlinked, or unlinked and created again, since the last call.
  Result<uint64_t> incarnation = Dict::IncarnationOf(name);
  std::shared_ptr<DictEntry> entry;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return ShuttingDown(name);
    auto it = entries_.find(name);
    if (it != entries_.end()) entry = it->second;
  }
  if (entry && (!incarnation.ok() || *incarnation != entry->incarnation)) {
    Forget(entry);
    Retire(entry, Replaced(entry->name));
    entry.reset();
  }
  if (!incarnation.ok()) {
    if (incarnation.status().code() == StatusCode::kNotFound) {
      return Status(StatusCode::kNotFound, "dict '" + std::string(name) + "' does not exist");
    }
    return incarnation.status();
  }
  if (entry) {
    Result<SharedDict::Lease> handle = entry->handles.Acquire();
    if (handle.ok()) return Lease(entry, std::move(*handle));
    // Replaced or unlinked since the stat, or retired by another call meanwhile: register the
    // dict now under the name, if there is one.
    if (handle.status().code() == StatusCode::kAborted ||
        handle.status().code() == StatusCode::kNotFound) {
      Forget(entry);
      Retire(entry, Replaced(entry->name));
    } else if (handle.status().code() != StatusCode::kFailedPrecondition) {
      return handle.status();
    }
  }
  Options options;
  options.name = std::string(name);
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  Result<SharedDict> opened = SharedDict::Open(options, limits_.max_idle_handles_per_dict);
  if (!opened.ok()) return opened.status();
  // First use of this dict (or of its new incarnation): register it.
  auto fresh = std::make_shared<DictEntry>(std::move(*opened));
  bool announce = false;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) return ShuttingDown(name);
    auto [it, inserted] = entries_.try_emplace(fresh->name, fresh);
    if (!inserted && it->second->incarnation != fresh->incarnation) {
      // Another call registered an incarnation meanwhile; the newest one opened wins.
      it->second = fresh;
      inserted = true;
    }
    entry = it->second;
    announce = inserted;
  }
  // When another call registered the same incarnation first, `fresh` closes here (it attached,
  // so closing unlinks nothing) and the lease comes from the registered entry.
  if (announce && on_serving_) on_serving_(entry->name, true);
  Result<SharedDict::Lease> handle = entry->handles.Acquire();
  if (!handle.ok()) return handle.status();
  return Lease(entry, std::move(*handle));
}

void DictRegistry::Forget(const std::shared_ptr<DictEntry>& entry) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(entry->name);
  if (it != entries_.end() && it->second == entry) entries_.erase(it);
}

void DictRegistry::Subscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber) {
  std::lock_guard lock(entry->subscribers_mu);
  if (entry->retired.load()) {
    // The reason it retired: a Get or Watch racing Shutdown ends UNAVAILABLE like the others,
    // not ABORTED (which would tell its client to resubscribe from revision 0).
    subscriber->End(entry->retire_status);
    return;
  }
  if (entry->subscribers.insert(subscriber).second && subscriber->IsWatchStream()) {
    ++entry->watch_streams;
  }
  if (!entry->notifier.joinable()) {
    entry->notifier = std::thread([this, entry] { RunNotifier(entry); });
  }
}

std::shared_ptr<WatchPump> DictRegistry::SubscribeWatch(const std::shared_ptr<DictEntry>& entry,
                                                        Subscriber* subscriber,
                                                        const WatchPump::Limits& limits) {
  // A failed pump is replaced, and released outside subscribers_mu (its last reference closes
  // its handle); the streams still holding it read on their own.
  std::shared_ptr<WatchPump> failed;
  std::lock_guard lock(entry->subscribers_mu);
  if (entry->retired.load()) {
    subscriber->End(entry->retire_status);
    return nullptr;
  }
  if (entry->subscribers.insert(subscriber).second) ++entry->watch_streams;
  if (entry->pump && entry->pump->failed()) failed = std::move(entry->pump);
  if (!entry->pump) {
    // Its own handle, out of the pool for good (its watcher fails once the handle closes).
    Result<SharedDict::Lease> handle = entry->handles.Acquire();
    Result<std::shared_ptr<WatchPump>> pump =
        handle.ok() ? WatchPump::Start(handle->Release(), limits)
                    : Result<std::shared_ptr<WatchPump>>(handle.status());
    if (pump.ok()) {
      entry->pump = std::move(*pump);
    } else {
      spdlog::warn("watch pump not started dict={}: {} (streams read on their own)",
                   LogText(entry->name), pump.status().ToString());
    }
  }
  if (!entry->notifier.joinable()) {
    entry->notifier = std::thread([this, entry] { RunNotifier(entry); });
  }
  return entry->pump;
}

Result<DictRegistry::Lease> DictRegistry::Reacquire(const std::shared_ptr<DictEntry>& entry) {
  Result<SharedDict::Lease> handle = entry->handles.Acquire();
  // A retired entry's pool is closed (FAILED_PRECONDITION): a stream that reacquires while the
  // registry retires it ends with the reason it retired instead (UNAVAILABLE at shutdown, on
  // which clients resume; ABORTED for a replaced dict), as Retire's End would have told it. CI
  // saw a watcher end with FAILED_PRECONDITION at a bridge's SIGTERM. retire_status is written
  // once, before `retired` (Retire), so it is read safely once `retired` is seen.
  if (!handle.ok() && entry->retired.load()) return entry->retire_status;
  if (!handle.ok()) return handle.status();
  return Lease(entry, std::move(*handle));
}

void DictRegistry::Unsubscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber) {
  std::shared_ptr<WatchPump> stopped;  // released outside the lock: it closes a handle
  std::lock_guard lock(entry->subscribers_mu);
  if (entry->subscribers.erase(subscriber) == 0 || !subscriber->IsWatchStream()) return;
  if (entry->watch_streams > 0 && --entry->watch_streams == 0) stopped = std::move(entry->pump);
}

void DictRegistry::RunNotifier(std::shared_ptr<DictEntry> entry) {
  // The notifier's own handle, out of the pool for good: WaitForChange sleeps on it between
  // ticks, and a leased handle would be one fewer for the calls.
  std::unique_ptr<Dict> dict;
  Status no_handle;
  if (Result<SharedDict::Lease> lease = entry->handles.Acquire(); lease.ok()) {
    dict = lease->Release();
  } else {
    no_handle = lease.status();
  }
  uint64_t seen = dict ? dict->published_revision() : 0;
  auto next_check = std::chrono::steady_clock::now();
  for (;;) {
    if (dict) {
      Result<uint64_t> changed = dict->WaitForChange(seen, limits_.tick);
      if (changed.ok()) seen = *changed;
    } else {
      std::this_thread::sleep_for(limits_.tick);
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_check) {
      next_check = now + limits_.tick * 4;
      Result<uint64_t> incarnation = Dict::IncarnationOf(entry->name);
      if (!incarnation.ok() || *incarnation != entry->incarnation) {
        Forget(entry);
        Retire(entry, Replaced(entry->name));
      } else if (!dict) {
        // The same dict, but this bridge could not open a handle of it (EMFILE, ENOMEM, a damaged
        // segment): UNAVAILABLE, on which clients resume where they were. ABORTED would tell them
        // the dict was replaced, and they would start over from revision 0 (or end their
        // watchers) for a dict that never changed.
        Forget(entry);
        Retire(entry, Status(StatusCode::kUnavailable,
                             "dict '" + entry->name + "': the bridge could not open a handle (" +
                                 no_handle.ToString() + "): try again"));
      }
    }
    std::shared_ptr<WatchPump> pump;
    {
      std::lock_guard lock(entry->subscribers_mu);
      if (entry->notifier_stop) return;
      pump = entry->pump;
    }
    // Outside subscribers_mu: encoding a large batch must not hold up Subscribe and Unsubscribe.
    if (pump) entry->pump_restarts.fetch_add(pump->Fill(), std::memory_order_relaxed);
    std::lock_guard lock(entry->subscribers_mu);
    if (entry->notifier_stop) return;
    for (Subscriber* subscriber : entry->subscribers) subscriber->Pump();
  }
}

void DictRegistry::Retire(const std::shared_ptr<DictEntry>& entry, const Status& why) {
  {
    // The status is set before `retired`, under the lock Subscribe reads both under.
    std::lock_guard lock(entry->subscribers_mu);
    if (entry->retired.load()) return;
    entry->retire_status = why;
    entry->retired.store(true);
  }
  // Leases still out close their handles when they return them.
  entry->handles.Close().IgnoreError();
  // Released outside subscribers_mu, as in Unsubscribe: the last reference closes its handle.
  std::shared_ptr<WatchPump> stopped;
  {
    std::lock_guard lock(entry->subscribers_mu);
    for (Subscriber* subscriber : entry->subscribers) subscriber->End(why);
    entry->subscribers.clear();
    entry->watch_streams = 0;
    stopped = std::move(entry->pump);
    entry->notifier_stop = true;
  }
  stopped.reset();
  if (on_serving_) on_serving_(entry->name, false);
  // The notifier thread retires its own entry: it cannot join itself, so it detaches.
  if (entry->notifier.joinable()) {
    if (entry->notifier.get_id() == std::this_thread::get_id()) {
      entry->notifier.detach();
    } else {
      entry->notifier.join();
    }
  }
}

void DictRegistry::Shutdown(const Status& status) {
  std::map<std::string, std::shared_ptr<DictEntry>, std::less<>> entries;
  {
    std::lock_guard lock(mu_);
    shut_down_ = true;
    entries.swap(entries_);
  }
  for (auto& [name, entry] : entries) Retire(entry, status);
  std::thread housekeeping;
  {
    // Streams not subscribed to any dict (waiting for their start message) end here; the
    // subscribed ones already ended above, and End is idempotent. Each is told once and then
    // forgotten: a second Shutdown (the destructor's) must not call a stream that has since
    // finished and been freed without untracking itself.
    std::lock_guard lock(streams_mu_);
    streams_closed_ = true;
    for (Subscriber* stream : streams_) stream->End(status);
    streams_.clear();
    housekeeping.swap(housekeeping_);
  }
  streams_cv_.notify_all();
  if (housekeeping.joinable()) housekeeping.join();
}

bool DictRegistry::Track(Subscriber* stream) {
  std::lock_guard lock(streams_mu_);
  if (streams_closed_) return false;
  streams_.insert(stream);
  if (!housekeeping_.joinable()) housekeeping_ = std::thread([this] { RunHousekeeping(); });
  return true;
}

void DictRegistry::Untrack(Subscriber* stream) {
  std::lock_guard lock(streams_mu_);
  streams_.erase(stream);
}

void DictRegistry::PokeAll() {
  std::lock_guard lock(streams_mu_);
  for (Subscriber* stream : streams_) stream->Pump();
}

void DictRegistry::RunHousekeeping() {
  std::unique_lock lock(streams_mu_);
  while (!streams_closed_) {
    // Coarser than the notifiers' tick: only start timeouts and token generations need it.
    streams_cv_.wait_for(lock, limits_.tick * 4);
    if (streams_closed_) return;
    for (Subscriber* stream : streams_) stream->Pump();
  }
}

std::vector<std::string> DictRegistry::AttachedNames() {
  std::lock_guard lock(mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

std::vector<std::shared_ptr<DictEntry>> DictRegistry::Entries() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<DictEntry>> entries;
  for (const auto& [name, entry] : entries_) entries.push_back(entry);
  return entries;
}

std::vector<DictStats> DictRegistry::Stats() {
  // Each entry's locks are taken after mu_ is released: nothing holds both.
  const std::vector<std::shared_ptr<DictEntry>> entries = Entries();
  std::vector<DictStats> stats;
  for (const auto& entry : entries) {
    DictStats dict;
    dict.name = entry->name;
    Result<Lease> lease = Acquire(entry->name);
    if (lease.ok()) {
      dict.revision = lease->dict().published_revision();
      // Only a replica's status is read: GetStatus counts entries, more than a scrape should
      // cost for every dict.
      if (lease->dict().is_replica()) {
        const DictStatus status = lease->dict().GetStatus();
        dict.replica = true;
        dict.upstream_revision = status.upstream_revision.value_or(0);
        dict.upstream_connected = status.upstream_connected.value_or(false) ? 1 : 0;
        dict.last_upstream_contact_ms = status.last_upstream_contact.value_or(0);
      }
    }
    dict.writes = entry->writes.load(std::memory_order_relaxed);
    dict.changes_sent = entry->changes_sent.load(std::memory_order_relaxed);
    dict.watch_joins = entry->watch_joins.load(std::memory_order_relaxed);
    dict.watch_leaves = entry->watch_leaves.load(std::memory_order_relaxed);
    dict.pump_restarts = entry->pump_restarts.load(std::memory_order_relaxed);
    {
      std::lock_guard lock(entry->subscribers_mu);
      for (Subscriber* subscriber : entry->subscribers) {
        if (!subscriber->IsWatchStream()) continue;
        ++dict.subscribers;
        const uint64_t sent = subscriber->SentRevision();
        if (sent < dict.revision)
          dict.slowest_lag = std::max(dict.slowest_lag, dict.revision - sent);
      }
    }
    stats.push_back(std::move(dict));
  }
  return stats;
}

std::map<std::string, uint64_t> DictRegistry::SubscriberCounts() {
  const std::vector<std::shared_ptr<DictEntry>> entries = Entries();
  std::map<std::string, uint64_t> counts;
  for (const auto& entry : entries) {
    std::lock_guard lock(entry->subscribers_mu);
    uint64_t& streams = counts[entry->name];
    for (const Subscriber* subscriber : entry->subscribers) {
      if (subscriber->IsWatchStream()) ++streams;
    }
  }
  return counts;
}

}  // namespace shmdict::bridge
