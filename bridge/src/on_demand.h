// Starting shmdict-bridge on demand: `--ensure` (start a detached bridge unless one answers) and
// systemd socket activation (serve listening sockets handed over in LISTEN_FDS).
//
// Thread-safety: EnsureBridge and TakeActivationSockets run in main before any other thread.
// ActivatedListeners runs one accept thread of its own.
#ifndef SHMDICT_BRIDGE_ON_DEMAND_H_
#define SHMDICT_BRIDGE_ON_DEMAND_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "listen.h"
#include "shmdict/status.h"

namespace shmdict::bridge {

// --ensure: if something answers at `address`, prints "already serving ADDR" and returns 0.
// Otherwise starts this program again (`argv` without --ensure) in a new session, with stdin
// /dev/null and stdout+stderr into a pipe; relays what it prints until "ready" (returns 0) or until
// it exits (returns 2). A lock file serializes callers, so two --ensure started at the same instant
// leave exactly one bridge: the second one's probe finds the first one's bridge. (Never relies on
// bind failing: gRPC sets SO_REUSEPORT, and a second bridge on a Unix path would take it over.)
// The lock file: PATH.ensure.lock beside a Unix socket; for TCP, in $XDG_RUNTIME_DIR (which must
// not be writable by others), else in $TMPDIR/shmdict-bridge-EUID (else /tmp/shmdict-bridge-EUID),
// created 0700 and checked (a directory, not a symlink, owned by this user, mode 0700), named
// after the address. The lock is opened with O_NOFOLLOW and must be a regular file of this user:
// a symlink planted at either path makes --ensure fail (status 2), never follow it.
int EnsureBridge(const ListenAddress& address, int argc, char** argv);

// The sockets systemd (or systemd-socket-activate) passed: LISTEN_PID must be this process; takes
// fds 3 .. 3+LISTEN_FDS-1 and unsets the variables (children must not adopt them). Empty when
// not socket-activated. kInvalidArgument when an fd is not a listening stream socket.
Result<std::vector<int>> TakeActivationSockets();

// "127.0.0.1:7377" or "unix:/run/shmdict.sock": what a socket is bound to (for "listening on").
std::string DescribeSocket(int fd);

// Serves connections accepted on activated listening sockets. gRPC 1.51 has no socket activation
// and adopts connected fds only in plaintext (AddInsecureChannelFromFd), so this runs the accept
// loop: each connection is made non-blocking (a blocking one makes gRPC send SETTINGS and never
// read) and handed to the server.
class ActivatedListeners {
 public:
  // `on_accept` runs for every connection handed over (--idle-exit counts it as activity: the
  // connection that started a socket-activated bridge must not find it gone).
  ActivatedListeners(std::vector<int> fds, grpc::Server* server, std::function<void()> on_accept);
  ~ActivatedListeners();  // Stop()
  ActivatedListeners(const ActivatedListeners&) = delete;
  ActivatedListeners& operator=(const ActivatedListeners&) = delete;
  // Stops accepting (the connections already handed over stay the server's) and closes the fds.
  void Stop();

 private:
  void Run();
  std::vector<int> fds_;
  grpc::Server* const server_;
  const std::function<void()> on_accept_;
  int wake_[2] = {-1, -1};
  std::thread thread_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_ON_DEMAND_H_
