#include "bridge_config.h"

#include <cstdio>
#include <cstdlib>

namespace shmdict::bridge {

std::vector<std::string> BridgeConfig::ListenAddresses() const {
  if (listen.empty() && activated_fds.empty()) return {kDefaultListen};
  return listen;
}

Status ValidateConfig(const BridgeConfig& config) {
  const auto invalid = [](const std::string& message) {
    return Status(StatusCode::kInvalidArgument, message);
  };
  if (!config.activated_fds.empty() && config.tls()) {
    return invalid(
        "socket activation serves plaintext only (gRPC 1.51 cannot speak TLS on an adopted "
        "socket): give TLS listeners with --listen and start the bridge without LISTEN_FDS");
  }
  if (config.ensure) {
    if (config.ListenAddresses().empty()) {
      return invalid("--ensure needs a --listen address to probe");
    }
    if (config.exit_with_parent) {
      return invalid("--ensure starts a detached bridge: drop --exit-with-parent");
    }
  }
  if (config.tls() && (config.tls_cert.empty() || config.tls_key.empty())) {
    return invalid("TLS needs both --tls-cert and --tls-key (--tls-client-ca adds mTLS to them)");
  }
  if (config.create_mode > 0777) {
    return invalid("--create-mode " + FormatFileMode(config.create_mode) +
                   " is not a file mode (at most 0777)");
  }
  return Status::Ok();
}

Result<mode_t> ParseFileMode(const std::string& text) {
  char* end = nullptr;
  const unsigned long mode = std::strtoul(text.c_str(), &end, 8);
  if (text.empty() || *end != '\0' || mode > 0777) {
    return Status(StatusCode::kInvalidArgument,
                  "--create-mode '" + text + "' is not an octal file mode such as 0660");
  }
  return static_cast<mode_t>(mode);
}

std::string FormatFileMode(mode_t mode) {
  char text[16];
  std::snprintf(text, sizeof(text), "%04o", static_cast<unsigned>(mode));
  return text;
}

}  // namespace shmdict::bridge
