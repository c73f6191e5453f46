// The bridge's operations: --metrics-listen (Prometheus text), --idle-exit, --ensure (race-free
// on-demand start) and systemd socket activation (LISTEN_FDS), with real bridge processes.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/remote_catalog.h"
#include "shmdict/remote_dict.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;

class OperationsTest : public DictTestBase {
 protected:
  void SetUp() override {
    auto dict = Dict::Open(CreateOptions(name_));
    ASSERT_OK(dict);
    dict_.emplace(std::move(*dict));
  }

  Result<std::unique_ptr<RemoteDict>> Connect(const std::string& address) {
    RemoteOptions options{.address = address, .dict = name_, .mirror = false};
    options.open_timeout = 30s;
    return RemoteDict::Open(options);
  }

  std::optional<Dict> dict_;
};

// Parses the Prometheus text exposition format (0.0.4) strictly enough to catch what a scraper
// rejects: every sample is NAME{LABELS} VALUE with a numeric value, every family has a TYPE
// before its first sample, labels are quoted. Returns "NAME{LABELS}" -> value.
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$)");
  static const std::regex kType(
      R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  std::map<std::string, double> samples;
  std::set<std::string> typed;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::smatch match;
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (std::regex_match(line, match, kType)) {
      EXPECT_TRUE(typed.insert(match[1]).second) << "TYPE given twice: " << line;
      continue;
    }
    if (!std::regex_match(line, match, kSample)) {
      ADD_FAILURE() << "not a Prometheus sample line: '" << line << "'";
      continue;
    }
    EXPECT_TRUE(typed.count(match[1])) << "sample before its TYPE: " << line;
    const std::string series = match[1].str() + match[2].str();
    EXPECT_FALSE(samples.count(series)) << "sample given twice: " << line;
    samples[series] = std::stod(match[7]);
  }
  return samples;
}

// The HOST:PORT a bridge started with --metrics-listen serves /metrics on ("" if it did not say).
std::string MetricsAddress(BridgeProcess& bridge) {
  std::smatch match;
  const std::string& output = bridge.process()->output();  // what it printed up to "ready"
  if (std::regex_search(output, match, std::regex("metrics listening on ([^\n]+)"))) {
    return match[1];
  }
  return "";
}

TEST_F(OperationsTest, MetricsScrapeParsesAsPrometheusTextAndCountsCallsWritesAndSubscribers) {
  BridgeProcess bridge({}, {"--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(bridge.Start());
  const std::string metrics_address = MetricsAddress(bridge);
  ASSERT_FALSE(metrics_address.empty()) << bridge.process()->output();

  auto remote = Connect(bridge.address());
  ASSERT_OK(remote);
  for (int i = 0; i < 3; ++i) ASSERT_OK((*remote)->Set("k" + std::to_string(i), Value::Int(i)));
  Value value;
  ASSERT_OK((*remote)->Get("k0", &value));
  auto watcher = (*remote)->Watch(0);
  ASSERT_OK(watcher);
  // The snapshot reaches the watcher: the bridge has sent it, and counts one subscriber.
  auto first = (*watcher)->Next(WatchLimits{}, 30s);
  ASSERT_OK(first);
  // A refused call is counted with its code.
  RemoteOptions missing{.address = bridge.address(), .dict = name_ + "-missing", .mirror = false};
  EXPECT_EQ(RemoteDict::Open(missing).status().code(), StatusCode::kNotFound);

  const size_t colon = metrics_address.rfind(':');
  httplib::Client http(metrics_address.substr(0, colon),
                       std::stoi(metrics_address.substr(colon + 1)));
  http.set_read_timeout(30, 0);
  auto response = http.Get("/metrics");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_EQ(response->status, 200);
  EXPECT_NE(response->get_header_value("Content-Type").find("text/plain; version=0.0.4"),
            std::string::npos);
  const std::map<std::string, double> samples = ParsePrometheus(response->body);
  const std::string dict = "{dict=\"" + name_ + "\"}";
  auto sample = [&](const std::string& series) {
    auto it = samples.find(series);
    EXPECT_NE(it, samples.end()) << series << " missing from:\n" << response->body;
    return it == samples.end() ? -1.0 : it->second;
  };
  EXPECT_EQ(sample("shmdict_bridge_calls_total{method=\"Set\",code=\"OK\"}"), 3);
  EXPECT_EQ(sample("shmdict_bridge_calls_total{method=\"Get\",code=\"OK\"}"), 1);
  EXPECT_GE(sample("shmdict_bridge_calls_total{method=\"Status\",code=\"NOT_FOUND\"}"), 1);
  EXPECT_EQ(sample("shmdict_bridge_calls_in_flight"), 1);  // the Watch stream
  EXPECT_GT(sample("shmdict_bridge_sent_bytes_total"), 0);
  EXPECT_EQ(sample("shmdict_dict_writes_total" + dict), 3);
  EXPECT_EQ(sample("shmdict_dict_subscribers" + dict), 1);
  EXPECT_EQ(sample("shmdict_dict_revision" + dict),
            static_cast<double>(dict_->published_revision()));
  EXPECT_GE(sample("shmdict_dict_slowest_subscriber_lag" + dict), 0);
  EXPECT_GE(sample("shmdict_dict_changes_sent_total" + dict), 0);
  EXPECT_EQ(http.Get("/elsewhere")->status, 404);
}

// WaitForChange without a mirror watches with a stream of its own: the dict deleted and created
// again while it waits is a change (as with a mirror), whatever the new dict's revision, and the
// handle's commits start over with the new dict.
TEST_F(OperationsTest, WaitForChangeWithoutMirrorReturnsWhenTheDictIsReplacedWhileItWaits) {
  BridgeProcess bridge({}, {"--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(bridge.Start());
  const std::string metrics_address = MetricsAddress(bridge);
  ASSERT_FALSE(metrics_address.empty()) << bridge.process()->output();
  auto remote = Connect(bridge.address());
  ASSERT_OK(remote);
  RemoteDict& r = **remote;
  for (int i = 0; i < 5; ++i) ASSERT_OK(r.Set("old-" + std::to_string(i), Value::Int(i)));
  auto waited = std::async(std::launch::async, [&r] { return r.WaitForChange(5, 30s); });

  // Replaced only once its stream watches the old dict (the bridge counts it as a subscriber): a
  // stream that started on the new dict could not tell it from the old one.
  const size_t colon = metrics_address.rfind(':');
  httplib::Client http(metrics_address.substr(0, colon),
                       std::stoi(metrics_address.substr(colon + 1)));
  http.set_read_timeout(30, 0);
  const std::string subscribed = "shmdict_dict_subscribers{dict=\"" + name_ + "\"} 1\n";
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    auto response = http.Get("/metrics");
    ASSERT_TRUE(response) << httplib::to_string(response.error());
    if (response->body.find(subscribed) != std::string::npos) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << response->body;
    std::this_thread::sleep_for(20ms);  // polling the condition, with the deadline above
  }
  // Unlinking and creating again is not atomic: the bridge, stopped meanwhile, must not look in
  // between (it would find no dict, which is another test's case).
  ASSERT_EQ(kill(bridge.process()->pid(), SIGSTOP), 0);
  dict_.reset();  // its creator: unlinks it
  auto again = Dict::Open(CreateOptions(name_));
  ASSERT_EQ(kill(bridge.process()->pid(), SIGCONT), 0);
  ASSERT_OK(again);
  dict_.emplace(std::move(*again));
  ASSERT_OK(dict_->Set("new", Value::Int(1)));

  Result<uint64_t> changed = waited.get();
  ASSERT_OK(changed);
  EXPECT_LE(*changed, 1u);  // the new dict's revision when the bridge noticed
  EXPECT_EQ(r.last_commit_revision(), 0u);
  EXPECT_EQ(*r.Get("new"), std::optional<Value>(Value::Int(1)));
  auto old = r.Get("old-0");
  ASSERT_OK(old);
  EXPECT_FALSE(old->has_value());
}

TEST_F(OperationsTest, IdleExitWaitsForOpenStreamsThenExitsCleanly) {
  // The idle clock runs from the start: on a machine slow enough (a sanitizer, a loaded CI) the
  // bridge may idle out before this test's first call reaches it, which is correct behaviour,
  // not the case under test: then a new bridge is tried. Whether it idled out is told by its
  // clean exit, waited for: `running()` can still be true while the bridge is exiting.
  auto idled_out = [](BridgeProcess& bridge) {
    return bridge.process()->Wait(DeadlineIn(kWorkerTimeout)).Succeeded();
  };
  for (int attempt = 1;; ++attempt) {
    BridgeProcess bridge({}, {"--idle-exit", "2"});
    ASSERT_TRUE(bridge.Start());
    RemoteOptions options{.address = bridge.address(), .dict = name_, .mirror = false};
    options.open_timeout = 5s;
    auto remote = RemoteDict::Open(options);
    if (!remote.ok() && attempt < 5 && idled_out(bridge)) continue;
    ASSERT_OK(remote);
    auto before = (*remote)->Set("before", Value::Int(0));
    if (!before.ok() && attempt < 5 && idled_out(bridge)) continue;
    ASSERT_OK(before);
    auto watcher = (*remote)->Watch(0);
    ASSERT_OK(watcher);
    auto first = (*watcher)->Next(WatchLimits{}, 30s);  // the stream is up: the change came
    if ((!first.ok() || first->revision != 1u) && attempt < 5 && idled_out(bridge)) continue;
    ASSERT_OK(first);
    ASSERT_EQ(first->revision, 1u);
    // An open Watch stream is activity however long it is quiet: the bridge stays.
    std::string line;
    EXPECT_EQ(bridge.process()->ReadLine(&line, DeadlineIn(5s)), LineStatus::kTimeout)
        << "the bridge exited with a stream open: " << line;
    ASSERT_TRUE(bridge.running());
    ASSERT_OK((*remote)->Set("k", Value::Int(1)));
    watcher->reset();
    remote->reset();  // the client goes away
    ExitInfo exit = bridge.process()->Wait(DeadlineIn(60s));
    EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << ": " << bridge.process()->output();
    return;
  }
}

// `program args...` with its stderr into the stdout WorkerProcess reads (the bridge reports
// start-up errors on stderr); exec keeps the pid, so the program's parent is this test.
std::unique_ptr<WorkerProcess> StartMerged(const std::string& program,
                                           std::vector<std::string> args) {
  args.insert(args.begin(), {"-c", "exec \"$0\" \"$@\" 2>&1", program});
  return std::make_unique<WorkerProcess>("/bin/sh", args);
}

// systemd-socket-activate starts its program with a clean environment, as systemd does: pass on
// what the bridge needs from this test's (the presence registry's directory, and the sanitizers'
// options: without its suppressions a TSan bridge floods its stderr pipe and stalls).
std::vector<std::string> ActivatorArgs(const std::string& socket, std::vector<std::string> bridge) {
  std::vector<std::string> args = {"-l", socket};
  for (const char* name :
       {"SHMDICT_BRIDGE_REGISTRY_DIR", "TSAN_OPTIONS", "ASAN_OPTIONS", "UBSAN_OPTIONS"}) {
    if (std::getenv(name) != nullptr) args.insert(args.end(), {"-E", name});
  }
  args.push_back(BridgeProgram());
  args.insert(args.end(), bridge.begin(), bridge.end());
  return args;
}

// Reads lines until the process exits; returns them.
std::string AllOutput(WorkerProcess* process) {
  ExitInfo exit = process->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.Succeeded()) << process->description() << ": " << exit.ToString() << ": "
                                << process->output();
  return process->output();
}

bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

TEST_F(OperationsTest, TwoSimultaneousEnsureLeaveExactlyOneBridge) {
  TempDir dir;
  const std::string address = "unix:" + dir.path() + "/ensured.sock";
  const std::vector<std::string> args = {"--ensure", "--listen", address, "--log-level", "warn"};
  pid_t started = -1;
  {
    WorkerProcess first(BridgeProgram(), args);
    WorkerProcess second(BridgeProgram(), args);
    const std::string outputs = AllOutput(&first) + AllOutput(&second);
    std::smatch match;
    ASSERT_TRUE(std::regex_search(outputs, match, std::regex("started pid ([0-9]+)"))) << outputs;
    started = std::stoi(match[1]);
    EXPECT_EQ(std::regex_search(match.suffix().str(), std::regex("started pid")), false)
        << "two bridges started:\n"
        << outputs;
    EXPECT_NE(outputs.find("already serving " + address), std::string::npos) << outputs;
  }
  ASSERT_TRUE(Alive(started));
  {
    // The detached bridge serves, and a third --ensure leaves it alone.
    auto remote = Connect(address);
    ASSERT_OK(remote);
    ASSERT_OK((*remote)->Set("ensured", Value::Int(1)));
    WorkerProcess third(BridgeProgram(), args);
    EXPECT_NE(AllOutput(&third).find("already serving"), std::string::npos);
  }
  kill(started, SIGTERM);
  const Deadline deadline = DeadlineIn(60s);
  while (Alive(started) && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(Alive(started)) << "the ensured bridge did not stop on SIGTERM";
}

TEST_F(OperationsTest, ASocketActivatedBridgeStartedByItsFirstConnectionServesIt) {
  if (access("/usr/bin/systemd-socket-activate", X_OK) != 0) {
    GTEST_SKIP() << "systemd-socket-activate is not installed (package systemd)";
  }
  TempDir dir;
  const std::string socket = dir.path() + "/activated.sock";
  // systemd-socket-activate listens, and execs the bridge (same pid) on the first connection.
  auto started = StartMerged(
      "/usr/bin/systemd-socket-activate",
      ActivatorArgs(socket, {"--log-level", "warn", "--idle-exit", "3", "--exit-with-parent"}));
  WorkerProcess& activator = *started;
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  struct stat info {};
  while (stat(socket.c_str(), &info) != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(stat(socket.c_str(), &info), 0) << activator.output();
  {
    auto remote = Connect("unix:" + socket);
    ASSERT_OK(remote) << activator.output();
    ASSERT_OK((*remote)->Set("activated", Value::Int(7)));
    Value value;
    ASSERT_OK((*remote)->Get("activated", &value));
    EXPECT_EQ(value.AsInt(), 7);
    EXPECT_TRUE(activator.AwaitLine("listening on unix:" + socket, DeadlineIn(10s)));
  }
  // Idle, it exits (systemd would start it again on the next connection).
  ExitInfo exit = activator.Wait(DeadlineIn(60s));
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << ": " << activator.output();
  Value value;
  ASSERT_OK(dict_->Get("activated", &value));
}

TEST_F(OperationsTest, SocketActivationWithTlsIsRefusedWithAClearMessage) {
  if (access("/usr/bin/systemd-socket-activate", X_OK) != 0) {
    GTEST_SKIP() << "systemd-socket-activate is not installed (package systemd)";
  }
  TempDir dir;
  const std::string socket = dir.path() + "/activated.sock";
  auto started =
      StartMerged("/usr/bin/systemd-socket-activate",
                  ActivatorArgs(socket, {"--tls-cert", dir.path() + "/c.pem", "--tls-key",
                                         dir.path() + "/k.pem", "--exit-with-parent"}));
  WorkerProcess& activator = *started;
  const Deadline deadline = DeadlineIn(kWorkerTimeout);
  struct stat info {};
  while (stat(socket.c_str(), &info) != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  RemoteOptions options{.address = "unix:" + socket, .dict = name_, .mirror = false};
  options.open_timeout = 2s;
  EXPECT_FALSE(RemoteDict::Open(options).ok());
  ExitInfo exit = activator.Wait(DeadlineIn(60s));
  EXPECT_TRUE(exit.exited && exit.exit_code == 2) << exit.ToString();
  EXPECT_NE(activator.output().find("socket activation serves plaintext only"), std::string::npos)
      << activator.output();
}

TEST_F(OperationsTest, CreateAndUnlinkAreRefusedWithoutAllowCreateAndChangeNothing) {
  BridgeProcess bridge;
  ASSERT_TRUE(bridge.Start());
  const std::string fresh = name_ + "-fresh";
  RemoteOptions options{.address = bridge.address(), .dict = fresh, .mirror = false};
  EXPECT_EQ(RemoteCatalog(options).Create(options.dict, {}).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(LocalCatalog().Inspect(fresh).status().code(), StatusCode::kNotFound);
  options.dict = name_;
  EXPECT_EQ(RemoteCatalog(options).Unlink(options.dict).code(), StatusCode::kPermissionDenied);
  EXPECT_OK(LocalCatalog().Inspect(name_));
  auto remote = Connect(bridge.address());  // still serving
  ASSERT_OK(remote);
  EXPECT_OK((*remote)->Set("k", Value::Int(1)));

  // --read-only wins over --allow-create: creating is a write.
  BridgeProcess read_only({}, {"--allow-create", "--read-only"});
  ASSERT_TRUE(read_only.Start());
  RemoteOptions refused{.address = read_only.address(), .dict = fresh, .mirror = false};
  EXPECT_EQ(RemoteCatalog(refused).Create(refused.dict, {}).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(LocalCatalog().Inspect(fresh).status().code(), StatusCode::kNotFound);
}

TEST_F(OperationsTest, WithAllowCreateClientsCreateAndUnlinkDictsWithTheBridgesMode) {
  BridgeProcess bridge({}, {"--allow-create", "--create-mode", "0640"});
  ASSERT_TRUE(bridge.Start());
  const std::string fresh = name_ + "-fresh";
  RemoteOptions options{.address = bridge.address(), .dict = fresh, .mirror = false};
  auto created = RemoteCatalog(options).Create(options.dict, {});
  ASSERT_OK(created);
  EXPECT_TRUE(*created);
  struct stat info {};
  ASSERT_EQ(stat(("/dev/shm/shmdict." + fresh).c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0640u);
  auto again = RemoteCatalog(options).Create(options.dict, {});
  ASSERT_OK(again);
  EXPECT_FALSE(*again) << "an existing dict is found, not created";
  EXPECT_EQ(RemoteCatalog(options).Create(options.dict, {.exclusive = true}).status().code(),
            StatusCode::kAlreadyExists);
  {
    auto remote = Connect(bridge.address());
    ASSERT_OK(remote);
    RemoteOptions fresh_options = options;
    fresh_options.open_timeout = 30s;
    auto in_fresh = RemoteDict::Open(fresh_options);
    ASSERT_OK(in_fresh);
    ASSERT_OK((*in_fresh)->Set("k", Value::Int(5)));
  }
  Result<DictStatus> status = LocalCatalog().Inspect(fresh);
  ASSERT_OK(status);
  EXPECT_EQ(status->entries, 1u);
  ASSERT_OK(RemoteCatalog(options).Unlink(options.dict));
  EXPECT_EQ(LocalCatalog().Inspect(fresh).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(RemoteCatalog(options).Unlink(options.dict).code(), StatusCode::kNotFound);
  // A name the core refuses is refused before anything is made.
  options.dict = "../escape";
  EXPECT_EQ(RemoteCatalog(options).Create(options.dict, {}).status().code(),
            StatusCode::kInvalidArgument);

  if (std::string_view(SHMDICT_CLI_PATH).empty()) return;  // sanitizer builds have no CLI
  CliRun cli = RunCli({"--remote", bridge.address(), "create", fresh});
  EXPECT_EQ(cli.code, 0) << cli.err;
  EXPECT_EQ(cli.out, "created dict '" + fresh + "'\n");
  cli = RunCli({"--remote", bridge.address(), "create", fresh, "--mode", "0666"});
  EXPECT_EQ(cli.code, 2);
  EXPECT_NE(cli.err.find("--create-mode"), std::string::npos) << cli.err;
  cli = RunCli({"--remote", bridge.address(), "unlink", fresh});
  EXPECT_EQ(cli.code, 0) << cli.err;
  EXPECT_EQ(LocalCatalog().Inspect(fresh).status().code(), StatusCode::kNotFound);
}

TEST_F(OperationsTest, EnsureRefusesPortZero) {
  auto ensure = StartMerged(BridgeProgram(), {"--ensure", "--listen", "127.0.0.1:0"});
  ExitInfo exit = ensure->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(exit.exited && exit.exit_code == 2) << exit.ToString();
  EXPECT_NE(ensure->output().find("fixed --listen address"), std::string::npos) << ensure->output();
}

}  // namespace
}  // namespace shmdict::testing
