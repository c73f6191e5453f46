// Metrics: what the bridge counts for --metrics-listen (Prometheus text) and --idle-exit.
//
// Process-wide: calls by method and status code, calls and Watch streams in flight, bytes of
// responses sent, and the time of the last call (idle exit). Per dict (DictRegistry::Stats):
// revision, subscribers, writes, changes sent, the slowest subscriber's lag.
//
// Why counters are fixed arrays of atomics: a call records itself on the hot path of every unary
// call (a relaxed increment, no lock, no allocation); rendering, rare, reads them all.
//
// Thread-safety: every method may be called from any thread. Lifetime: outlives the service and
// every stream that records into it.
#ifndef SHMDICT_BRIDGE_METRICS_H_
#define SHMDICT_BRIDGE_METRICS_H_

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shmdict::bridge {

// One dict's figures at the time of a scrape.
struct DictStats {
  std::string name;
  uint64_t revision = 0;      // published revision (0 if the dict could not be read)
  size_t subscribers = 0;     // Watch streams
  uint64_t slowest_lag = 0;   // revision minus the lowest revision a subscriber was sent
  uint64_t writes = 0;        // successful write calls through this bridge
  uint64_t changes_sent = 0;  // changes sent to subscribers (a change sent to 3 counts 3)
  // The pump's shared window (watch_pump.h): streams that joined it (at their start, or after
  // catching up on their own), streams that fell behind it (or were in it when the pump restarted
  // or stopped) and read on their own again, and the times the log lapped the pump.
  uint64_t watch_joins = 0;
  uint64_t watch_leaves = 0;
  uint64_t pump_restarts = 0;
  // A replica dict (docs/REPLICA.md): how fresh it is. Rendered only when `replica`.
  bool replica = false;
  uint64_t upstream_revision = 0;
  uint64_t upstream_connected = 0;        // 1 while its shmdict-replica hears the upstream
  uint64_t last_upstream_contact_ms = 0;  // unix milliseconds; 0: never
};

class Metrics {
 public:
  // The methods of shmdict.v1.Dict, in the order counters are kept (and rendered).
  static constexpr std::array<std::string_view, 16> kMethods = {
      "Get",       "Set",    "Delete",        "Pop",       "PopItem", "SetDefault",
      "Clear",     "Batch",  "CompareAndSet", "Increment", "List",    "Status",
      "ListDicts", "Create", "Unlink",        "Watch"};

  Metrics();

  // A call in flight from construction to Finish (or destruction, recorded as UNKNOWN: a call
  // that ends by an exception). Keeps the bridge from idling out while it runs.
  class Call {
   public:
    Call(Metrics* metrics, std::string_view method);
    ~Call();
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    // Records the outcome and the bytes of the responses sent; returns `status`.
    grpc::Status Finish(grpc::Status status, size_t bytes_sent);

   private:
    Metrics* const metrics_;
    const size_t method_;
    bool finished_ = false;
  };

  // Bytes of a streamed response (List, Watch), as it is sent.
  void AddBytesSent(size_t bytes) { bytes_sent_.fetch_add(bytes, std::memory_order_relaxed); }

  // Activity without a call (a connection accepted): restarts the idle clock.
  void Touch() { last_activity_ns_.store(NowNs(), std::memory_order_relaxed); }

  // How long no call or stream has been in flight; zero while one is.
  std::chrono::steady_clock::duration IdleFor() const;

  // The Prometheus text exposition (format 0.0.4) of every counter and of `dicts`.
  std::string Render(const std::vector<DictStats>& dicts) const;

 private:
  static constexpr size_t kCodes = 17;  // grpc::StatusCode OK .. UNAUTHENTICATED
  void Started();
  void Finished(size_t method, grpc::StatusCode code, size_t bytes_sent);
  static int64_t NowNs();

  std::array<std::array<std::atomic<uint64_t>, kCodes>, kMethods.size()> calls_{};
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> last_activity_ns_;
  const int64_t started_unix_seconds_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_METRICS_H_
