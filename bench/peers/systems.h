// The systems the harness compares, one factory and one child entry point each. A system whose
// library was not found at configure time is not compiled (SHMDICT_PEERS_HAVE_* is 0) and reports
// "n/a: not built: ... missing" instead (see systems.cc).
#ifndef SHMDICT_BENCH_PEERS_SYSTEMS_H_
#define SHMDICT_BENCH_PEERS_SYSTEMS_H_

#include <memory>

#include "client_peer.h"
#include "peer.h"

namespace peers {

std::unique_ptr<Peer> MakeShmdictPeer();
int ShmdictChildMain(const ChildArgs& args);

std::unique_ptr<Peer> MakeMapPeer();

#if SHMDICT_PEERS_HAVE_LMDB
std::unique_ptr<Peer> MakeLmdbPeer();
int LmdbChildMain(const ChildArgs& args);
#endif

#if SHMDICT_PEERS_HAVE_BOOST
std::unique_ptr<Peer> MakeBoostPeer();
int BoostChildMain(const ChildArgs& args);
#endif

#if SHMDICT_PEERS_HAVE_REDIS
std::unique_ptr<Peer> MakeRedisPeer();
int RedisChildMain(const ChildArgs& args);
#endif

// Drives bench/peers/manager_peer.py (config.python, config.manager_script).
std::unique_ptr<Peer> MakeManagerPeer(const Config& config);

}  // namespace peers

#endif  // SHMDICT_BENCH_PEERS_SYSTEMS_H_
