// BridgeConfig: every setting of shmdict-bridge, with its default. The one place a default lives:
// main.cc binds its command-line flags to these fields (the help shows the values found here), and
// an in-process test fills the struct directly.
//
// docs/BRIDGE.md's flag table describes each field under its flag's name.
//
// Thread-safety: a plain value; copy it freely.
#ifndef SHMDICT_BRIDGE_BRIDGE_CONFIG_H_
#define SHMDICT_BRIDGE_BRIDGE_CONFIG_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "shmdict/status.h"

namespace shmdict::bridge {

class WriteRouter;  // write_router.h

struct BridgeConfig {
  // Served when neither --listen nor socket activation gives an address.
  static constexpr const char* kDefaultListen = "127.0.0.1:7377";

  // --listen: HOST:PORT or unix:PATH; empty: kDefaultListen (unless `activated_fds` is not empty).
  std::vector<std::string> listen;
  // Listening sockets handed over by systemd (TakeActivationSockets(), on_demand.h), served in
  // plaintext beside `listen`. The server takes ownership of them.
  std::vector<int> activated_fds;

  // --max-message-bytes: the largest message sent or accepted.
  size_t max_message_bytes = size_t{64} << 20;
  // --watch-batch-bytes: how much a Watch message gathers under load (at most max_message_bytes).
  size_t watch_batch_bytes = size_t{1} << 20;
  // --watch-window-bytes: the encoded changes a dict's Watch pump keeps for its streams; a stream
  // further behind reads the log on its own until it caught up (docs/BRIDGE.md, "The pump").
  size_t watch_window_bytes = size_t{16} << 20;
  // --progress-interval-ms: default idle time before a Watch progress message.
  uint32_t progress_interval_ms = 1000;

  // --dict: the allow-list (nested children come with their parent); empty: every dict.
  std::set<std::string> dicts;
  // --read-only: every write is refused.
  bool read_only = false;
  // --token-file: lines "TOKEN rw" / "TOKEN ro"; empty: no token needed.
  std::string token_file;
  // --max-value-bytes: a larger key or value is refused before anything is written; 0: no limit.
  size_t max_value_bytes = 0;
  // --max-idle-handles: Dict handles kept open per dict between calls, beyond the one each served
  // dict keeps (each is a mapping and a file descriptor; a call that finds none idle attaches one,
  // ~80 us). 0: every call attaches.
  size_t max_idle_handles_per_dict = 8;

  // Limits on the work one call may cause (docs/BRIDGE.md, "Threat model"). Over a limit a call is
  // refused with RESOURCE_EXHAUSTED naming the flag, before anything is written.
  // --max-batch-ops: mutations in one Batch.
  size_t max_batch_ops = 10000;
  // --max-batch-bytes: keys and values in one Batch, summed.
  size_t max_batch_bytes = size_t{32} << 20;
  // --max-waiting-calls: calls waiting for the dict at once (Get with a min_revision ahead of it,
  // Watch streams), over every client.
  size_t max_waiting_calls = 1024;
  // --max-wait-ms: the longest a Get waits for its min_revision when the client set no (or a
  // longer) deadline; then DEADLINE_EXCEEDED.
  std::chrono::milliseconds max_wait{60000};
  // --max-create-bytes: the largest log a client may ask Create for (buffer_size).
  uint64_t max_create_bytes = uint64_t{64} << 20;
  // --allow-pickle: accept values tagged pickle (8). Any writer can then run code in every Python
  // reader of the dict: only for writers trusted with that.
  bool allow_pickle = false;
  // --socket-mode: the file mode of Unix listening sockets, set explicitly (not from the umask).
  mode_t socket_mode = 0660;

  // --tls-cert, --tls-key, --tls-client-ca: PEM files; TCP listeners speak TLS when set.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;

  // --health-listen: a plaintext server with the health service only, needing no token.
  std::string health_listen;
  // --metrics-listen: HOST:PORT of Prometheus text over plain HTTP.
  std::string metrics_listen;

  // --allow-create: clients may Create and Unlink dicts; --create-mode: the mode they get.
  bool allow_create = false;
  mode_t create_mode = 0600;

  // Not a flag: the directory of the presence record (`shmdict ls`); empty: RegistryDir() of
  // presence.h ($SHMDICT_BRIDGE_REGISTRY_DIR, else /dev/shm/shmdict-bridges).
  std::string presence_dir;
  // Not a flag: where write calls go (write_router.h); null: into the served dict itself, as a
  // bridge does. Not owned: it must outlive the BridgeServer started with this config.
  WriteRouter* write_router = nullptr;

  // --idle-exit: stop once nothing has been in flight this long; zero: never.
  std::chrono::seconds idle_exit{0};
  // The next three are the process's, not the server's: main.cc acts on them (BridgeServer
  // ignores them).
  // --ensure: start a detached bridge unless one answers at the first address.
  bool ensure = false;
  // --exit-with-parent: exit when the process that started the bridge dies.
  bool exit_with_parent = false;
  // --log-file (empty: stderr) and --log-level (trace, debug, info, warn, error, off).
  std::string log_file;
  std::string log_level = "info";

  // The addresses to listen on: `listen`, or kDefaultListen when it and `activated_fds` are empty.
  std::vector<std::string> ListenAddresses() const;
  // Whether any TLS option is set.
  bool tls() const { return !tls_cert.empty() || !tls_key.empty() || !tls_client_ca.empty(); }
};

// kInvalidArgument, with a message naming the flag and the fix, for a combination no bridge can
// serve: TLS with socket activation, a TLS key without a certificate (or the reverse), --ensure
// without an address or with --exit-with-parent, a create mode above 0777. Files and addresses
// are checked when the server starts (BridgeServer::Start).
Status ValidateConfig(const BridgeConfig& config);

// "0600" -> 0600. kInvalidArgument for text that is not an octal file mode (empty, a non-octal
// digit, above 0777).
Result<mode_t> ParseFileMode(const std::string& text);
// 0600 -> "0600".
std::string FormatFileMode(mode_t mode);

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_BRIDGE_CONFIG_H_
