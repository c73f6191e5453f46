// Python's multiprocessing.Manager().dict(), driven through bench/peers/manager_peer.py: the
// harness starts the script with /usr/bin/python3 (--python), sends one JSON command per line and
// reads one JSON result per line, so this peer is started, warmed, measured and torn down in the
// same order, with the same keys, values and access order, as every other.
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "systems.h"

namespace peers {
namespace {

using nlohmann::json;

constexpr int64_t kCommandTimeoutNs = 300'000'000'000;
constexpr int64_t kBulkTimeoutNs = 900'000'000'000;

RunResult ParseRun(const json& j) {
  RunResult r;
  r.ops = j.at("ops").get<uint64_t>();
  r.elapsed_ns = j.at("elapsed_ns").get<int64_t>();
  r.mismatches = j.at("mismatches").get<uint64_t>();
  r.latency = Histogram::Parse(j.at("hist").get<std::string>());
  return r;
}

const char* KindName(OpKind kind) {
  switch (kind) {
    case OpKind::kRead:
      return "read";
    case OpKind::kWrite:
      return "write";
    case OpKind::kMix:
      return "mix";
  }
  return "?";
}

class ManagerPeer final : public Peer {
 public:
  explicit ManagerPeer(const Config& config)
      : python_(config.python), script_(config.manager_script) {}
  ~ManagerPeer() override {
    if (process_ == nullptr) return;
    try {
      Call({{"cmd", "quit"}}, 30'000'000'000);
      process_->Wait(30'000'000'000);
    } catch (const BenchError&) {
      // Killed below with its whole process group (manager server, children).
    }
    process_.reset();
    RemoveShmEntry(NewName("python"));
  }

  std::string name() const override { return "python_manager"; }
  std::string description() const override {
    return CommandOutput("'" + python_ + "' --version 2>&1") +
           ". multiprocessing.Manager().dict() driven by bench/peers/manager_peer.py under " +
           python_ +
           ". Read: d.get(key); write: d[key] = value; each is a DictProxy call: the request is "
           "pickled and sent over the manager's Unix socket to its server process, which "
           "answers. Timed in Python with time.monotonic_ns(). Bulk import: d.update(dict of "
           "'batch' items). Attach: a fresh python3 process unpickles the dict's proxy (connect + "
           "incref) and does the first get. The manager's server process is started with the "
           "'spawn' context, so its memory is its own, not pages inherited from the driver.";
  }
  std::string unavailable() const override {
    if (access(python_.c_str(), X_OK) != 0) return "python not found at " + python_;
    if (access(script_.c_str(), R_OK) != 0) return "manager_peer.py not found at " + script_;
    return "";
  }

  void Start(const Workload& w, const Config& config) override {
    EnsureProcess();
    json probes = json::array();
    for (uint64_t i : {uint64_t{0}, w.n / 2, w.n - 1}) {
      probes.push_back({i, std::string(w.value(static_cast<uint32_t>(i), 0))});
    }
    Call({{"cmd", "start"},
          {"keys", w.n},
          {"value_bytes", w.value_bytes},
          {"order_file", config.order_file},
          {"batch", config.batch},
          {"time_box_ns", config.time_box_ns},
          {"probes", probes}},
         kCommandTimeoutNs);
  }

  RunResult Run(const RunSpec& spec) override {
    return ParseRun(Call({{"cmd", "run"},
                          {"kind", KindName(spec.kind)},
                          {"max_ops", spec.max_ops},
                          {"time_box_ns", spec.time_box_ns}},
                         kCommandTimeoutNs));
  }

  Memory StoreMemory() override {
    json j = Call({{"cmd", "memory"}}, kCommandTimeoutNs);
    Memory m;
    m.kib = j.at("kib").get<double>();
    m.empty_kib = j.at("empty_kib").get<double>();
    m.how = "RSS of the manager's server process (smaps_rollup)";
    return m;
  }

  std::string MultiUnavailable() const override { return ""; }
  MultiResult RunMulti(int readers, int64_t time_box_ns) override {
    json j = Call({{"cmd", "multi"}, {"readers", readers}, {"time_box_ns", time_box_ns}},
                  kCommandTimeoutNs);
    return {ParseRun(j.at("reads")), ParseRun(j.at("writes"))};
  }

  std::string WatchUnavailable(WatchMode mode) const override {
    return mode == WatchMode::kNotify
               ? "multiprocessing.Manager has no change notification"
               : "multiprocessing.Manager has no change notification; a polling reader is not "
                 "measured";
  }
  std::string WatchDescription(WatchMode) const override { return ""; }
  WatchResult RunWatch(WatchMode, int, int64_t) override {
    Fail("python_manager has no change-propagation measurement");
  }

  void Stop() override {
    if (process_ != nullptr && process_->running()) Call({{"cmd", "stop"}}, kCommandTimeoutNs);
  }

  BulkResult BulkImport(const Workload& big, const Config& config) override {
    EnsureProcess();
    const uint64_t probe = big.n / 2;
    json j = Call({{"cmd", "bulk"},
                   {"keys", big.n},
                   {"value_bytes", big.value_bytes},
                   {"batch", config.batch},
                   {"probe", probe},
                   {"probe_value", std::string(big.value(static_cast<uint32_t>(probe), 0))},
                   {"settle_ns", config.settle_ns}},
                  kBulkTimeoutNs);
    BulkResult r;
    r.import_ns = j.at("import_ns").get<int64_t>();
    r.keys = j.at("keys").get<uint64_t>();
    r.memory.kib = j.at("kib").get<double>();
    r.memory.empty_kib = j.at("empty_kib").get<double>();
    r.memory.how = "RSS of the manager's server process (smaps_rollup)";
    auto attach = [](const json& a) {
      AttachResult out;
      out.attach_ns = a.at("attach_ns").get<double>();
      out.pss_kib = a.at("pss_kib").get<double>();
      out.rss_kib = a.at("rss_kib").get<double>();
      return out;
    };
    r.attach_now = attach(j.at("attach_now"));
    r.attach_settled = attach(j.at("attach_settled"));
    return r;
  }

 private:
  void EnsureProcess() {
    if (process_ != nullptr && process_->running()) return;
    Process::Spec spec;
    spec.path = python_;
    spec.argv = {python_, script_, "--serve"};
    spec.pipe_stdin = true;
    spec.pipe_stdout = true;
    // The manager's socket directory (pymp-*) goes where the final sweep finds it.
    const std::string tmp = NewName("python");
    RemoveShmEntry(tmp);
    if (mkdir(("/dev/shm/" + tmp).c_str(), 0700) != 0) Fail("mkdir /dev/shm/" + tmp + " failed");
    spec.env = {"TMPDIR=/dev/shm/" + tmp, "PYTHONDONTWRITEBYTECODE=1"};
    process_ = std::make_unique<Process>(spec);
  }

  json Call(const json& command, int64_t timeout_ns) {
    if (process_ == nullptr || !process_->running()) Fail("manager_peer.py is not running");
    process_->WriteLine(command.dump());
    std::optional<std::string> line = process_->ReadLine(timeout_ns);
    if (!line) {
      Fail("manager_peer.py ended (" + process_->Wait(5'000'000'000) + ") during '" +
           command.at("cmd").get<std::string>() + "'");
    }
    json reply;
    try {
      reply = json::parse(*line);
    } catch (const json::exception& e) {
      Fail("manager_peer.py printed '" + *line + "': " + e.what());
    }
    if (!reply.value("ok", false)) {
      Fail("manager_peer.py '" + command.at("cmd").get<std::string>() +
           "': " + reply.value("error", std::string("no error text")));
    }
    return reply;
  }

  std::string python_;
  std::string script_;
  std::unique_ptr<Process> process_;
};

}  // namespace

std::unique_ptr<Peer> MakeManagerPeer(const Config& config) {
  return std::make_unique<ManagerPeer>(config);
}

}  // namespace peers
