#include "bridge_flags.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstddef>
#include <limits>
#include <string>

namespace shmdict::bridge {

namespace {

// An octal file mode flag: parsed into *mode when given; the help shows *mode's default.
void AddFileModeOption(CLI::App& app, const std::string& flag, mode_t* mode,
                       const std::string& description) {
  app.add_option_function<std::string>(
         flag,
         [flag, mode](const std::string& text) {
           Result<mode_t> parsed = ParseFileMode(text);
           if (!parsed.ok()) {
             throw CLI::ValidationError(flag + " '" + text +
                                        "' is not an octal file mode such as 0660");
           }
           *mode = *parsed;
         },
         description)
      ->default_str(FormatFileMode(*mode));
}

}  // namespace

void AddServingFlags(CLI::App& app, BridgeConfig* config, ServingFlagSet set) {
  const bool bridge = set == ServingFlagSet::kBridge;
  app.option_defaults()->always_capture_default();
  app.add_option("--listen", config->listen,
                 std::string("HOST:PORT or unix:PATH (repeatable; default ") +
                     BridgeConfig::kDefaultListen + ")");
  app.add_option("--max-message-bytes", config->max_message_bytes,
                 "largest message sent or accepted; larger values are announced, not sent")
      ->check(CLI::Range(size_t{1} << 16, size_t{1} << 30));
  app.add_option("--watch-batch-bytes", config->watch_batch_bytes,
                 "bytes of changes a Watch message gathers under load")
      ->check(CLI::Range(size_t{1} << 10, size_t{256} << 20));
  app.add_option("--watch-window-bytes", config->watch_window_bytes,
                 "encoded changes kept per watched dict for its streams; a stream further behind "
                 "reads the log on its own until it caught up")
      ->check(CLI::Range(size_t{1} << 10, size_t{1} << 30));
  app.add_option("--progress-interval-ms", config->progress_interval_ms,
                 "default idle time before a Watch progress message")
      ->check(CLI::Range(50, 3600 * 1000));
  if (bridge) {
    app.add_option("--dict", config->dicts,
                   "serve only this dict and its nested children (repeatable; default: every dict "
                   "this user can open)");
  }
  app.add_flag("--read-only", config->read_only, "refuse every write (PERMISSION_DENIED)");
  app.add_option("--token-file", config->token_file,
                 "lines \"TOKEN rw\" or \"TOKEN ro\": every call then needs metadata "
                 "\"authorization: Bearer TOKEN\"; re-read on SIGHUP");
  app.add_option("--max-value-bytes", config->max_value_bytes,
                 "refuse larger keys and values (RESOURCE_EXHAUSTED); 0: no limit");
  // Issue 19's limits on the work one call may cause (docs/BRIDGE.md, "Threat model").
  app.add_option("--max-batch-ops", config->max_batch_ops,
                 "refuse a Batch of more mutations (RESOURCE_EXHAUSTED, nothing written)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  app.add_option("--max-batch-bytes", config->max_batch_bytes,
                 "refuse a Batch whose keys and values sum to more bytes (RESOURCE_EXHAUSTED)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--max-waiting-calls", config->max_waiting_calls,
                 "Gets waiting for a min_revision and Watch streams at once, over every client; "
                 "more are RESOURCE_EXHAUSTED")
      // 0 would refuse every Watch and every waiting Get: a flag error, not a configuration.
      ->check(CLI::Range(size_t{1}, std::numeric_limits<size_t>::max()));
  app.add_option_function<unsigned>(
         "--max-wait-ms",
         [config](unsigned ms) { config->max_wait = std::chrono::milliseconds(ms); },
         "the longest a Get waits for its min_revision when the client set no (or a later) "
         "deadline; then DEADLINE_EXCEEDED")
      ->check(CLI::Range(1u, 24u * 3600 * 1000))
      ->default_str(std::to_string(config->max_wait.count()));
  if (bridge) {
    app.add_option("--max-create-bytes", config->max_create_bytes,
                   "the largest log (buffer_size) a client may ask Create for "
                   "(RESOURCE_EXHAUSTED)");
  }
  app.add_flag("--allow-pickle", config->allow_pickle,
               "accept values tagged pickle (8): any writer can then run code in every Python "
               "reader");
  app.add_option("--max-idle-handles", config->max_idle_handles_per_dict,
                 "Dict handles kept open per dict between calls (each a mapping and a file "
                 "descriptor); 0: every call attaches");
  app.add_option("--tls-cert", config->tls_cert, "PEM certificate chain: TCP listeners speak TLS");
  app.add_option("--tls-key", config->tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", config->tls_client_ca,
                 "PEM CA: clients must present a certificate it signed (mTLS)");
  app.add_option("--health-listen", config->health_listen,
                 "HOST:PORT or unix:PATH of a plaintext server with the health service only, "
                 "needing no token (for probes)");
  if (bridge) {
    app.add_flag("--allow-create", config->allow_create,
                 "let clients Create and Unlink dicts (with write access; refused otherwise)");
    AddFileModeOption(app, "--create-mode", &config->create_mode,
                      "octal file mode of the dicts clients create (the default: the bridge's "
                      "uid)");
  }
  AddFileModeOption(app, "--socket-mode", &config->socket_mode,
                    "octal file mode of the Unix listening sockets, set whatever the umask");
  app.add_option("--metrics-listen", config->metrics_listen,
                 "HOST:PORT: Prometheus metrics at http://HOST:PORT/metrics (plain HTTP)");
  if (bridge) {
    app.add_flag(
        "--ensure", config->ensure,
        "start a detached bridge unless one already answers at the (first) --listen address");
    app.add_option_function<unsigned>(
           "--idle-exit",
           [config](unsigned seconds) { config->idle_exit = std::chrono::seconds(seconds); },
           "exit once no call or Watch stream has been in flight for SECONDS (0: never)")
        ->default_str(std::to_string(config->idle_exit.count()));
  }
  app.add_flag("--exit-with-parent", config->exit_with_parent,
               bridge ? "exit (as on SIGTERM) when the process that started the bridge dies"
                      : "exit (as on SIGTERM) when the process that started this one dies");
  app.add_option("--log-file", config->log_file, "append the log to FILE instead of stderr");
  app.add_option("--log-level", config->log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
}

}  // namespace shmdict::bridge
