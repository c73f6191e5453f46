// shmdict-bridge: serves this host's shmdict dicts over gRPC (shmdict.v1.Dict) to clients that
// cannot map /dev/shm. Stateless: it attaches dicts lazily by name and holds nothing a restart
// would lose; run several, kill or restart any of them.
//
// This file is the process around a BridgeServer (bridge_server.h): flags into a BridgeConfig,
// --ensure, --exit-with-parent, the log, signals. Every flag is a field of BridgeConfig, which
// holds its default, bound by AddServingFlags (bridge_flags.h); docs/BRIDGE.md describes them.
//
// On start it prints "health listening on ADDR" and "metrics listening on ADDR" for those
// servers, one "listening on ADDR" per address of the dict service (a port of 0 replaced by the
// port chosen), then "ready". SIGHUP re-reads the token file. SIGTERM or SIGINT (or --idle-exit,
// or the parent's death with --exit-with-parent) stops the server: waiting calls (Watch streams)
// end at once with UNAVAILABLE, writes in progress get the rest of a 5 s grace period, and the
// process exits 0 within it even if a write is stuck (a watchdog ends it). Exit status 2 with one
// stderr line when a flag is wrong or the server cannot start.
#include <absl/synchronization/mutex.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "bridge_config.h"
#include "bridge_flags.h"
#include "bridge_server.h"
#include "on_demand.h"
#include "shmdict/dict.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "shmdict-bridge: %s\n", message.c_str());
  return 2;
}

// The newest revision of the wire API docs/API.md lists ("Compatibility policy"), for --version.
constexpr const char* kWireApiRevision = "1.5";

// The whole stop, from the signal to the exit. Shutdown gets all but the last second of it for
// writes in flight; the watchdog ends the process at its end whatever is still running (a write
// stuck behind a dict's writer lock must not keep a stopping bridge alive).
constexpr auto kStopGrace = std::chrono::seconds(5);
constexpr auto kShutdownGrace = std::chrono::seconds(4);

}  // namespace

int main(int argc, char** argv) {
  // Debian's abseil (which gRPC locks its mutexes with) is built with Mutex deadlock detection on:
  // every acquisition records lock order in a global graph, 2-3 % of the bridge's CPU in perf
  // (GraphCycles::GetId). It diagnoses lock-order inversions inside gRPC, not in shmdict (whose
  // locks are std::mutex); a release build of abseil has it off. Set in the process's main, before
  // gRPC's first lock; the client library leaves it alone (it is its host process's setting).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  using shmdict::bridge::BridgeConfig;
  BridgeConfig config;
  CLI::App app{"shmdict-bridge: serve this host's shmdict dicts over gRPC"};
  // The layout version must match the applications' (README, "Deploying": version skew); the wire
  // API's revision is the newest docs/API.md lists (kWireApiRevision: bump it with that list).
  app.set_version_flag("--version",
                       std::string("shmdict-bridge ") + SHMDICT_VERSION + ", layout version " +
                           std::to_string(shmdict::Dict::LayoutVersion()) +
                           ", wire API shmdict.v1 (revision " + kWireApiRevision + ")");
  shmdict::bridge::AddServingFlags(app, &config, shmdict::bridge::ServingFlagSet::kBridge);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // --help and --version end parsing with status 0; a wrong flag is the documented 2 (CLI11's
    // own codes, 105 to 113, are not).
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }

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
