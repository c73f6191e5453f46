// shmdict-bridge: serves this host's shmdict dicts over gRPC (shmdict.v1.Dict) to clients that
// cannot map /dev/shm. Stateless: it attaches dicts lazily by name and holds nothing a restart
// would lose; run several, kill or restart any of them.
//
// This file is the process around a BridgeServer (bridge_server.h): flags into a BridgeConfig,
// --ensure, --exit-with-parent, the log, signals. Every flag is a field of BridgeConfig, which
// holds its default; docs/BRIDGE.md describes them.
//
// On start it prints "health listening on ADDR" and "metrics listening on ADDR" for those
// servers, one "listening on ADDR" per address of the dict service (a port of 0 replaced by the
// port chosen), then "ready". SIGHUP re-reads the token file. SIGTERM or SIGINT (or --idle-exit,
// or the parent's death with --exit-with-parent) stops the server: waiting calls (Watch streams)
// end at once with UNAVAILABLE, writes in progress get the rest of a 5 s grace period, and the
// process exits 0 within it even if a write is stuck (a watchdog ends it). Exit status 2 with one
// stderr line when a flag is wrong or the server cannot start.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <thread>

#include "bridge_config.h"
#include "bridge_server.h"
#include "on_demand.h"
#include "shmdict/dict.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "shmdict-bridge: %s\n", message.c_str());
  return 2;
}

// The newest revision of the wire API docs/API.md lists ("Compatibility policy"), for --version.
constexpr const char* kWireApiRevision = "1.3";

// The whole stop, from the signal to the exit. Shutdown gets all but the last second of it for
// writes in flight; the watchdog ends the process at its end whatever is still running (a write
// stuck behind a dict's writer lock must not keep a stopping bridge alive).
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kShutdownGrace = std::chrono::seconds(4);

}  // namespace

int main(int argc, char** argv) {
  using shmdict::bridge::BridgeConfig;
  BridgeConfig config;
  CLI::App app{"shmdict-bridge: serve this host's shmdict dicts over gRPC"};
  app.option_defaults()->always_capture_default();
  // The layout version must match the applications' (README, "Deploying": version skew); the wire
  // API's revision is the newest docs/API.md lists (kWireApiRevision: bump it with that list).
  app.set_version_flag("--version",
                       std::string("shmdict-bridge ") + SHMDICT_VERSION + ", layout version " +
                           std::to_string(shmdict::Dict::LayoutVersion()) +
                           ", wire API shmdict.v1 (revision " + kWireApiRevision + ")");
  std::string create_mode = shmdict::bridge::FormatFileMode(config.create_mode);
  std::string socket_mode = shmdict::bridge::FormatFileMode(config.socket_mode);
  unsigned idle_exit_seconds = static_cast<unsigned>(config.idle_exit.count());
  app.add_option("--listen", config.listen,
                 std::string("HOST:PORT or unix:PATH (repeatable; default ") +
                     BridgeConfig::kDefaultListen + ")");
  app.add_option("--max-message-bytes", config.max_message_bytes,
                 "largest message sent or accepted; larger values are announced, not sent")
      ->check(CLI::Range(size_t{1} << 16, size_t{1} << 30));
  app.add_option("--watch-batch-bytes", config.watch_batch_bytes,
                 "bytes of changes a Watch message gathers under load")
      ->check(CLI::Range(size_t{1} << 10, size_t{256} << 20));
  app.add_option("--watch-window-bytes", config.watch_window_bytes,
                 "encoded changes kept per watched dict for its streams; a stream further behind "
                 "reads the log on its own until it caught up")
      ->check(CLI::Range(size_t{1} << 10, size_t{1} << 30));
  app.add_option("--progress-interval-ms", config.progress_interval_ms,
                 "default idle time before a Watch progress message")
      ->check(CLI::Range(50, 3600 * 1000));
  app.add_option("--dict", config.dicts,
                 "serve only this dict and its nested children (repeatable; default: every dict "
                 "this user can open)");
  app.add_flag("--read-only", config.read_only, "refuse every write (PERMISSION_DENIED)");
  app.add_option("--token-file", config.token_file,
                 "lines \"TOKEN rw\" or \"TOKEN ro\": every call then needs metadata "
                 "\"authorization: Bearer TOKEN\"; re-read on SIGHUP");
  app.add_option("--max-value-bytes", config.max_value_bytes,
                 "refuse larger keys and values (RESOURCE_EXHAUSTED); 0: no limit");
  // Issue 19's limits on the work one call may cause (docs/BRIDGE.md, "Threat model").
  unsigned max_wait_ms = static_cast<unsigned>(config.max_wait.count());
  app.add_option("--max-batch-ops", config.max_batch_ops,
                 "refuse a Batch of more mutations (RESOURCE_EXHAUSTED, nothing written)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 24));
  app.add_option("--max-batch-bytes", config.max_batch_bytes,
                 "refuse a Batch whose keys and values sum to more bytes (RESOURCE_EXHAUSTED)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 32));
  app.add_option("--max-waiting-calls", config.max_waiting_calls,
                 "Gets waiting for a min_revision and Watch streams at once, over every client; "
                 "more are RESOURCE_EXHAUSTED")
      // 0 would refuse every Watch and every waiting Get: a flag error, not a configuration.
      ->check(CLI::Range(size_t{1}, std::numeric_limits<size_t>::max()));
  app.add_option("--max-wait-ms", max_wait_ms,
                 "the longest a Get waits for its min_revision when the client set no (or a later) "
                 "deadline; then DEADLINE_EXCEEDED")
      ->check(CLI::Range(1u, 24u * 3600 * 1000));
  app.add_option("--max-create-bytes", config.max_create_bytes,
                 "the largest log (buffer_size) a client may ask Create for (RESOURCE_EXHAUSTED)");
  app.add_flag("--allow-pickle", config.allow_pickle,
               "accept values tagged pickle (8): any writer can then run code in every Python "
               "reader");
  app.add_option("--max-idle-handles", config.max_idle_handles_per_dict,
                 "Dict handles kept open per dict between calls (each a mapping and a file "
                 "descriptor); 0: every call attaches");
  app.add_option("--tls-cert", config.tls_cert, "PEM certificate chain: TCP listeners speak TLS");
  app.add_option("--tls-key", config.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", config.tls_client_ca,
                 "PEM CA: clients must present a certificate it signed (mTLS)");
  app.add_option("--health-listen", config.health_listen,
                 "HOST:PORT or unix:PATH of a plaintext server with the health service only, "
                 "needing no token (for probes)");
  app.add_flag("--allow-create", config.allow_create,
               "let clients Create and Unlink dicts (with write access; refused otherwise)");
  app.add_option("--create-mode", create_mode,
                 "octal file mode of the dicts clients create (the default: the bridge's uid)");
  app.add_option("--socket-mode", socket_mode,
                 "octal file mode of the Unix listening sockets, set whatever the umask");
  app.add_option("--metrics-listen", config.metrics_listen,
                 "HOST:PORT: Prometheus metrics at http://HOST:PORT/metrics (plain HTTP)");
  app.add_flag(
      "--ensure", config.ensure,
      "start a detached bridge unless one already answers at the (first) --listen address");
  app.add_option("--idle-exit", idle_exit_seconds,
                 "exit once no call or Watch stream has been in flight for SECONDS (0: never)");
  app.add_flag("--exit-with-parent", config.exit_with_parent,
               "exit (as on SIGTERM) when the process that started the bridge dies");
  app.add_option("--log-file", config.log_file, "append the log to FILE instead of stderr");
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help and --version end parsing with status 0; a wrong flag is the documented 2 (CLI11's
    // own codes, 105 to 113, are not).
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  config.idle_exit = std::chrono::seconds(idle_exit_seconds);
  config.max_wait = std::chrono::milliseconds(max_wait_ms);
  auto mode = shmdict::bridge::ParseFileMode(create_mode);
  if (!mode.ok()) return Fail(mode.status().message());
  config.create_mode = *mode;
  auto socket_file_mode = shmdict::bridge::ParseFileMode(socket_mode);
  if (!socket_file_mode.ok()) {
    return Fail("--socket-mode '" + socket_mode + "' is not an octal file mode such as 0660");
  }
  config.socket_mode = *socket_file_mode;

  // Socket activation first: the fds are ours only if LISTEN_PID names this process.
  auto activated = shmdict::bridge::TakeActivationSockets();
  if (!activated.ok()) return Fail(activated.status().message());
  config.activated_fds = *activated;
  shmdict::Status valid = shmdict::bridge::ValidateConfig(config);
  if (!valid.ok()) return Fail(valid.message());
  // Before any thread exists: it spawns this program again, without --ensure.
  if (config.ensure) return shmdict::bridge::EnsureRunning(config, argc, argv);
  if (config.exit_with_parent) {
    // Tests and supervisors that die without cleaning up (a SIGKILLed test binary) must not
    // leave a bridge behind. The parent may already be gone: then exit at once.
    const pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) return 0;
  }
  shmdict::Status logging = shmdict::bridge::InstallProcessLogger(config);
  if (!logging.ok()) return Fail(logging.message());

  // Signals are taken by a dedicated thread (sigwait); block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = shmdict::bridge::BridgeServer::Start(config);
  if (!server.ok()) return Fail(server.status().message());
  if (!(*server)->health_address().empty()) {
    std::printf("health listening on %s\n", (*server)->health_address().c_str());
  }
  for (const std::string& address : (*server)->addresses()) {
    std::printf("listening on %s\n", address.c_str());
  }
  if (!(*server)->metrics_address().empty()) {
    std::printf("metrics listening on %s\n", (*server)->metrics_address().c_str());
  }
  std::printf("ready\n");
  std::fflush(stdout);

  std::atomic<int> stop_signal{0};
  std::thread signal_thread([&] {
    for (;;) {
      int number = 0;
      sigwait(&signals, &number);
      if (number == SIGHUP) {
        (void)(*server)->ReloadTokens();  // logged; a bad file leaves the tokens in force
        continue;
      }
      stop_signal.store(number);
      (*server)->RequestStop();
      return;
    }
  });
  (*server)->Wait();
  const auto stop_deadline = std::chrono::steady_clock::now() + kStopGrace;
  std::thread([stop_deadline] {
    std::this_thread::sleep_until(stop_deadline);
    spdlog::warn("calls still in flight after {} s: exiting anyway", kStopGrace.count());
    spdlog::default_logger()->flush();
    _exit(0);
  }).detach();
  const int stopped_by = stop_signal.load();  // 0: --idle-exit
  // After --idle-exit the signal thread still waits: a SIGTERM of its own (blocked, so it stays
  // pending for sigwait) ends it. A thread that already returned just drops it.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  spdlog::info("shutting down signal={}", stopped_by);
  (*server)->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
  server->reset();  // the bridge's own teardown (handles closed) runs; static destructors do not
  // The watchdog above may still fire: returning would run static destructors (spdlog's registry)
  // under it, and its warn would crash the exit. Every path ends in _exit instead.
  spdlog::default_logger()->flush();
  std::fflush(stdout);
  _exit(0);
}
