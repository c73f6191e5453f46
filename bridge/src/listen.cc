#include "listen.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace shmdict::bridge {

Result<ListenAddress> ParseListenAddress(const std::string& spec) {
  ListenAddress address;
  address.spec = spec;
  if (spec.rfind("unix:", 0) == 0) {
    address.is_unix = true;
    address.unix_path = spec.substr(5);
    if (address.unix_path.empty() || address.unix_path.size() >= sizeof(sockaddr_un::sun_path)) {
      return Status(StatusCode::kInvalidArgument,
                    "listen address '" + spec + "': the socket path must have 1 to " +
                        std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " characters");
    }
    return address;
  }
  const size_t colon = spec.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size() ||
      spec.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
    return Status(StatusCode::kInvalidArgument,
                  "listen address '" + spec + "' is neither HOST:PORT nor unix:PATH");
  }
  address.host = spec.substr(0, colon);
  if (address.host.size() >= 2 && address.host.front() == '[' && address.host.back() == ']') {
    address.host = address.host.substr(1, address.host.size() - 2);
  }
  const unsigned long port = std::strtoul(spec.c_str() + colon + 1, nullptr, 10);
  if (port > 65535) {
    return Status(StatusCode::kInvalidArgument,
                  "listen address '" + spec + "': the port must be 0 to 65535");
  }
  address.port = static_cast<int>(port);
  return address;
}

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

Status SetSocketMode(const std::string& path, mode_t mode) {
  // chmod follows symlinks, but the path is ours: claimed (flock) and bound by this process.
  if (chmod(path.c_str(), mode) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  "cannot set the mode of unix:" + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

UnixSocketClaims::~UnixSocketClaims() {
  for (const Claimed& claimed : claimed_) {
    unlink(claimed.path.c_str());
    close(claimed.lock_fd);  // the lock file stays: unlinking it would race a starting bridge
  }
}

Status UnixSocketClaims::Claim(const std::string& path) {
  const std::string lock_path = path + ".lock";
  // O_NOFOLLOW: a symlink planted at PATH.lock must not make the bridge create its target.
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) {
    return Status(StatusCode::kPermissionDenied,
                  "cannot open " + lock_path + ": " + std::strerror(errno));
  }
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(lock_fd);
    if (error == EWOULDBLOCK) {
      return Status(
          StatusCode::kAlreadyExists,
          "unix:" + path + " is served by another shmdict-bridge (it holds " + lock_path + ")");
    }
    return Status(StatusCode::kInternal, "flock " + lock_path + ": " + std::strerror(error));
  }
  struct stat info {};
  if (lstat(path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      close(lock_fd);
      return Status(StatusCode::kAlreadyExists,
                    "unix:" + path + " exists and is not a socket: not replacing it");
    }
    // A socket file: is some other program answering on it?
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    const bool answered =
        probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    if (probe >= 0) close(probe);
    if (answered) {
      close(lock_fd);
      return Status(StatusCode::kAlreadyExists,
                    "unix:" + path + " is in use by another program: not taking it over");
    }
    unlink(path.c_str());  // stale: its server died without removing it
  }
  claimed_.push_back({path, lock_fd});
  return Status::Ok();
}

}  // namespace shmdict::bridge
