#include "bridge_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <httplib.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>

#include "authorizer.h"
#include "dict_registry.h"
#include "listen.h"
#include "metrics.h"
#include "on_demand.h"
#include "service.h"
#include "shmdict/bridge/presence.h"

namespace shmdict::bridge {

namespace {

constexpr char kServiceName[] = "shmdict.v1.Dict";

// Health names: "" (the bridge), "shmdict.v1.Dict", and "shmdict.v1.Dict/NAME" per dict served.
std::string DictHealthName(const std::string& dict) {
  return std::string(kServiceName) + "/" + dict;
}

Status Unusable(const std::string& spec) {
  return Status(
      StatusCode::kUnavailable,
      "cannot listen on " + spec + " (in use by another process, or not an address of this host)");
}

// The whole file into *text; false when it cannot be read.
bool ReadFile(const std::string& path, std::string* text) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return in.good() || in.eof();
}

// TLS for TCP listeners. Unix sockets stay plaintext: whoever can reach the socket file is on this
// host, where the file's mode decides.
Result<std::shared_ptr<grpc::ServerCredentials>> TcpCredentials(const BridgeConfig& config) {
  if (!config.tls()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      config.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  const auto unreadable = [](const char* flag, const std::string& path) {
    return Status(StatusCode::kNotFound, std::string(flag) + " '" + path + "' cannot be read");
  };
  if (!ReadFile(config.tls_cert, &pair.cert_chain) || pair.cert_chain.empty()) {
    return unreadable("--tls-cert", config.tls_cert);
  }
  if (!ReadFile(config.tls_key, &pair.private_key) || pair.private_key.empty()) {
    return unreadable("--tls-key", config.tls_key);
  }
  if (!config.tls_client_ca.empty() &&
      (!ReadFile(config.tls_client_ca, &ssl.pem_root_certs) || ssl.pem_root_certs.empty())) {
    return unreadable("--tls-client-ca", config.tls_client_ca);
  }
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  return grpc::SslServerCredentials(ssl);
}

// Parses `spec` and, for a Unix socket, claims its path.
Result<ListenAddress> ParseAndClaim(const std::string& spec, UnixSocketClaims* claims) {
  auto address = ParseListenAddress(spec);
  if (!address.ok()) return address.status();
  if (address->is_unix) {
    Status claimed = claims->Claim(address->unix_path);
    if (!claimed.ok()) return claimed;
  }
  return address;
}

// The address as printed: a port of 0 replaced by the port chosen.
std::string Shown(const ListenAddress& address, int port) {
  if (address.is_unix) return address.spec;
  return address.spec.substr(0, address.spec.rfind(':') + 1) + std::to_string(port);
}

// The health services of the main server and of the --health-listen server: every status is set
// on both. Set from the registry's threads and from the owner's.
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

// --metrics-listen: Prometheus text at /metrics over plain HTTP (cpp-httplib), from its own thread.
class MetricsServer {
 public:
  MetricsServer(Metrics* metrics, DictRegistry* registry)
      : metrics_(metrics), registry_(registry) {}
  ~MetricsServer() { Stop(); }

  // Returns the address bound, with the port chosen for a port of 0.
  Result<std::string> Start(const std::string& spec) {
    auto address = ParseListenAddress(spec);
    if (!address.ok() || address->is_unix) {
      return Status(StatusCode::kInvalidArgument,
                    "--metrics-listen '" + spec + "' must be HOST:PORT (plain HTTP over TCP)");
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
      return Status(StatusCode::kUnavailable, "cannot listen on " + spec +
                                                  " for metrics (in use, or not an address of "
                                                  "this host)");
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return Shown(*address, port);
  }
  void Stop() {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();
  }

 private:
  Metrics* const metrics_;
  DictRegistry* const registry_;
  httplib::Server server_;
  std::thread thread_;
};

// --idle-exit: calls `expire` once nothing has been in flight for `idle`.
class IdleExit {
 public:
  IdleExit(const Metrics* metrics, std::chrono::seconds idle, std::function<void()> expire)
      : thread_([this, metrics, idle, expire = std::move(expire)] {
          std::unique_lock lock(mu_);
          const auto tick = std::min<std::chrono::milliseconds>(
              idle / 4 + std::chrono::milliseconds(1), std::chrono::seconds(1));
          while (!stop_) {
            cv_.wait_for(lock, tick);
            if (!stop_ && metrics->IdleFor() >= idle) {
              spdlog::info("no call or stream for {} s: exiting (--idle-exit)", idle.count());
              expire();
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
  bool stop_ = false;   // guarded by mu_
  std::thread thread_;  // last: started once the rest is constructed
};

// Unix sockets are bound inside BuildAndStart with the umask's mode: 0777 under umask 000, for a
// moment before the chmod to --socket-mode, when anyone could connect. Under this mask the socket
// is never wider than --socket-mode. The chmod stays: a mask can only narrow, and the mode must be
// exactly --socket-mode whatever the umask was (an operator's umask 077 would make 0660 0600).
// The umask is process-wide: a file another thread creates meanwhile gets the mask too, which
// only narrows it.
class SocketUmask {
 public:
  SocketUmask(bool needed, mode_t socket_mode)
      : needed_(needed), previous_(needed ? umask(~socket_mode & 0777) : 0) {}
  ~SocketUmask() {
    if (needed_) umask(previous_);
  }
  SocketUmask(const SocketUmask&) = delete;
  SocketUmask& operator=(const SocketUmask&) = delete;

 private:
  const bool needed_;
  const mode_t previous_;
};

}  // namespace

// Declared in the order of construction: each member is destroyed before what it points to.
struct BridgeServer::State {
  // Removes the Unix sockets once every server is gone.
  UnixSocketClaims claims;
  std::unique_ptr<Authorizer> authorizer;
  std::string token_file;
  Metrics metrics;
  HealthServices health;
  std::unique_ptr<DictRegistry> registry;
  // --max-waiting-calls: one gate for waiting Gets and Watch streams (the service hands it out).
  std::unique_ptr<WaitingCalls> waiting;
  std::unique_ptr<DictService> service;
  std::unique_ptr<grpc::Server> health_server;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<ActivatedListeners> adopted;
  std::unique_ptr<MetricsServer> metrics_server;
  std::unique_ptr<PresencePublisher> presence;

  std::vector<std::string> addresses;
  std::string health_address;
  std::string metrics_address;

  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop_requested = false;  // guarded by stop_mu
  bool shut_down = false;       // the owner's
  std::optional<IdleExit> idle_exit;

  // A server that failed to start is destroyed without Shutdown: the registry's streams end (and
  // its serving callbacks run) while the health services they update still exist.
  ~State() {
    idle_exit.reset();
    if (registry) registry->Shutdown(Status(StatusCode::kUnavailable, "the bridge stopped"));
  }

  void RequestStop() {
    {
      std::lock_guard lock(stop_mu);
      stop_requested = true;
    }
    stop_cv.notify_all();
  }
};

Result<std::unique_ptr<BridgeServer>> BridgeServer::Start(BridgeConfig config) {
  // The activated sockets are ours from here on: closed on error, adopted otherwise.
  std::vector<int> activated = config.activated_fds;
  struct CloseUnadopted {
    std::vector<int>* fds;
    ~CloseUnadopted() {
      for (int fd : *fds) close(fd);
    }
  } close_unadopted{&activated};

  Status valid = ValidateConfig(config);
  if (!valid.ok()) return valid;
  auto tcp_credentials = TcpCredentials(config);
  if (!tcp_credentials.ok()) return tcp_credentials.status();

  auto state = std::make_unique<State>();
  std::optional<ListenAddress> health_address;
  if (!config.health_listen.empty()) {
    auto address = ParseAndClaim(config.health_listen, &state->claims);
    if (!address.ok()) {
      return Status(address.status().code(), "--health-listen: " + address.status().message());
    }
    health_address = *address;
  }
  std::vector<ListenAddress> addresses;
  for (const std::string& spec : config.ListenAddresses()) {
    auto address = ParseAndClaim(spec, &state->claims);
    if (!address.ok()) return address.status();
    addresses.push_back(*address);
  }

  auto authorizer = Authorizer::Create(
      {.dicts = config.dicts, .read_only = config.read_only, .token_file = config.token_file});
  if (!authorizer.ok()) return authorizer.status();
  state->authorizer = std::move(*authorizer);
  state->token_file = config.token_file;

  State* const s = state.get();
  DictRegistry::Limits registry_limits;
  registry_limits.max_idle_handles_per_dict = config.max_idle_handles_per_dict;
  state->registry =
      std::make_unique<DictRegistry>(registry_limits, [s](const std::string& dict, bool serving) {
        s->health.Set(DictHealthName(dict), serving);
        spdlog::info("{} dict={}", serving ? "serving" : "stopped serving", dict);
      });
  StreamLimits limits;
  limits.max_message_bytes = config.max_message_bytes;
  limits.batch_bytes = std::min(config.watch_batch_bytes, config.max_message_bytes);
  limits.window_bytes = config.watch_window_bytes;
  limits.default_progress_interval = std::chrono::milliseconds(config.progress_interval_ms);
  state->waiting = std::make_unique<WaitingCalls>(config.max_waiting_calls);
  state->service = std::make_unique<DictService>(
      state->registry.get(), limits, state->authorizer.get(), state->waiting.get(),
      ServiceLimits{.max_value_bytes = config.max_value_bytes,
                    .max_batch_ops = config.max_batch_ops,
                    .max_batch_bytes = config.max_batch_bytes,
                    .max_wait = config.max_wait,
                    .max_create_bytes = config.max_create_bytes,
                    .allow_pickle = config.allow_pickle},
      &state->metrics, CreationPolicy{.allowed = config.allow_create, .mode = config.create_mode},
      config.write_router);

  grpc::EnableDefaultHealthCheckService(true);
  // The probe server: plaintext, no token, no shmdict.v1.Dict: the health service (and server
  // reflection, which gRPC's plugin adds to every server of the process; it describes the API
  // and serves no data).
  if (health_address) {
    grpc::ServerBuilder health_builder;
    health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    int port = 0;
    health_builder.AddListeningPort(health_address->spec, grpc::InsecureServerCredentials(),
                                    health_address->is_unix ? nullptr : &port);
    {
      SocketUmask mask(health_address->is_unix, config.socket_mode);
      state->health_server = health_builder.BuildAndStart();
    }
    if (!state->health_server || (!health_address->is_unix && port == 0)) {
      return Unusable(health_address->spec);
    }
    if (health_address->is_unix) {
      Status mode = SetSocketMode(health_address->unix_path, config.socket_mode);
      if (!mode.ok()) return mode;
    }
    state->health.Add(state->health_server->GetHealthCheckService());
    state->health_address = Shown(*health_address, port);
    spdlog::info("health listening address={}", state->health_address);
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
  const int wire_limit = static_cast<int>(config.max_message_bytes + (size_t{1} << 20));
  builder.SetMaxReceiveMessageSize(wire_limit);
  builder.SetMaxSendMessageSize(wire_limit);
  std::vector<int> ports(addresses.size(), 0);
  for (size_t i = 0; i < addresses.size(); ++i) {
    builder.AddListeningPort(
        addresses[i].spec,
        addresses[i].is_unix ? grpc::InsecureServerCredentials() : *tcp_credentials,
        addresses[i].is_unix ? nullptr : &ports[i]);
  }
  builder.RegisterService(state->service.get());
  {
    const bool any_unix = std::any_of(addresses.begin(), addresses.end(),
                                      [](const auto& address) { return address.is_unix; });
    SocketUmask mask(any_unix, config.socket_mode);
    state->server = builder.BuildAndStart();
  }
  if (!state->server) {
    if (addresses.empty()) return Status(StatusCode::kInternal, "the gRPC server did not start");
    std::string all;
    for (const auto& address : addresses) all += (all.empty() ? "" : ", ") + address.spec;
    return Unusable(all);
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (!addresses[i].is_unix && ports[i] == 0) return Unusable(addresses[i].spec);
    if (addresses[i].is_unix) {
      // Bound under SocketUmask (never wider than --socket-mode); the chmod makes it exactly that.
      Status mode = SetSocketMode(addresses[i].unix_path, config.socket_mode);
      if (!mode.ok()) return mode;
    }
    state->addresses.push_back(Shown(addresses[i], ports[i]));
    if (state->authorizer->needs_token() && !config.tls() && !addresses[i].is_unix &&
        !IsLoopbackHost(addresses[i].host)) {
      spdlog::warn(
          "tokens travel in plaintext on {}, an address reachable from other hosts: anyone on the "
          "path can read them (set --tls-cert and --tls-key, or listen on loopback or a Unix "
          "socket)",
          addresses[i].spec);
    }
  }
  if (!activated.empty()) {
    for (int fd : activated) {
      state->addresses.push_back(DescribeSocket(fd));
      spdlog::info("listening address={} (socket activation, fd {})", state->addresses.back(), fd);
    }
    Metrics* const metrics = &state->metrics;
    state->adopted = std::make_unique<ActivatedListeners>(std::move(activated), state->server.get(),
                                                          [metrics] { metrics->Touch(); });
    activated.clear();
  }
  state->metrics_server = std::make_unique<MetricsServer>(&state->metrics, state->registry.get());
  if (!config.metrics_listen.empty()) {
    auto bound = state->metrics_server->Start(config.metrics_listen);
    if (!bound.ok()) return bound.status();
    state->metrics_address = *bound;
    spdlog::info("metrics listening address={}", state->metrics_address);
  }
  state->health.Add(state->server->GetHealthCheckService());
  state->health.SetAll(true);
  state->health.Set(kServiceName, true);
  for (const std::string& dict : state->registry->AttachedNames()) {
    state->health.Set(DictHealthName(dict), true);
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    spdlog::info("listening address={}", state->addresses[i]);
  }
  // Advisory: `shmdict ls` / `status` show this bridge while it lives; serving does not need it.
  // Written before Start returns, so that whoever waits for "ready" finds it listed.
  DictRegistry* const registry = state->registry.get();
  PresencePublisher::Options presence{
      .addresses = state->addresses, .counts = [registry] { return registry->SubscriberCounts(); }};
  if (!config.presence_dir.empty()) presence.dir = config.presence_dir;
  auto publisher = PresencePublisher::Start(std::move(presence));
  if (publisher.ok()) {
    state->presence = std::move(*publisher);
  } else {
    spdlog::warn("not listed in `shmdict ls`: {}", publisher.status().message());
  }
  if (config.idle_exit.count() > 0) {
    state->idle_exit.emplace(&state->metrics, config.idle_exit, [s] { s->RequestStop(); });
  }
  return std::unique_ptr<BridgeServer>(new BridgeServer(std::move(state)));
}

BridgeServer::BridgeServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

BridgeServer::~BridgeServer() { Shutdown(std::chrono::system_clock::now()); }

const std::vector<std::string>& BridgeServer::addresses() const { return state_->addresses; }
const std::string& BridgeServer::health_address() const { return state_->health_address; }
const std::string& BridgeServer::metrics_address() const { return state_->metrics_address; }

Status BridgeServer::ReloadTokens() {
  Status reloaded = state_->authorizer->ReloadTokens();
  if (reloaded.ok()) {
    spdlog::info("tokens reloaded file={}", state_->token_file);
    // Open Watch streams check their tokens now: those whose token is gone end.
    state_->registry->PokeAll();
  } else {
    spdlog::error("tokens not reloaded, the previous ones stay in force: {}", reloaded.message());
  }
  return reloaded;
}

void BridgeServer::RequestStop() { state_->RequestStop(); }

void BridgeServer::Wait() {
  std::unique_lock lock(state_->stop_mu);
  state_->stop_cv.wait(lock, [this] { return state_->stop_requested; });
}

void BridgeServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  State& s = *state_;
  if (s.shut_down) return;
  s.shut_down = true;
  s.idle_exit.reset();
  s.RequestStop();
  if (s.adopted) s.adopted->Stop();
  s.presence.reset();  // no longer listed as serving
  s.health.SetAll(false);
  s.registry->Shutdown(Status(StatusCode::kUnavailable, "the bridge is shutting down: reconnect"));
  s.server->Shutdown(deadline);
  if (s.health_server) s.health_server->Shutdown(std::chrono::system_clock::now());
  s.metrics_server->Stop();
  spdlog::info("stopped");
}

int EnsureRunning(const BridgeConfig& config, int argc, char** argv) {
  const auto fail = [](const std::string& message) {
    std::fprintf(stderr, "shmdict-bridge: %s\n", message.c_str());
    return 2;
  };
  Status valid = ValidateConfig(config);
  if (!valid.ok()) return fail(valid.message());
  const std::vector<std::string> listen = config.ListenAddresses();
  if (listen.empty()) return fail("--ensure needs a --listen address to probe");
  auto address = ParseListenAddress(listen.front());
  if (!address.ok()) return fail(address.status().message());
  return EnsureBridge(*address, argc, argv);
}

Status InstallProcessLogger(const BridgeConfig& config) {
  std::shared_ptr<spdlog::logger> logger;
  if (config.log_file.empty()) {
    logger = spdlog::stderr_color_mt("shmdict-bridge");
  } else {
    try {
      logger = spdlog::basic_logger_mt("shmdict-bridge", config.log_file);
    } catch (const spdlog::spdlog_ex& error) {
      return Status(StatusCode::kInvalidArgument,
                    "--log-file '" + config.log_file + "': " + error.what());
    }
    logger->flush_on(spdlog::level::info);
  }
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e level=%l %v");
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  return Status::Ok();
}

}  // namespace shmdict::bridge
