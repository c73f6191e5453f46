// BridgeServer: one running shmdict-bridge, assembled from a BridgeConfig: the shmdict.v1.Dict
// service on its listeners (TCP with or without TLS, Unix sockets claimed against theft, sockets
// handed over by systemd), tokens and the allow-list, the health service and server reflection,
// the optional --health-listen and --metrics-listen servers, the presence record that `shmdict ls`
// shows, and --idle-exit. main.cc only fills the config from flags, starts a server, prints its
// addresses and turns signals into ReloadTokens / RequestStop; tests start one in-process.
//
// Lifecycle: Start -> (serving) -> Wait returns once RequestStop is called or --idle-exit finds
// the bridge idle -> Shutdown(deadline) -> destruction. Destroying a server that was not shut
// down shuts it down with no grace period.
//
// Thread-safety: RequestStop, ReloadTokens and the accessors may be called from any thread;
// Wait from any one thread at a time; Shutdown and the destructor from the owner's thread, not
// concurrently with each other. Not async-signal-safe: call from a thread that took the signal
// with sigwait, as main.cc does.
//
// Process-wide state it touches: gRPC's default health-check service and reflection plugin are
// switched on for every server of the process; logs go to spdlog's default logger.
#ifndef SHMDICT_BRIDGE_BRIDGE_SERVER_H_
#define SHMDICT_BRIDGE_BRIDGE_SERVER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "bridge_config.h"
#include "shmdict/status.h"

namespace shmdict::bridge {

class BridgeServer {
 public:
  // Serves `config` (which ValidateConfig must accept; its ensure, exit_with_parent, log_file and
  // log_level are the process's and ignored here). Returns once every listener accepts calls and
  // the presence record is written. Errors, each with a message naming the flag or the address:
  // kInvalidArgument (a setting ValidateConfig refuses, an address that is neither HOST:PORT nor
  // unix:PATH, a malformed token file), kNotFound (a TLS or token file that cannot be read),
  // kAlreadyExists (a Unix socket path another bridge or program holds), kUnavailable (an address
  // in use or not of this host). A presence record that cannot be written is logged, not an error.
  // Takes the config by value because it takes ownership of config.activated_fds, also on error
  // (it closes them): a caller must not close or reuse those descriptors after the call.
  static Result<std::unique_ptr<BridgeServer>> Start(BridgeConfig config);

  ~BridgeServer();
  BridgeServer(const BridgeServer&) = delete;
  BridgeServer& operator=(const BridgeServer&) = delete;

  // Where clients reach the dict service, as they would type it: the --listen addresses with a
  // port of 0 replaced by the port chosen ("127.0.0.1:41234", "unix:/run/b.sock"), then the
  // activated sockets.
  const std::vector<std::string>& addresses() const;
  // The --health-listen address as bound ("" without one), and the --metrics-listen one.
  const std::string& health_address() const;
  const std::string& metrics_address() const;

  // Re-reads the token file (SIGHUP). On error the previous tokens stay in force and the error
  // (kInvalidArgument or kNotFound, naming the file and line, never a token) is returned.
  Status ReloadTokens();

  // Makes Wait return. Idempotent; serving goes on until Shutdown.
  void RequestStop();
  // Blocks until RequestStop, --idle-exit or Shutdown.
  void Wait();

  // Stops serving: the presence record is removed, health turns NOT_SERVING, every Watch stream
  // ends with UNAVAILABLE (clients resume elsewhere or after a restart), calls in progress get
  // until `deadline`, then the health and metrics servers stop and Unix sockets are removed when
  // the server is destroyed. Idempotent.
  void Shutdown(std::chrono::system_clock::time_point deadline);

 private:
  struct State;
  explicit BridgeServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// --ensure: starts a detached copy of this program (argv without --ensure) unless something
// answers at config's first address (EnsureBridge, on_demand.h). Returns the process's exit
// status: 0 when a bridge serves (already, or started and ready), 2 with a line on stderr
// otherwise. Call before any thread exists.
int EnsureRunning(const BridgeConfig& config, int argc, char** argv);

// Points spdlog's default logger at config.log_file (appended; empty: stderr) with the bridge's
// line format and config.log_level. kInvalidArgument naming the file when it cannot be opened.
// For the binary: once per process.
Status InstallProcessLogger(const BridgeConfig& config);

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_BRIDGE_SERVER_H_
