#include "metrics.h"

#include <algorithm>

#include <sstream>

namespace shmdict::bridge {

namespace {

constexpr std::array<const char*, 17> kCodeNames = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

// A label value in the exposition format: backslash, double quote and newline escaped.
std::string LabelValue(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

size_t MethodIndex(std::string_view method) {
  for (size_t i = 0; i < Metrics::kMethods.size(); ++i) {
    if (Metrics::kMethods[i] == method) return i;
  }
  return Metrics::kMethods.size() - 1;  // unreachable for the service's own names
}

}  // namespace

Metrics::Metrics()
    : last_activity_ns_(NowNs()),
      started_unix_seconds_(std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()) {}

int64_t Metrics::NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Metrics::Call::Call(Metrics* metrics, std::string_view method)
    : metrics_(metrics), method_(MethodIndex(method)) {
  if (metrics_ != nullptr) metrics_->Started();
}

Metrics::Call::~Call() {
  if (!finished_ && metrics_ != nullptr) metrics_->Finished(method_, grpc::StatusCode::UNKNOWN, 0);
}

grpc::Status Metrics::Call::Finish(grpc::Status status, size_t bytes_sent) {
  if (!finished_ && metrics_ != nullptr)
    metrics_->Finished(method_, status.error_code(), bytes_sent);
  finished_ = true;
  return status;
}

void Metrics::Started() {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  last_activity_ns_.store(NowNs(), std::memory_order_relaxed);
}

void Metrics::Finished(size_t method, grpc::StatusCode code, size_t bytes_sent) {
  const size_t index = static_cast<size_t>(code) < kCodes ? static_cast<size_t>(code) : 2;
  calls_[method][index].fetch_add(1, std::memory_order_relaxed);
  if (bytes_sent != 0) bytes_sent_.fetch_add(bytes_sent, std::memory_order_relaxed);
  // Activity is stamped before the call leaves the in-flight count, so that IdleFor never sees
  // "nothing in flight" with the stamp of a call long before.
  last_activity_ns_.store(NowNs(), std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_release);
}

std::chrono::steady_clock::duration Metrics::IdleFor() const {
  if (in_flight_.load(std::memory_order_acquire) > 0) return {};
  const int64_t idle = NowNs() - last_activity_ns_.load(std::memory_order_relaxed);
  return std::chrono::nanoseconds(idle > 0 ? idle : 0);
}

std::string Metrics::Render(const std::vector<DictStats>& dicts) const {
  std::ostringstream out;
  out << "# HELP shmdict_bridge_calls_total Calls finished, by method and gRPC status code.\n"
         "# TYPE shmdict_bridge_calls_total counter\n";
  for (size_t m = 0; m < kMethods.size(); ++m) {
    for (size_t c = 0; c < kCodes; ++c) {
      const uint64_t count = calls_[m][c].load(std::memory_order_relaxed);
      if (count == 0 && c != 0) continue;  // OK is always shown, other codes once they occur
      out << "shmdict_bridge_calls_total{method=\"" << kMethods[m] << "\",code=\"" << kCodeNames[c]
          << "\"} " << count << '\n';
    }
  }
  out << "# HELP shmdict_bridge_calls_in_flight Calls and Watch streams in progress.\n"
         "# TYPE shmdict_bridge_calls_in_flight gauge\n"
         "shmdict_bridge_calls_in_flight "
      << in_flight_.load(std::memory_order_relaxed) << '\n';
  out << "# HELP shmdict_bridge_sent_bytes_total Bytes of response messages sent (protobuf "
         "encoding, before HTTP/2 framing and TLS).\n"
         "# TYPE shmdict_bridge_sent_bytes_total counter\n"
         "shmdict_bridge_sent_bytes_total "
      << bytes_sent_.load(std::memory_order_relaxed) << '\n';
  out << "# HELP shmdict_bridge_start_time_seconds When this bridge started (Unix time).\n"
         "# TYPE shmdict_bridge_start_time_seconds gauge\n"
         "shmdict_bridge_start_time_seconds "
      << started_unix_seconds_ << '\n';

  struct Family {
    const char* name;
    const char* type;
    const char* help;
    uint64_t DictStats::*field;
  };
  static const Family kFamilies[] = {
      {"shmdict_dict_revision", "gauge", "The dict's published revision.", &DictStats::revision},
      {"shmdict_dict_writes_total", "counter", "Successful write calls through this bridge.",
       &DictStats::writes},
      {"shmdict_dict_changes_sent_total", "counter",
       "Changes sent to Watch subscribers (one change sent to N subscribers counts N).",
       &DictStats::changes_sent},
      {"shmdict_dict_watch_window_joins_total", "counter",
       "Watch streams that joined the dict's shared window (at their start, or after catching up "
       "on their own).",
       &DictStats::watch_joins},
      {"shmdict_dict_watch_window_leaves_total", "counter",
       "Watch streams that fell behind the shared window and read the log on their own again.",
       &DictStats::watch_leaves},
      {"shmdict_dict_watch_pump_restarts_total", "counter",
       "Times the log lapped the dict's watch pump (its window restarted at the dict's revision).",
       &DictStats::pump_restarts},
      {"shmdict_dict_slowest_subscriber_lag", "gauge",
       "Revisions the slowest Watch subscriber of this bridge is behind (0 without subscribers).",
       &DictStats::slowest_lag},
  };
  for (const Family& family : kFamilies) {
    out << "# HELP " << family.name << ' ' << family.help << "\n# TYPE " << family.name << ' '
        << family.type << '\n';
    for (const DictStats& dict : dicts) {
      out << family.name << "{dict=\"" << LabelValue(dict.name) << "\"} " << dict.*family.field
          << '\n';
    }
  }
  static const Family kReplicaFamilies[] = {
      {"shmdict_dict_upstream_revision", "gauge",
       "A replica dict's upstream revision applied (docs/REPLICA.md).",
       &DictStats::upstream_revision},
      {"shmdict_dict_upstream_connected", "gauge",
       "1 while a replica dict's shmdict-replica hears its upstream, else 0.",
       &DictStats::upstream_connected},
      {"shmdict_dict_last_upstream_contact_ms", "gauge",
       "When a replica dict last heard its upstream (Unix time, milliseconds; 0: never).",
       &DictStats::last_upstream_contact_ms},
  };
  const bool any_replica =
      std::any_of(dicts.begin(), dicts.end(), [](const DictStats& dict) { return dict.replica; });
  for (const Family& family : kReplicaFamilies) {
    if (!any_replica) break;
    out << "# HELP " << family.name << ' ' << family.help << "\n# TYPE " << family.name << ' '
        << family.type << '\n';
    for (const DictStats& dict : dicts) {
      if (!dict.replica) continue;
      out << family.name << "{dict=\"" << LabelValue(dict.name) << "\"} " << dict.*family.field
          << '\n';
    }
  }
  out << "# HELP shmdict_dict_subscribers Watch streams of the dict on this bridge.\n"
         "# TYPE shmdict_dict_subscribers gauge\n";
  for (const DictStats& dict : dicts) {
    out << "shmdict_dict_subscribers{dict=\"" << LabelValue(dict.name) << "\"} " << dict.subscribers
        << '\n';
  }
  return out.str();
}

}  // namespace shmdict::bridge
