#include "systems.h"

#include <string>
#include <utility>

namespace peers {
namespace {

// A system that cannot run here: every workload reports its reason as n/a.
class UnavailablePeer final : public Peer {
 public:
  UnavailablePeer(std::string name, std::string reason)
      : name_(std::move(name)), reason_(std::move(reason)) {}
  std::string name() const override { return name_; }
  std::string description() const override { return "n/a: " + reason_; }
  std::string unavailable() const override { return reason_; }
  void Start(const Workload&, const Config&) override { Fail(reason_); }
  RunResult Run(const RunSpec&) override { Fail(reason_); }
  Memory StoreMemory() override { Fail(reason_); }
  std::string MultiUnavailable() const override { return reason_; }
  MultiResult RunMulti(int, int64_t) override { Fail(reason_); }
  std::string WatchUnavailable(WatchMode) const override { return reason_; }
  std::string WatchDescription(WatchMode) const override { return ""; }
  WatchResult RunWatch(WatchMode, int, int64_t) override { Fail(reason_); }
  void Stop() override {}
  BulkResult BulkImport(const Workload&, const Config&) override { Fail(reason_); }

 private:
  std::string name_;
  std::string reason_;
};

}  // namespace

std::unique_ptr<Peer> MakeUnavailablePeer(std::string name, std::string reason) {
  return std::make_unique<UnavailablePeer>(std::move(name), std::move(reason));
}

std::vector<std::unique_ptr<Peer>> MakeAllPeers(const Config& config) {
  std::vector<std::unique_ptr<Peer>> all;
  all.push_back(MakeShmdictPeer());
  all.push_back(MakeMapPeer());
#if SHMDICT_PEERS_HAVE_LMDB
  all.push_back(MakeLmdbPeer());
#else
  all.push_back(MakeUnavailablePeer("lmdb", SHMDICT_PEERS_LMDB_NA));
#endif
#if SHMDICT_PEERS_HAVE_BOOST
  all.push_back(MakeBoostPeer());
#else
  all.push_back(MakeUnavailablePeer("boost_interprocess", SHMDICT_PEERS_BOOST_NA));
#endif
#if SHMDICT_PEERS_HAVE_REDIS
  all.push_back(MakeRedisPeer());
#else
  all.push_back(MakeUnavailablePeer("redis", SHMDICT_PEERS_REDIS_NA));
#endif
  all.push_back(MakeManagerPeer(config));
  return all;
}

ChildMain ChildMainFor(const std::string& system) {
  if (system == "shmdict") return ShmdictChildMain;
#if SHMDICT_PEERS_HAVE_LMDB
  if (system == "lmdb") return LmdbChildMain;
#endif
#if SHMDICT_PEERS_HAVE_BOOST
  if (system == "boost_interprocess") return BoostChildMain;
#endif
#if SHMDICT_PEERS_HAVE_REDIS
  if (system == "redis") return RedisChildMain;
#endif
  return nullptr;
}

}  // namespace peers
