// AddServingFlags: the command-line flags of a program that serves shmdict.v1.Dict, bound to the
// fields of a BridgeConfig (which holds every default: the help shows the values found there).
// shmdict-bridge binds them all; shmdict-replica (bridge/replica) binds the set that serves one
// dict it keeps itself: the same listeners, TLS, tokens, limits, health, metrics and log, without
// the flags that choose or create dicts or decide the process's lifetime.
//
// Flags whose text is converted (--create-mode, --socket-mode: octal; --idle-exit: seconds;
// --max-wait-ms) are written into the config when they are parsed: a bad value ends the parse with
// a CLI::ValidationError naming the flag, as a bad number does. ValidateConfig (bridge_config.h)
// still judges the combination once parsing is done.
//
// Thread-safety: call before parsing, from the thread that parses. Lifetime: `config` must outlive
// the parse of `app` (the options write into it).
#ifndef SHMDICT_BRIDGE_BRIDGE_FLAGS_H_
#define SHMDICT_BRIDGE_BRIDGE_FLAGS_H_

#include "bridge_config.h"

namespace CLI {
class App;
}  // namespace CLI

namespace shmdict::bridge {

// Which flags a program takes.
enum class ServingFlagSet {
  // Every flag of shmdict-bridge (docs/BRIDGE.md's table).
  kBridge,
  // shmdict-replica: kBridge without --dict (the replica names its one dict itself),
  // --allow-create, --create-mode and --max-create-bytes (it creates no dict for clients),
  // --idle-exit and --ensure (it keeps its dict fed while nobody calls).
  kReplica,
};

// Adds the flags of `set` to `app`, bound to `*config`, in the order --help lists them, and makes
// every later option of `app` show its default. The program acts itself on the fields BridgeServer
// ignores (bridge_config.h): exit_with_parent, log_file and log_level (InstallProcessLogger),
// ensure.
void AddServingFlags(CLI::App& app, BridgeConfig* config, ServingFlagSet set);

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_BRIDGE_FLAGS_H_
