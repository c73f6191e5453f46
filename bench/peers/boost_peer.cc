// Boost.Interprocess as a user shares a map: boost::interprocess::map of shared-memory
// basic_strings in a managed_shared_memory segment, guarded by one interprocess_mutex (a
// process-shared pthread mutex on Linux) held for every read and every write. A reader copies the
// value out under the lock and verifies it after unlocking.
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <boost/version.hpp>

#include <algorithm>
#include <string>

#include "client_peer.h"
#include "systems.h"

namespace peers {
namespace {

namespace bip = boost::interprocess;
using Segment = bip::managed_shared_memory;
using SegmentManager = Segment::segment_manager;
using CharAllocator = bip::allocator<char, SegmentManager>;
using ShmString = bip::basic_string<char, std::char_traits<char>, CharAllocator>;

// Transparent, so a lookup compares the caller's string_view in place instead of first building a
// ShmString, which would allocate in the segment under the lock.
struct KeyLess {
  using is_transparent = void;
  static std::string_view View(const ShmString& s) { return {s.data(), s.size()}; }
  static std::string_view View(std::string_view s) { return s; }
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return View(a) < View(b);
  }
};

using Entry = std::pair<const ShmString, ShmString>;
using EntryAllocator = bip::allocator<Entry, SegmentManager>;
using ShmMap = bip::map<ShmString, ShmString, KeyLess, EntryAllocator>;
using Lock = bip::scoped_lock<bip::interprocess_mutex>;

class BoostClient : public PollingWatch<BoostClient> {
 public:
  static constexpr const char* kName = "boost_interprocess";
  static constexpr bool kCrossProcess = true;

  static std::string Unavailable() { return ""; }

  static std::string Describe() {
    return "Boost " BOOST_LIB_VERSION
           ". boost::interprocess::map<basic_string, basic_string> (shared-memory allocator) in a "
           "managed_shared_memory segment, one interprocess_mutex held for every read (find with "
           "a transparent comparator + copy out) and every write (find + assign in place, or "
           "insert). Bulk import: the lock held for 'batch' inserts at a time. Attach: open the "
           "segment, find the map and the mutex, lock, first find.";
  }
  static std::string WatchUnavailable(WatchMode mode) {
    return mode == WatchMode::kNotify
               ? "a plain map has no change notification (it would need an interprocess_condition "
                 "every writer signals)"
               : "";
  }
  static std::string WatchDescription(WatchMode) {
    return "polling reader (no notification): lock, find, copy, unlock, until the value changes";
  }

  static std::unique_ptr<BoostClient> Create(const std::string& tag, const Workload& sizing) {
    static int count = 0;
    const std::string name = NewName("boost_" + tag + std::to_string(count++));
    // Sparse on tmpfs: only the pages the allocator touches cost memory.
    const uint64_t size = (uint64_t{32} << 20) + sizing.n * (sizing.value_bytes + 256) * 2;
    auto client = std::unique_ptr<BoostClient>(new BoostClient());
    client->name_ = name;
    client->owner_ = true;
    try {
      client->segment_ = Segment(bip::create_only, name.c_str(), size);
      client->map_ = client->segment_.construct<ShmMap>("map")(
          KeyLess(), EntryAllocator(client->segment_.get_segment_manager()));
      client->mutex_ = client->segment_.construct<bip::interprocess_mutex>("mutex")();
    } catch (const bip::interprocess_exception& e) {
      Fail("boost segment " + name + ": " + e.what());
    }
    return client;
  }

  static std::unique_ptr<BoostClient> Connect(const std::string& where) {
    auto client = std::unique_ptr<BoostClient>(new BoostClient());
    client->name_ = where;
    try {
      client->segment_ = Segment(bip::open_only, where.c_str());
      client->map_ = client->segment_.find<ShmMap>("map").first;
      client->mutex_ = client->segment_.find<bip::interprocess_mutex>("mutex").first;
    } catch (const bip::interprocess_exception& e) {
      Fail("boost segment " + where + ": " + e.what());
    }
    if (client->map_ == nullptr || client->mutex_ == nullptr) Fail("boost: segment lacks the map");
    return client;
  }

  ~BoostClient() {
    if (owner_) {
      segment_ = Segment();
      bip::shared_memory_object::remove(name_.c_str());
    }
  }

  std::string where() const { return name_; }

  std::optional<std::string_view> Get(std::string_view key) {
    {
      Lock lock(*mutex_);
      auto it = map_->find(key);
      if (it == map_->end()) return std::nullopt;
      out_.assign(it->second.data(), it->second.size());
    }
    return std::string_view(out_);
  }

  void Set(std::string_view key, std::string_view value) {
    Lock lock(*mutex_);
    if (auto it = map_->find(key); it != map_->end()) {
      it->second.assign(value.begin(), value.end());
    } else {
      Insert(key, value);
    }
  }

  void Import(const Workload& w, size_t batch) {
    for (uint64_t i = 0; i < w.n; i += batch) {
      Lock lock(*mutex_);
      for (uint64_t j = i; j < std::min<uint64_t>(w.n, i + batch); ++j) {
        Insert(w.key(static_cast<uint32_t>(j)), w.value(static_cast<uint32_t>(j), 0));
      }
    }
  }

  uint64_t Count() {
    Lock lock(*mutex_);
    return map_->size();
  }

  Memory StoreMemory() {
    Memory m;
    m.kib = static_cast<double>(TmpfsBytes(NameIsExactly, name_)) / 1024;
    m.how = "tmpfs pages of the managed_shared_memory segment";
    return m;
  }

 private:
  BoostClient() = default;

  void Insert(std::string_view key, std::string_view value) {
    try {
      const CharAllocator alloc(segment_.get_segment_manager());
      map_->emplace(ShmString(key.begin(), key.end(), alloc),
                    ShmString(value.begin(), value.end(), alloc));
    } catch (const bip::bad_alloc&) {
      Fail("boost segment " + name_ + " is full");
    }
  }

  std::string name_;
  bool owner_ = false;
  Segment segment_;
  ShmMap* map_ = nullptr;
  bip::interprocess_mutex* mutex_ = nullptr;
  std::string out_;
};

}  // namespace

std::unique_ptr<Peer> MakeBoostPeer() { return std::make_unique<ClientPeer<BoostClient>>(); }
int BoostChildMain(const ChildArgs& args) { return ClientChildMain<BoostClient>(args); }

}  // namespace peers
