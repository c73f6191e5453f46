// The CLI's transports in a build without bridge support (see transport.h): this host's shared
// memory only.
#include "transport.h"

namespace shmdict::cli {
namespace {

Status NoBridgeSupport(const std::string& what) {
  return Status(StatusCode::kUnimplemented,
                what +
                    " needs a shmdict built with bridge support (-DSHMDICT_BUILD_BRIDGE=ON); "
                    "run the command on the dict's host, without --remote");
}

}  // namespace

Result<std::unique_ptr<Catalog>> OpenRemoteCatalog(const CommandLine&) {
  return NoBridgeSupport("--remote");
}

std::optional<Json> LiveBridges(const std::string*) { return std::nullopt; }

Result<bool> CheckBridgeHealth(const CommandLine&, std::string* address) {
  *address = "-";
  return NoBridgeSupport("health");
}

}  // namespace shmdict::cli
