// shmdict-bridge: serves this host's shmdict dicts over gRPC (shmdict.v1.Dict) to clients that
// cannot map /dev/shm. Stateless: it attaches dicts lazily by name and holds nothing a restart
// would lose; run several, kill or restart any of them.
//
//   shmdict-bridge [--listen ADDR]...      ADDR: HOST:PORT or unix:PATH (default 127.0.0.1:7377)
//
//                  [--dict NAME]... [--read-only] [--max-value-bytes N] [--token-file FILE]
//                  [--tls-cert F --tls-key F [--tls-client-ca F]] [--health-listen ADDR]
//
// On start it prints one line per address, "listening on ADDR" (a port of 0 is replaced by the
// port chosen), then "ready". SIGHUP re-reads the token file. SIGTERM or SIGINT: health turns
// NOT_SERVING, Watch streams end with UNAVAILABLE (clients resume elsewhere or after a restart),
// calls in progress get up to 5 s.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "authorizer.h"
#include "dict_registry.h"
#include "listen.h"
#include "presence.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shmdict-bridge: serve this host's shmdict dicts over gRPC"};
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
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  CLI11_PARSE(app, argc, argv);
  if (listen.empty()) listen.push_back("127.0.0.1:7377");
  batch_bytes = std::min(batch_bytes, max_message_bytes);
  access.read_only = read_only;

  auto logger = spdlog::stderr_color_mt("shmdict-bridge");
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
  if (!tls_cert.empty() || !tls_key.empty() || !tls_client_ca.empty()) {
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
  shmdict::bridge::DictService service(&registry, limits, authorizer->get(), max_value_bytes);

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
  auto presence = shmdict::bridge::PresencePublisher::Start(
      {.addresses = shown_addresses,
       .counts = [&registry] { return registry.SubscriberCounts(); }});
  if (!presence.ok()) spdlog::warn("not listed in `shmdict ls`: {}", presence.status().message());
  std::printf("ready\n");
  std::fflush(stdout);

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
  if (presence.ok()) presence->reset();  // no longer listed as serving
  health.SetAll(false);
  registry.Shutdown(
      shmdict::Status(shmdict::StatusCode::kUnavailable, "the bridge is shutting down: reconnect"));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now());
  spdlog::info("stopped");
  return 0;
}
