// The limit: a plain std::unordered_map<std::string, std::string> in the harness process. No
// sharing, no locking, no copy out of shared memory: what a process-local dict costs.
#include <malloc.h>

#include <string>
#include <unordered_map>

#include "client_peer.h"
#include "systems.h"

namespace peers {
namespace {

double HeapInUseKiB() {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<double>(info.uordblks + info.hblkhd) / 1024;
}

class MapClient {
 public:
  static constexpr const char* kName = "unordered_map";
  static constexpr bool kCrossProcess = false;

  static std::string Unavailable() { return ""; }

  static std::string Describe() {
    return "std::unordered_map<std::string, std::string> in the harness process (the limit). "
           "Read: find + copy into a reused std::string. Write: map[key].assign(value). Bulk "
           "import: one emplace per key. Keys are assigned into a reused std::string first (no "
           "allocation: they fit the small-string buffer).";
  }
  static std::string WatchUnavailable(WatchMode) {
    return "process-local: no other process can see its changes";
  }
  static std::string WatchDescription(WatchMode) { return ""; }

  static std::unique_ptr<MapClient> Create(const std::string&, const Workload&) {
    return std::make_unique<MapClient>();
  }

  MapClient() : heap_at_start_kib_(HeapInUseKiB()) {}

  std::string where() const { return ""; }

  std::optional<std::string_view> Get(std::string_view key) {
    key_.assign(key);
    auto it = map_.find(key_);
    if (it == map_.end()) return std::nullopt;
    out_ = it->second;
    return std::string_view(out_);
  }

  void Set(std::string_view key, std::string_view value) {
    key_.assign(key);
    map_[key_].assign(value);
  }

  void Import(const Workload& w, size_t) {
    for (uint64_t i = 0; i < w.n; ++i) {
      map_.emplace(std::string(w.key(static_cast<uint32_t>(i))),
                   std::string(w.value(static_cast<uint32_t>(i), 0)));
    }
    imported_kib_ = HeapInUseKiB() - heap_at_start_kib_;
  }

  uint64_t Count() { return map_.size(); }

  // Taken right after the import, not later: the harness's heap also holds other systems'
  // process-local state (shmdict's overlay, client buffers), which must not count here.
  // Overwrites with same-size values do not grow the map.
  Memory StoreMemory() {
    Memory m;
    m.kib = imported_kib_;
    m.how = "heap growth (mallinfo2) during the map's import";
    return m;
  }

 private:
  std::unordered_map<std::string, std::string> map_;
  std::string key_;
  std::string out_;
  double heap_at_start_kib_;
  double imported_kib_ = 0;
};

}  // namespace

std::unique_ptr<Peer> MakeMapPeer() { return std::make_unique<ClientPeer<MapClient>>(); }

}  // namespace peers
