// shmdict-replica: keeps a local shmdict dict as a replica of a dict kept elsewhere -- a key prefix
// of an etcd cluster (--etcd, --prefix) or another host's dict through its bridge (--bridge,
// --source) -- and, with --listen, serves it with the bridge's shmdict.v1 Dict service, whose
// writes go to the upstream and return once applied here. docs/REPLICA.md.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "applier.h"
#include "bridge_config.h"
#include "bridge_flags.h"
#include "bridge_server.h"
#include "bridge_upstream.h"
#include "etcd_upstream.h"
#include "replica_store.h"
#include "shmdict/dict.h"
#include "write_router.h"

namespace {

using shmdict::Result;
using shmdict::Status;
using shmdict::StatusCode;

int Fail(const std::string& message) {
  std::fprintf(stderr, "shmdict-replica: %s\n", message.c_str());
  return 2;
}

constexpr auto kShutdownGrace = std::chrono::seconds(4);

Result<std::string> ReadSecret(const std::string& path, std::string_view flag) {
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kNotFound, std::string(flag) + ": cannot read " + path);
  std::string first_line;
  std::getline(in, first_line);
  while (!first_line.empty() && (first_line.back() == '\r' || first_line.back() == ' ')) {
    first_line.pop_back();
  }
  if (first_line.empty()) {
    return Status(StatusCode::kInvalidArgument, std::string(flag) + ": " + path + " is empty");
  }
  return first_line;
}

// Every write the --listen service receives becomes a ReplicaStore: upstream first, then applied
// here before the call returns.
class ReplicaRouter final : public shmdict::bridge::WriteRouter {
 public:
  ReplicaRouter(shmdict::replica::Upstream& upstream, shmdict::replica::Applier& applier,
                std::chrono::milliseconds apply_timeout)
      : upstream_(upstream), applier_(applier), apply_timeout_(apply_timeout) {}
  Result<std::unique_ptr<shmdict::Store>> Route(shmdict::Dict& dict) override {
    auto writer = upstream_.Writer();
    if (!writer.ok()) return writer.status();
    return std::unique_ptr<shmdict::Store>(
        new shmdict::replica::ReplicaStore(dict, applier_, std::move(*writer), apply_timeout_));
  }

 private:
  shmdict::replica::Upstream& upstream_;
  shmdict::replica::Applier& applier_;
  const std::chrono::milliseconds apply_timeout_;
};

}  // namespace

int main(int argc, char** argv) {
  // Blocked before any thread exists (gRPC starts threads as soon as a channel is made): the
  // signal thread below takes them with sigwait, and no other thread may die of them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  using shmdict::bridge::BridgeConfig;
  BridgeConfig config;
  config.listen.clear();
  CLI::App app{
      "shmdict-replica: keep a local shmdict dict as a replica of an etcd key prefix or "
      "of another host's dict, and serve its writes"};
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("shmdict-replica ") + SHMDICT_VERSION +
                                        ", layout version " +
                                        std::to_string(shmdict::Dict::LayoutVersion()));
  std::string dict_name;
  app.add_option("--dict", dict_name, "the local dict kept as a replica (created if missing)")
      ->required();
  shmdict::replica::EtcdOptions etcd;
  std::string etcd_endpoints;
  std::string etcd_password_file;
  auto* etcd_option = app.add_option("--etcd", etcd_endpoints,
                                     "HOST:PORT[,HOST:PORT...]: the etcd cluster's client "
                                     "endpoints, tried in this order");
  app.add_option("--prefix", etcd.prefix, "the etcd key prefix this dict copies")
      ->needs(etcd_option);
  app.add_option("--etcd-ca", etcd.tls_ca, "PEM CA of the etcd members' certificates (TLS)");
  app.add_option("--etcd-cert", etcd.tls_cert, "PEM client certificate for etcd (mTLS)");
  app.add_option("--etcd-key", etcd.tls_key, "PEM private key of --etcd-cert");
  app.add_option("--etcd-user", etcd.user, "etcd user (etcd's authentication)");
  app.add_option("--etcd-password-file", etcd_password_file, "file holding --etcd-user's password");
  app.add_option("--etcd-max-txn-ops", etcd.max_txn_ops,
                 "the cluster's --max-txn-ops: larger Batches are refused (RESOURCE_EXHAUSTED)")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  shmdict::RemoteOptions bridge;
  std::string bridge_token_file;
  auto* bridge_option =
      app.add_option("--bridge", bridge.address,
                     "ADDR (HOST:PORT or unix:PATH) of the shmdict-bridge serving the primary")
          ->excludes(etcd_option);
  app.add_option("--source", bridge.dict, "the primary dict's name on that bridge")
      ->needs(bridge_option);
  app.add_option("--bridge-token-file", bridge_token_file,
                 "file holding the token for --bridge (first line)");
  app.add_option("--bridge-ca", bridge.tls_ca, "PEM CA of --bridge's certificate (TLS)");
  app.add_option("--bridge-cert", bridge.tls_cert, "PEM client certificate for --bridge (mTLS)");
  app.add_option("--bridge-key", bridge.tls_key, "PEM private key of --bridge-cert");
  uint64_t buffer_bytes = uint64_t{16} << 20;
  app.add_option("--buffer-bytes", buffer_bytes, "the local dict's log size when creating it")
      ->check(CLI::Range(uint64_t{64} << 10, uint64_t{1} << 34));
  std::string dict_mode = "0644";
  app.add_option("--mode", dict_mode,
                 "octal file mode of the local dict when creating it (readers need read access)");
  unsigned apply_timeout_ms = 10000;
  app.add_option("--apply-timeout-ms", apply_timeout_ms,
                 "how long a write through --listen waits to be applied here after the upstream "
                 "committed it (then DEADLINE_EXCEEDED)")
      ->check(CLI::Range(1u, 3600u * 1000));
  shmdict::bridge::AddServingFlags(app, &config, shmdict::bridge::ServingFlagSet::kReplica);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  if (etcd_endpoints.empty() == bridge.address.empty()) {
    return Fail(
        "give either --etcd HOST:PORT[,...] --prefix PREFIX or --bridge ADDR --source DICT");
  }
  if (!bridge.address.empty() && bridge.dict.empty()) return Fail("--bridge needs --source DICT");
  auto mode = shmdict::bridge::ParseFileMode(dict_mode);
  if (!mode.ok()) return Fail("--mode '" + dict_mode + "' is not an octal file mode such as 0644");
  config.dicts = {dict_name};
  config.allow_create = false;

  std::unique_ptr<shmdict::replica::Upstream> upstream;
  if (!etcd_endpoints.empty()) {
    std::stringstream list(etcd_endpoints);
    for (std::string endpoint; std::getline(list, endpoint, ',');) {
      if (!endpoint.empty()) etcd.endpoints.push_back(endpoint);
    }
    if (!etcd_password_file.empty()) {
      auto password = ReadSecret(etcd_password_file, "--etcd-password-file");
      if (!password.ok()) return Fail(password.status().message());
      etcd.password = *password;
    }
    etcd.allow_pickle = config.allow_pickle;
    auto made = shmdict::replica::MakeEtcdUpstream(etcd);
    if (!made.ok()) return Fail(made.status().message());
    upstream = std::move(*made);
  } else {
    if (!bridge_token_file.empty()) {
      auto token = ReadSecret(bridge_token_file, "--bridge-token-file");
      if (!token.ok()) return Fail(token.status().message());
      bridge.token = *token;
    }
    auto made = shmdict::replica::MakeBridgeUpstream(bridge, config.allow_pickle);
    if (!made.ok()) return Fail(made.status().message());
    upstream = std::move(*made);
  }
  if (!config.listen.empty()) {
    Status valid = shmdict::bridge::ValidateConfig(config);
    if (!valid.ok()) return Fail(valid.message());
  }
  if (config.exit_with_parent) {
    const pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) return 0;
  }
  Status logging = shmdict::bridge::InstallProcessLogger(config);
  if (!logging.ok()) return Fail(logging.message());

  shmdict::Options options;
  options.name = dict_name;
  options.buffer_size = buffer_bytes;
  options.mode = *mode;
  options.auto_unlink = false;  // the replica outlives this process: it resumes from it
  auto dict = shmdict::Dict::Open(options);
  if (!dict.ok()) return Fail(dict.status().message());
  auto applier = shmdict::replica::Applier::Start(*dict, *upstream, {});
  if (!applier.ok()) return Fail(applier.status().message());

  ReplicaRouter router(*upstream, **applier, std::chrono::milliseconds(apply_timeout_ms));
  std::unique_ptr<shmdict::bridge::BridgeServer> server;
  if (!config.listen.empty()) {
    config.write_router = &router;
    auto started = shmdict::bridge::BridgeServer::Start(config);
    if (!started.ok()) return Fail(started.status().message());
    server = std::move(*started);
    Status listen = (*applier)->SetListen(server->addresses().front());
    if (!listen.ok()) spdlog::warn("cannot record the listen address: {}", listen.message());
    if (!server->health_address().empty()) {
      std::printf("health listening on %s\n", server->health_address().c_str());
    }
    for (const std::string& address : server->addresses()) {
      std::printf("listening on %s\n", address.c_str());
    }
    if (!server->metrics_address().empty()) {
      std::printf("metrics listening on %s\n", server->metrics_address().c_str());
    }
    std::fflush(stdout);
  }

  // Stopping, in this order: a signal (or a fatal feed) ends serving; calls in flight get the
  // grace period while the feed still runs (a write waiting to be applied here gets its answer);
  // then the feed stops. A watchdog armed by the first signal ends the process whatever hangs.
  std::atomic<bool> stopping{false};
  std::atomic<int> exit_code{0};
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  auto request_stop = [&](int code) {
    if (stopping.exchange(true)) return;
    exit_code.store(code);
    std::thread([] {
      std::this_thread::sleep_for(kShutdownGrace + std::chrono::seconds(2));
      spdlog::warn("still stopping after {} s: exiting anyway", kShutdownGrace.count() + 2);
      spdlog::default_logger()->flush();
      _exit(1);
    }).detach();
    if (server) server->RequestStop();
    std::lock_guard lock(stop_mu);
    stop_cv.notify_all();
  };
  std::thread signal_thread([&] {
    for (;;) {
      int number = 0;
      sigwait(&signals, &number);
      if (number == SIGHUP) {
        if (server) (void)server->ReloadTokens();
        continue;
      }
      request_stop(0);  // later signals are taken here too, and ignored: the watchdog runs
    }
  });
  signal_thread.detach();  // it lives until _exit
  // "ready" once the upstream answered and what it sent is applied: the dict then mirrors it.
  // Until then (an unreachable upstream) it serves its last state, as it does later.
  bool announced = false;
  while (!stopping.load()) {
    const bool ready =
        (*applier)->WaitReady(std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
    if (ready && !announced) {
      std::printf("ready\n");
      std::fflush(stdout);
      announced = true;
    }
    if (auto fatal = (*applier)->fatal()) {
      std::fprintf(stderr, "shmdict-replica: %s\n", fatal->message().c_str());
      request_stop(1);
    }
    if (announced) {
      std::unique_lock lock(stop_mu);
      stop_cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return stopping.load(); });
    }
  }
  if (server) {
    server->Wait();
    server->Shutdown(std::chrono::system_clock::now() + kShutdownGrace);
    server.reset();
  }
  (*applier)->Stop();
  applier->reset();
  spdlog::info("stopped");
  spdlog::default_logger()->flush();
  std::fflush(stdout);
  _exit(exit_code.load());
}
