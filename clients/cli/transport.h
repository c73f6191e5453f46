// Where the CLI's commands find their dicts: the one place that depends on whether this shmdict
// was built with bridge support. CMake compiles transport_remote.cc (with the bridge: --remote,
// live bridges, health) or transport_local.cc (without: those answer with an error saying so), so
// the commands themselves are written once, against Catalog and Store, with no #if.
//
// Not thread-safe (the CLI is single-threaded).
#ifndef SHMDICT_CLI_TRANSPORT_H_
#define SHMDICT_CLI_TRANSPORT_H_

#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "shmdict/catalog.h"
#include "value_json.h"

namespace shmdict::cli {

// The catalog of cl.remote's bridge host (--remote, $SHMDICT_REMOTE). kUnimplemented in a build
// without bridge support; kInvalidArgument for unreadable TLS files.
Result<std::unique_ptr<Catalog>> OpenRemoteCatalog(const CommandLine& cl);

// The live bridges of this host from their presence records, as the CLI prints them (pid,
// since, addresses, and the dicts they serve with their subscribers; with `dict`, only the
// bridges serving it, with its subscribers). nullopt in a build without bridge support.
std::optional<Json> LiveBridges(const std::string* dict);

// grpc.health.v1 of cl.service at cl.remote (default: the bridge's default address).
// kUnimplemented in a build without bridge support.
Result<bool> CheckBridgeHealth(const CommandLine& cl, std::string* address);

}  // namespace shmdict::cli

#endif  // SHMDICT_CLI_TRANSPORT_H_
