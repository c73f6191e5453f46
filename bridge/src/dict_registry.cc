#include "dict_registry.h"

#include <algorithm>

#include <utility>

namespace shmdict::bridge {

DictRegistry::DictRegistry(Limits limits, ServingCallback on_serving)
    : limits_(limits), on_serving_(std::move(on_serving)) {}

DictRegistry::~DictRegistry() { Shutdown(Status(StatusCode::kUnavailable, "the bridge stopped")); }

DictRegistry::Lease::~Lease() {
  if (!dict_ || !entry_) return;
  if (entry_->retired.load(std::memory_order_acquire)) return;  // the dict was replaced
  std::lock_guard lock(entry_->pool_mu);
  if (entry_->idle.size() < 8) entry_->idle.push_back(std::move(dict_));
}

Result<DictRegistry::Lease> DictRegistry::Acquire(std::string_view name) {
  // Cheap (a stat): catches a dict unlinked, or unlinked and created again, since the last call.
  Result<uint64_t> incarnation = Dict::IncarnationOf(name);
  std::shared_ptr<DictEntry> entry;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) {
      return Status(StatusCode::kUnavailable,
                    "dict '" + std::string(name) + "': the bridge is shutting down");
    }
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      if (incarnation.ok() && *incarnation == it->second->incarnation) {
        entry = it->second;
      } else {
        entry = it->second;
        entries_.erase(it);
      }
    }
  }
  if (entry && (!incarnation.ok() || *incarnation != entry->incarnation)) {
    Retire(entry, Status(StatusCode::kAborted,
                         "dict '" + std::string(name) +
                             "' was deleted or replaced: watch it again from revision 0"));
    entry.reset();
  }
  if (!incarnation.ok()) {
    if (incarnation.status().code() == StatusCode::kNotFound) {
      return Status(StatusCode::kNotFound, "dict '" + std::string(name) + "' does not exist");
    }
    return incarnation.status();
  }
  if (entry) {
    std::unique_ptr<Dict> dict;
    {
      std::lock_guard lock(entry->pool_mu);
      if (!entry->idle.empty()) {
        dict = std::move(entry->idle.back());
        entry->idle.pop_back();
      }
    }
    if (dict) return Lease(entry, std::move(dict));
  }
  Options options;
  options.name = std::string(name);
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  Result<Dict> opened = Dict::Open(options);
  if (!opened.ok()) return opened.status();
  auto dict = std::make_unique<Dict>(std::move(*opened));
  if (entry && dict->incarnation() == entry->incarnation) return Lease(entry, std::move(dict));
  // First use of this dict (or of its new incarnation): register it.
  auto fresh = std::make_shared<DictEntry>();
  fresh->name = std::string(name);
  fresh->incarnation = dict->incarnation();
  bool announce = false;
  {
    std::lock_guard lock(mu_);
    if (shut_down_) {
      return Status(StatusCode::kUnavailable,
                    "dict '" + std::string(name) + "': the bridge is shutting down");
    }
    auto [it, inserted] = entries_.try_emplace(fresh->name, fresh);
    if (!inserted && it->second->incarnation != fresh->incarnation) {
      // Another call registered an incarnation meanwhile; the newest one opened wins.
      it->second = fresh;
      inserted = true;
    }
    entry = it->second;
    announce = inserted;
  }
  if (announce && on_serving_) on_serving_(entry->name, true);
  return Lease(entry, std::move(dict));
}

void DictRegistry::Subscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber) {
  std::lock_guard lock(entry->subscribers_mu);
  if (entry->retired.load()) {
    subscriber->End(Status(StatusCode::kAborted, "dict '" + entry->name +
                                                     "' was deleted or replaced: watch it again "
                                                     "from revision 0"));
    return;
  }
  entry->subscribers.insert(subscriber);
  if (!entry->notifier.joinable()) {
    entry->notifier = std::thread([this, entry] { RunNotifier(entry); });
  }
}

void DictRegistry::Unsubscribe(const std::shared_ptr<DictEntry>& entry, Subscriber* subscriber) {
  std::lock_guard lock(entry->subscribers_mu);
  entry->subscribers.erase(subscriber);
}

void DictRegistry::RunNotifier(std::shared_ptr<DictEntry> entry) {
  // The notifier's own handle: WaitForChange needs one, and it must not be a pooled one.
  Options options;
  options.name = entry->name;
  options.create_mode = CreateMode::kMustAttach;
  options.auto_unlink = false;
  Result<Dict> opened = Dict::Open(options);
  std::optional<Dict> dict;
  if (opened.ok() && opened->incarnation() == entry->incarnation) dict.emplace(std::move(*opened));
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
      if (!dict || !incarnation.ok() || *incarnation != entry->incarnation) {
        {
          std::lock_guard lock(mu_);
          auto it = entries_.find(entry->name);
          if (it != entries_.end() && it->second == entry) entries_.erase(it);
        }
        Retire(entry, Status(StatusCode::kAborted,
                             "dict '" + entry->name +
                                 "' was deleted or replaced: watch it again from revision 0"));
      }
    }
    std::lock_guard lock(entry->subscribers_mu);
    if (entry->notifier_stop) return;
    for (Subscriber* subscriber : entry->subscribers) subscriber->Pump();
  }
}

void DictRegistry::Retire(const std::shared_ptr<DictEntry>& entry, const Status& why) {
  if (entry->retired.exchange(true)) return;
  {
    std::lock_guard lock(entry->pool_mu);
    entry->idle.clear();
  }
  {
    std::lock_guard lock(entry->subscribers_mu);
    for (Subscriber* subscriber : entry->subscribers) subscriber->End(why);
    entry->subscribers.clear();
    entry->notifier_stop = true;
  }
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
    if (lease.ok()) dict.revision = lease->dict().published_revision();
    dict.writes = entry->writes.load(std::memory_order_relaxed);
    dict.changes_sent = entry->changes_sent.load(std::memory_order_relaxed);
    {
      std::lock_guard lock(entry->subscribers_mu);
      dict.subscribers = entry->subscribers.size();
      for (Subscriber* subscriber : entry->subscribers) {
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
    counts[entry->name] = entry->subscribers.size();
  }
  return counts;
}

}  // namespace shmdict::bridge
