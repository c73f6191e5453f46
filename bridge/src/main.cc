// shmdict-bridge: serves this host's shmdict dicts over gRPC (shmdict.v1.Dict) to clients that
// cannot map /dev/shm. Stateless: it attaches dicts lazily by name and holds nothing a restart
// would lose; run several, kill or restart any of them.
//
//   shmdict-bridge [--listen ADDR]...      ADDR: HOST:PORT or unix:PATH (default 127.0.0.1:7377)
//
//                  [--dict NAME]... [--read-only] [--max-value-bytes N] [--token-file FILE]
//                  [--tls-cert F --tls-key F [--tls-client-ca F]] [--health-listen ADDR]
//                  [--allow-create [--create-mode OCTAL]] [--metrics-listen HOST:PORT] [--ensure]
//                  [--idle-exit SECONDS]
//                  [--exit-with-parent] [--log-file FILE]
//
// On start it prints one line per address, "listening on ADDR" (a port of 0 is replaced by the
// port chosen), then "ready". SIGHUP re-reads the token file. SIGTERM or SIGINT: health turns
// NOT_SERVING, Watch streams end with UNAVAILABLE (clients resume elsewhere or after a restart),
// calls in progress get up to 5 s. --idle-exit ends the same way once no call or Watch stream has
// been in flight for that long. Started by systemd socket activation (LISTEN_FDS), it serves the
// sockets passed (plaintext only: gRPC 1.51 cannot speak TLS on adopted sockets).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <httplib.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "authorizer.h"
#include "dict_registry.h"
#include "listen.h"
#include "metrics.h"
#include "on_demand.h"
#include "shmdict/bridge/presence.h"
#include "service.h"
#include "shmdict/dict.h"

namespace {

constexpr char kServiceName[] = "shmdict.v1.Dict";

// Health names: "" (the bridge), "shmdict.v1.Dict", and "shmdict.v1.Dict/NAME" per dict served.
std::string DictHealthName(const std::string& dict) {
  return std::string(kServiceName) + "/" + dict;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "shmdict-bridge: %s\n", message.c_str());
  return 2;
}

bool ReadFile(const std::string& path, std::string* text) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return in.good() || in.eof();
}

// The health services of the main server and of the --health-listen server: every status is set
// on both. Set from the registry's threads and from main.
class HealthServices {
 public:
  void Add(grpc::HealthCheckServiceInterface* service) {
    for (auto& slot : services_) {
      grpc::HealthCheckServiceInterface* empty = nullptr;
      if (slot.compare_exchange_strong(empty, service)) return;
    }
  }
  void Set(const std::string& name, bool serving) {
    for (auto& slot : services_) {
      if (auto* service = slot.load()) service->SetServingStatus(name, serving);
    }
  }
  void SetAll(bool serving) {
    for (auto& slot : services_) {
      if (auto* service = slot.load()) service->SetServingStatus(serving);
    }
  }

 private:
  std::atomic<grpc::HealthCheckServiceInterface*> services_[2] = {nullptr, nullptr};
};

// The address as printed: a port of 0 replaced by the port chosen.
std::string Shown(const shmdict::bridge::ListenAddress& address, int port) {
  if (address.is_unix) return address.spec;
  return address.spec.substr(0, address.spec.rfind(':') + 1) + std::to_string(port);
}

// --metrics-listen: Prometheus text at /metrics over plain HTTP (cpp-httplib), from its own thread.
class MetricsServer {
 public:
  MetricsServer(shmdict::bridge::Metrics* metrics, shmdict::bridge::DictRegistry* registry)
      : metrics_(metrics), registry_(registry) {}
  ~MetricsServer() { Stop(); }

  // The port bound (0: failed, with *error set).
  int Start(const std::string& spec, std::string* error) {
    auto address = shmdict::bridge::ParseListenAddress(spec);
    if (!address.ok() || address->is_unix) {
      *error = "--metrics-listen '" + spec + "' must be HOST:PORT (plain HTTP over TCP)";
      return 0;
    }
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
      response.set_content(metrics_->Render(registry_->Stats()),
                           "text/plain; version=0.0.4; charset=utf-8");
    });
    const int port =
        address->port == 0
            ? server_.bind_to_any_port(address->host)
            : (server_.bind_to_port(address->host, address->port) ? address->port : -1);
    if (port <= 0) {
      *error = "cannot listen on " + spec + " for metrics (in use, or not an address of this host)";
      return 0;
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return port;
  }
  void Stop() {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();
  }

 private:
  shmdict::bridge::Metrics* const metrics_;
  shmdict::bridge::DictRegistry* const registry_;
  httplib::Server server_;
  std::thread thread_;
};

// --idle-exit: raises SIGTERM (the ordinary, graceful way out) once nothing has been in flight for
// `idle`.
class IdleExit {
 public:
  IdleExit(const shmdict::bridge::Metrics* metrics, std::chrono::seconds idle)
      : thread_([this, metrics, idle] {
          std::unique_lock lock(mu_);
          const auto tick = std::min<std::chrono::milliseconds>(
              idle / 4 + std::chrono::milliseconds(1), std::chrono::seconds(1));
          while (!stop_) {
            cv_.wait_for(lock, tick);
            if (!stop_ && metrics->IdleFor() >= idle) {
              spdlog::info("no call or stream for {} s: exiting (--idle-exit)", idle.count());
              kill(getpid(), SIGTERM);
              return;
            }
          }
        }) {}
  ~IdleExit() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: started once the rest is constructed
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shmdict-bridge: serve this host's shmdict dicts over gRPC"};
  // The layout version must match the applications' (README, "Deploying": version skew); the wire
  // API's revision is the newest docs/API.md lists.
  app.set_version_flag("--version", std::string("shmdict-bridge ") + SHMDICT_VERSION +
                                        ", layout version " +
                                        std::to_string(shmdict::Dict::LayoutVersion()) +
                                        ", wire API shmdict.v1 (revision 1.1)");
  std::vector<std::string> listen;
  size_t max_message_bytes = size_t{64} << 20;
  size_t batch_bytes = size_t{1} << 20;
  uint32_t progress_interval_ms = 1000;
  std::string log_level = "info";
  shmdict::bridge::Authorizer::Options access;
  bool read_only = false;
  size_t max_value_bytes = 0;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string health_listen;
  std::string metrics_listen;
  bool allow_create = false;
  std::string create_mode = "0600";
  bool ensure = false;
  unsigned idle_exit_seconds = 0;
  bool exit_with_parent = false;
  std::string log_file;
  app.add_option("--listen", listen, "HOST:PORT or unix:PATH (repeatable; default 127.0.0.1:7377)");
  app.add_option("--max-message-bytes", max_message_bytes,
                 "largest message sent or accepted; larger values are announced, not sent")
      ->check(CLI::Range(size_t{1} << 16, size_t{1} << 30));
  app.add_option("--watch-batch-bytes", batch_bytes,
                 "bytes of changes a Watch message gathers under load")
      ->check(CLI::Range(size_t{1} << 10, size_t{256} << 20));
  app.add_option("--progress-interval-ms", progress_interval_ms,
                 "default idle time before a Watch progress message")
      ->check(CLI::Range(50, 3600 * 1000));
  app.add_option("--dict", access.dicts,
                 "serve only this dict and its nested children (repeatable; default: every dict "
                 "this user can open)");
  app.add_flag("--read-only", read_only, "refuse every write (PERMISSION_DENIED)");
  app.add_option("--token-file", access.token_file,
                 "lines \"TOKEN rw\" or \"TOKEN ro\": every call then needs metadata "
                 "\"authorization: Bearer TOKEN\"; re-read on SIGHUP");
  app.add_option("--max-value-bytes", max_value_bytes,
                 "refuse larger keys and values (RESOURCE_EXHAUSTED); 0: no limit");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: TCP listeners speak TLS");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", tls_client_ca,
                 "PEM CA: clients must present a certificate it signed (mTLS)");
  app.add_option("--health-listen", health_listen,
                 "HOST:PORT or unix:PATH of a plaintext server with the health service only, "
                 "needing no token (for probes)");
  app.add_flag("--allow-create", allow_create,
               "let clients Create and Unlink dicts (with write access; refused otherwise)");
  app.add_option("--create-mode", create_mode,
                 "octal file mode of the dicts clients create (default 0600: the bridge's uid)");
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT: Prometheus metrics at http://HOST:PORT/metrics (plain HTTP)");
  app.add_flag(
      "--ensure", ensure,
      "start a detached bridge unless one already answers at the (first) --listen address");
  app.add_option("--idle-exit", idle_exit_seconds,
                 "exit once no call or Watch stream has been in flight for SECONDS (0: never)");
  app.add_flag("--exit-with-parent", exit_with_parent,
               "exit (as on SIGTERM) when the process that started the bridge dies");
  app.add_option("--log-file", log_file, "append the log to FILE instead of stderr");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  CLI11_PARSE(app, argc, argv);

  // Socket activation first: the fds are ours only if LISTEN_PID names this process.
  auto activated = shmdict::bridge::TakeActivationSockets();
  if (!activated.ok()) return Fail(activated.status().message());
  const bool tls = !tls_cert.empty() || !tls_key.empty() || !tls_client_ca.empty();
  if (!activated->empty() && tls) {
    return Fail(
        "socket activation serves plaintext only (gRPC 1.51 cannot speak TLS on an adopted "
        "socket): give TLS listeners with --listen and start the bridge without LISTEN_FDS");
  }
  if (listen.empty() && activated->empty()) listen.push_back("127.0.0.1:7377");
  if (ensure) {
    if (listen.empty()) return Fail("--ensure needs a --listen address to probe");
    if (exit_with_parent) return Fail("--ensure starts a detached bridge: drop --exit-with-parent");
    auto address = shmdict::bridge::ParseListenAddress(listen.front());
    if (!address.ok()) return Fail(address.status().message());
    // Before any thread exists: it spawns this program again, without --ensure.
    return shmdict::bridge::EnsureBridge(*address, argc, argv);
  }
  if (exit_with_parent) {
    // Tests and supervisors that die without cleaning up (a SIGKILLed test binary) must not
    // leave a bridge behind. The parent may already be gone: then exit at once.
    const pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) return 0;
  }
  batch_bytes = std::min(batch_bytes, max_message_bytes);
  access.read_only = read_only;
  shmdict::bridge::CreationPolicy creation;
  creation.allowed = allow_create;
  {
    char* end = nullptr;
    const unsigned long mode = std::strtoul(create_mode.c_str(), &end, 8);
    if (create_mode.empty() || *end != '\0' || mode > 0777) {
      return Fail("--create-mode '" + create_mode + "' is not an octal file mode such as 0660");
    }
    creation.mode = static_cast<mode_t>(mode);
  }

  std::shared_ptr<spdlog::logger> logger;
  if (log_file.empty()) {
    logger = spdlog::stderr_color_mt("shmdict-bridge");
  } else {
    try {
      logger = spdlog::basic_logger_mt("shmdict-bridge", log_file);
    } catch (const spdlog::spdlog_ex& error) {
      return Fail("--log-file '" + log_file + "': " + error.what());
    }
    logger->flush_on(spdlog::level::info);
  }
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e level=%l %v");
  spdlog::set_level(spdlog::level::from_str(log_level));

  // Signals are taken by a dedicated thread (sigwait); block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // TLS for TCP listeners. Unix sockets stay plaintext: whoever can reach the socket file is
  // on this host, where the file's mode decides.
  std::shared_ptr<grpc::ServerCredentials> tcp_credentials = grpc::InsecureServerCredentials();
  if (tls) {
    if (tls_cert.empty() || tls_key.empty()) {
      return Fail("TLS needs both --tls-cert and --tls-key (--tls-client-ca adds mTLS to them)");
    }
    grpc::SslServerCredentialsOptions ssl(
        tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!ReadFile(tls_cert, &pair.cert_chain) || pair.cert_chain.empty()) {
      return Fail("--tls-cert '" + tls_cert + "' cannot be read");
    }
    if (!ReadFile(tls_key, &pair.private_key) || pair.private_key.empty()) {
      return Fail("--tls-key '" + tls_key + "' cannot be read");
    }
    if (!tls_client_ca.empty() &&
        (!ReadFile(tls_client_ca, &ssl.pem_root_certs) || ssl.pem_root_certs.empty())) {
      return Fail("--tls-client-ca '" + tls_client_ca + "' cannot be read");
    }
    ssl.pem_key_cert_pairs.push_back(std::move(pair));
    tcp_credentials = grpc::SslServerCredentials(ssl);
  }

  std::vector<shmdict::bridge::ListenAddress> addresses;
  shmdict::bridge::UnixSocketClaims claims;
  std::optional<shmdict::bridge::ListenAddress> health_address;
  if (!health_listen.empty()) {
    auto address = shmdict::bridge::ParseListenAddress(health_listen);
    if (!address.ok()) return Fail("--health-listen: " + address.status().message());
    if (address->is_unix) {
      shmdict::Status claimed = claims.Claim(address->unix_path);
      if (!claimed.ok()) return Fail(claimed.message());
    }
    health_address = *address;
  }
  for (const std::string& spec : listen) {
    auto address = shmdict::bridge::ParseListenAddress(spec);
    if (!address.ok()) return Fail(address.status().message());
    if (address->is_unix) {
      shmdict::Status claimed = claims.Claim(address->unix_path);
      if (!claimed.ok()) return Fail(claimed.message());
    }
    addresses.push_back(*address);
  }

  auto authorizer = shmdict::bridge::Authorizer::Create(access);
  if (!authorizer.ok()) return Fail(authorizer.status().message());

  shmdict::bridge::Metrics metrics;
  HealthServices health;
  shmdict::bridge::DictRegistry registry(
      shmdict::bridge::DictRegistry::Limits{}, [&health](const std::string& dict, bool serving) {
        health.Set(DictHealthName(dict), serving);
        spdlog::info("{} dict={}", serving ? "serving" : "stopped serving", dict);
      });
  shmdict::bridge::StreamLimits limits;
  limits.max_message_bytes = max_message_bytes;
  limits.batch_bytes = batch_bytes;
  limits.default_progress_interval = std::chrono::milliseconds(progress_interval_ms);
  shmdict::bridge::DictService service(&registry, limits, authorizer->get(), max_value_bytes,
                                       &metrics, creation);

  grpc::EnableDefaultHealthCheckService(true);
  // The probe server: plaintext, no token, no shmdict.v1.Dict: the health service (and server
  // reflection, which gRPC's plugin adds to every server of the process; it describes the API
  // and serves no data).
  std::unique_ptr<grpc::Server> health_server;
  if (health_address) {
    grpc::ServerBuilder health_builder;
    health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    int port = 0;
    health_builder.AddListeningPort(health_address->spec, grpc::InsecureServerCredentials(),
                                    health_address->is_unix ? nullptr : &port);
    health_server = health_builder.BuildAndStart();
    if (!health_server || (!health_address->is_unix && port == 0)) {
      return Fail("cannot listen on " + health_address->spec +
                  " (in use by another process, or not an address of this host)");
    }
    health.Add(health_server->GetHealthCheckService());
    std::printf("health listening on %s\n", Shown(*health_address, port).c_str());
    spdlog::info("health listening address={}", Shown(*health_address, port));
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Keepalive agreeing with the clients' (RemoteDict pings every 20 s): a dead peer is noticed
  // in ~30 s, and the client's pings are never answered with GOAWAY too_many_pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Room for one value of max_message_bytes plus its key and framing.
  const int wire_limit = static_cast<int>(max_message_bytes + (size_t{1} << 20));
  builder.SetMaxReceiveMessageSize(wire_limit);
  builder.SetMaxSendMessageSize(wire_limit);
  std::vector<int> ports(addresses.size(), 0);
  for (size_t i = 0; i < addresses.size(); ++i) {
    builder.AddListeningPort(
        addresses[i].spec,
        addresses[i].is_unix ? grpc::InsecureServerCredentials() : tcp_credentials,
        addresses[i].is_unix ? nullptr : &ports[i]);
  }
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    if (addresses.empty()) return Fail("the gRPC server did not start");
    std::string all;
    for (const auto& address : addresses) all += (all.empty() ? "" : ", ") + address.spec;
    return Fail("cannot listen on " + all +
                " (in use by another process, or not an address of "
                "this host)");
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (!addresses[i].is_unix && ports[i] == 0) {
      server->Shutdown();
      return Fail("cannot listen on " + addresses[i].spec +
                  " (in use by another process, or not an address of this host)");
    }
  }
  std::unique_ptr<shmdict::bridge::ActivatedListeners> adopted;
  if (!activated->empty()) {
    for (int fd : *activated) {
      const std::string shown = shmdict::bridge::DescribeSocket(fd);
      std::printf("listening on %s\n", shown.c_str());
      spdlog::info("listening address={} (socket activation, fd {})", shown, fd);
    }
    adopted = std::make_unique<shmdict::bridge::ActivatedListeners>(
        *activated, server.get(), [&metrics] { metrics.Touch(); });
  }
  MetricsServer metrics_server(&metrics, &registry);
  if (!metrics_listen.empty()) {
    std::string error;
    const int port = metrics_server.Start(metrics_listen, &error);
    if (port == 0) {
      server->Shutdown();
      return Fail(error);
    }
    const std::string shown =
        metrics_listen.substr(0, metrics_listen.rfind(':') + 1) + std::to_string(port);
    std::printf("metrics listening on %s\n", shown.c_str());
    spdlog::info("metrics listening address={}", shown);
  }
  health.Add(server->GetHealthCheckService());
  health.SetAll(true);
  health.Set(kServiceName, true);
  for (const std::string& dict : registry.AttachedNames()) health.Set(DictHealthName(dict), true);
  for (size_t i = 0; i < addresses.size(); ++i) {
    const std::string shown = Shown(addresses[i], ports[i]);
    std::printf("listening on %s\n", shown.c_str());
    spdlog::info("listening address={}", shown);
  }
  // Advisory: `shmdict ls` / `status` show this bridge while it lives; serving does not need it.
  // Listed before "ready", so that whoever waited for "ready" finds it listed.
  std::vector<std::string> shown_addresses;
  for (size_t i = 0; i < addresses.size(); ++i) {
    shown_addresses.push_back(Shown(addresses[i], ports[i]));
  }
  for (int fd : *activated) shown_addresses.push_back(shmdict::bridge::DescribeSocket(fd));
  auto presence = shmdict::bridge::PresencePublisher::Start(
      {.addresses = shown_addresses,
       .counts = [&registry] { return registry.SubscriberCounts(); }});
  if (!presence.ok()) spdlog::warn("not listed in `shmdict ls`: {}", presence.status().message());
  std::printf("ready\n");
  std::fflush(stdout);
  std::optional<IdleExit> idle_exit;
  if (idle_exit_seconds > 0) idle_exit.emplace(&metrics, std::chrono::seconds(idle_exit_seconds));

  int signal_number = 0;
  for (;;) {
    sigwait(&signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // SIGHUP: re-read the token file; a bad one leaves the tokens in force.
    shmdict::Status reloaded = (*authorizer)->ReloadTokens();
    if (reloaded.ok()) {
      spdlog::info("tokens reloaded file={}", access.token_file);
    } else {
      spdlog::error("tokens not reloaded, the previous ones stay in force: {}", reloaded.message());
    }
  }
  spdlog::info("shutting down signal={}", signal_number);
  idle_exit.reset();
  if (adopted) adopted->Stop();
  if (presence.ok()) presence->reset();  // no longer listed as serving
  health.SetAll(false);
  registry.Shutdown(
      shmdict::Status(shmdict::StatusCode::kUnavailable, "the bridge is shutting down: reconnect"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now());
  metrics_server.Stop();
  spdlog::info("stopped");
  return 0;
}
