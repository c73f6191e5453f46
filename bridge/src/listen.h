// Listening addresses of shmdict-bridge: `HOST:PORT` (TCP) or `unix:PATH`.
//
// Why this exists: gRPC 1.51 lets a second server bind a TCP port the first one holds (it sets
// SO_REUSEPORT) and unlinks an existing socket path to take it over, so two bridges would
// silently split or steal each other's clients. TCP listeners are built with
// GRPC_ARG_ALLOW_REUSEPORT=0; a Unix socket path is claimed first with an flock on PATH.lock, held
// for the bridge's life, and a path some other program answers on is refused.
//
// Thread-safety: call from the main thread before the server starts.
#ifndef SHMDICT_BRIDGE_LISTEN_H_
#define SHMDICT_BRIDGE_LISTEN_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "shmdict/status.h"

namespace shmdict::bridge {

struct ListenAddress {
  std::string spec;  // as given: "127.0.0.1:7377", "[::1]:0", "unix:/run/shmdict/bridge.sock"
  bool is_unix = false;
  std::string unix_path;
  // TCP only: the host without IPv6 brackets ("::1"), and the port (0: any free one).
  std::string host;
  int port = 0;
};

// kInvalidArgument for an address that is neither form.
Result<ListenAddress> ParseListenAddress(const std::string& spec);

// Whether a TCP listener on `host` is reachable from this host only: "localhost", 127.0.0.0/8,
// ::1 and IPv4-mapped 127.x. A wildcard ("0.0.0.0", "::", "") or any other address is not.
bool IsLoopbackHost(const std::string& host);

// Sets the mode of the Unix socket at `path` (bound by gRPC with the umask's mode) to `mode`.
// kPermissionDenied naming the path on failure.
Status SetSocketMode(const std::string& path, mode_t mode);

// Owns the claims on Unix socket paths; releasing them (destruction) removes the sockets.
class UnixSocketClaims {
 public:
  UnixSocketClaims() = default;
  UnixSocketClaims(const UnixSocketClaims&) = delete;
  UnixSocketClaims& operator=(const UnixSocketClaims&) = delete;
  ~UnixSocketClaims();

  // kAlreadyExists when another bridge holds the path, or another program answers on it; a stale
  // socket file nobody answers on is removed.
  Status Claim(const std::string& path);

 private:
  struct Claimed {
    std::string path;
    int lock_fd;
  };
  std::vector<Claimed> claimed_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_LISTEN_H_
