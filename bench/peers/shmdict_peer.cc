// shmdict through its public API only (shmdict::Dict), with default Options except the name.
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "client_peer.h"
#include "shmdict/dict.h"
#include "shmdict/status.h"
#include "shmdict/value.h"
#include "systems.h"

namespace peers {
namespace {

template <typename T>
T Check(shmdict::Result<T> result, std::string_view what) {
  if (!result.ok()) Fail(std::string(what) + ": " + result.status().ToString());
  return std::move(result).value();
}

class ShmdictClient {
 public:
  static constexpr const char* kName = "shmdict";
  static constexpr bool kCrossProcess = true;

  static std::string Unavailable() { return ""; }

  static std::string Describe() {
    return "shmdict::Dict through POSIX shared memory, default Options (4 MiB log, background "
           "compaction). Read: Get(key, &value) copies into a reused Value (one atomic load when "
           "nothing changed, else a catch-up from the log first). Write: Set() commits one "
           "revision under the cross-process writer lock. Bulk import: Update() of 'batch' items "
           "per call (one revision each). Attach: Dict::Open(kMustAttach) + first Get.";
  }
  static std::string WatchUnavailable(WatchMode) { return ""; }
  static std::string WatchDescription(WatchMode mode) {
    return mode == WatchMode::kPoll
               ? "spinning reader: polls published_revision() (one atomic load), then Get"
               : "blocking reader: WaitForChange(revision, timeout) (futex), then Get";
  }

  static std::unique_ptr<ShmdictClient> Create(const std::string& tag, const Workload&) {
    static int count = 0;
    shmdict::Options options;
    options.name = NewName("shmdict_" + tag + std::to_string(count++));
    options.create_mode = shmdict::CreateMode::kMustCreate;
    options.auto_unlink = true;
    return std::unique_ptr<ShmdictClient>(
        new ShmdictClient(Check(shmdict::Dict::Open(options), "Dict::Open(kMustCreate)")));
  }

  static std::unique_ptr<ShmdictClient> Connect(const std::string& where) {
    shmdict::Options options;
    options.name = where;
    options.create_mode = shmdict::CreateMode::kMustAttach;
    return std::unique_ptr<ShmdictClient>(
        new ShmdictClient(Check(shmdict::Dict::Open(options), "Dict::Open(kMustAttach)")));
  }

  std::string where() const { return dict_.name(); }

  std::optional<std::string_view> Get(std::string_view key) {
    if (!*dict_.Get(key, &value_)) return std::nullopt;  // local reads are always OK
    return std::string_view(value_.data());
  }

  void Set(std::string_view key, std::string_view value) {
    scratch_.assign(shmdict::ValueType::kString, value);  // reuses its buffer: no allocation
    if (auto r = dict_.Set(key, scratch_); !r.ok()) {
      Fail("Set('" + std::string(key) + "'): " + r.status().ToString());
    }
  }

  void Import(const Workload& w, size_t batch) {
    std::vector<std::pair<std::string, shmdict::Value>> items;
    items.reserve(batch);
    for (uint64_t i = 0; i < w.n; i += batch) {
      items.clear();
      for (uint64_t j = i; j < std::min<uint64_t>(w.n, i + batch); ++j) {
        items.emplace_back(std::string(w.key(static_cast<uint32_t>(j))),
                           shmdict::Value::Str(w.value(static_cast<uint32_t>(j), 0)));
      }
      Check(dict_.Update(items), "Update (import)");
    }
  }

  uint64_t Count() { return *dict_.Size(); }

  Memory StoreMemory() {
    Memory m;
    m.kib = static_cast<double>(TmpfsBytes(NameIsShmdictDict, "shmdict." + dict_.name())) / 1024;
    m.how = "tmpfs pages of the dict's segments (/dev/shm/shmdict.NAME*: header, log, snapshots)";
    return m;
  }

  void BeginWatch(WatchMode) {}
  void EndWatch(WatchMode) {}
  void PrepareWatch(std::string_view, WatchMode) { seen_ = dict_.revision(); }

  std::string_view AwaitChange(std::string_view key, std::string_view last, WatchMode mode) {
    for (;;) {
      if (mode == WatchMode::kPoll) {
        while (dict_.published_revision() == seen_) {
          __builtin_ia32_pause();  // be kind to a sibling hyperthread; costs ~tens of ns
        }
      } else {
        Check(dict_.WaitForChange(seen_, std::chrono::seconds(60)), "WaitForChange");
      }
      seen_ = dict_.revision();
      if (std::optional<std::string_view> v = Get(key); v && *v != last) return *v;
    }
  }

 private:
  explicit ShmdictClient(shmdict::Dict dict) : dict_(std::move(dict)) {}

  shmdict::Dict dict_;
  shmdict::Value value_;
  shmdict::Value scratch_;
  uint64_t seen_ = 0;
};

}  // namespace

std::unique_ptr<Peer> MakeShmdictPeer() { return std::make_unique<ClientPeer<ShmdictClient>>(); }
int ShmdictChildMain(const ChildArgs& args) { return ClientChildMain<ShmdictClient>(args); }

}  // namespace peers
