#include "etcd_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>

#include "redis_launcher.h"  // FreeLoopbackPort

namespace shmdict::internal {
namespace {

std::string Url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

std::string Describe(const grpc::Status& status) {
  return std::to_string(status.error_code()) + " " + status.error_message();
}

// Distinct tokens keep two clusters started by one test run from ever joining each other, even
// if one of them reused the other's ports.
std::string ClusterToken(int attempt) {
  static std::atomic<int> counter{0};
  return "shmdict-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(attempt);
}

}  // namespace

std::unique_ptr<EtcdCluster> EtcdCluster::Start(int members, const EtcdClusterOptions& options,
                                                std::string* error) {
  if (members < 1) {
    *error = "an etcd cluster needs at least one member, not " + std::to_string(members);
    return nullptr;
  }
  std::unique_ptr<EtcdCluster> cluster(new EtcdCluster());
  cluster->options_ = options;
  if (cluster->options_.program.empty()) cluster->options_.program = FindProgram("etcd");
  if (cluster->options_.etcdctl.empty()) cluster->options_.etcdctl = FindProgram("etcdctl");
  if (cluster->options_.program.empty()) {
    *error = "etcd not found in PATH (package etcd-server)";
    return nullptr;
  }
  std::string dir_template = "/tmp/shmdict-etcd-XXXXXX";
  if (mkdtemp(dir_template.data()) == nullptr) {
    *error = "mkdtemp " + dir_template + ": " + std::strerror(errno);
    return nullptr;
  }
  cluster->dir_ = dir_template;
  cluster->members_.resize(static_cast<size_t>(members));

  std::string last_error = "no attempt";
  for (int attempt = 0; attempt < options.attempts; ++attempt) {
    // Two ports per member, all distinct (a port closed a moment ago can come back).
    std::set<int> taken;
    for (Member& member : cluster->members_) {
      for (int* port : {&member.client_port, &member.peer_port}) {
        do {
          *port = FreeLoopbackPort(error);
          if (*port == 0) return nullptr;
        } while (!taken.insert(*port).second);
      }
    }
    std::string initial_cluster;
    for (int i = 0; i < members; ++i) {
      Member& member = cluster->members_[static_cast<size_t>(i)];
      member.name = "m" + std::to_string(i);
      if (!initial_cluster.empty()) initial_cluster += ",";
      initial_cluster += member.name + "=" + Url(member.peer_port);
    }
    const std::string token = ClusterToken(attempt);
    for (int i = 0; i < members; ++i) {
      Member& member = cluster->members_[static_cast<size_t>(i)];
      const std::string data = cluster->dir_ + "/" + member.name;
      std::error_code ignored;
      std::filesystem::remove_all(data, ignored);  // a failed attempt's member
      member.argv = {"etcd", "--name", member.name, "--data-dir", data, "--listen-client-urls",
                     Url(member.client_port), "--advertise-client-urls", Url(member.client_port),
                     "--listen-peer-urls", Url(member.peer_port), "--initial-advertise-peer-urls",
                     Url(member.peer_port), "--initial-cluster", initial_cluster,
                     "--initial-cluster-state", "new", "--initial-cluster-token", token, "--logger",
                     "zap",
                     // A file, not a pipe: nobody drains a pipe between the test's calls, and a
                     // member whose peer is down keeps logging warnings.
                     "--log-outputs", data + ".log", "--log-level", "warn",
                     "--experimental-watch-progress-notify-interval", "500ms"};
      if (!options.fsync) member.argv.push_back("--unsafe-no-fsync");
      member.argv.insert(member.argv.end(), options.extra_args.begin(), options.extra_args.end());
      if (!cluster->Spawn(i, error)) return nullptr;
    }
    std::vector<int> all(static_cast<size_t>(members));
    for (int i = 0; i < members; ++i) all[static_cast<size_t>(i)] = i;
    if (cluster->WaitReady(all, DeadlineIn(options.ready_timeout), &last_error)) return cluster;
    bool exited = false;
    for (int i = 0; i < members; ++i) {
      exited = exited || !cluster->running(i);
      cluster->Kill(i);
    }
    // Only a member that exited (a port lost to another program) is worth another attempt.
    if (!exited) break;
  }
  *error = "etcd cluster of " + std::to_string(members) + " did not start: " + last_error;
  return nullptr;
}

EtcdCluster::~EtcdCluster() {
  for (int i = 0; i < member_count(); ++i) Kill(i);
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

bool EtcdCluster::running(int i) const {
  const Member& member = members_.at(static_cast<size_t>(i));
  return member.process != nullptr && !member.process->reaped();
}

std::vector<std::string> EtcdCluster::client_endpoints() const {
  std::vector<std::string> endpoints;
  for (const Member& member : members_) {
    endpoints.push_back("127.0.0.1:" + std::to_string(member.client_port));
  }
  return endpoints;
}

std::string EtcdCluster::LogTail(int i, int lines) const {
  std::ifstream in(dir_ + "/" + members_.at(static_cast<size_t>(i)).name + ".log");
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (tail.size() > static_cast<size_t>(lines)) tail.pop_front();
  }
  std::string text;
  for (const std::string& l : tail) text += l + "\n";
  return text;
}

void EtcdCluster::Kill(int i) {
  Member& member = members_.at(static_cast<size_t>(i));
  if (member.process != nullptr) member.process->Kill();
}

bool EtcdCluster::Restart(int i, std::string* error) {
  if (running(i)) {
    *error = "etcd member m" + std::to_string(i) + " is running: Kill it first";
    return false;
  }
  return Spawn(i, error) && WaitReady({i}, DeadlineIn(options_.ready_timeout), error);
}

std::shared_ptr<grpc::Channel> EtcdCluster::Channel(int i) const {
  return members_.at(static_cast<size_t>(i)).channel;
}

bool EtcdCluster::Spawn(int i, std::string* error) {
  Member& member = members_.at(static_cast<size_t>(i));
  SpawnOptions spawn;
  spawn.path = options_.program;
  spawn.argv = member.argv;
  spawn.quiet = true;  // it logs to its file
  spawn.kill_with_parent = true;
  member.process = Subprocess::Start(spawn, error);
  if (member.process == nullptr) return false;
  // The channel is made by WaitReady once the member listens (see ConnectWhenListening).
  member.channel = nullptr;
  return true;
}

bool EtcdCluster::ConnectWhenListening(int i) {
  Member& member = members_.at(static_cast<size_t>(i));
  if (member.channel != nullptr) return true;
  // A channel made before the member listens sees its first connection refused, and with gRPC
  // 1.51 its calls then kept failing with UNAVAILABLE for ~10 s, with the backoff arguments below
  // as with none (measured here; etcd listened after 0.2 s): connect by hand first, and make the
  // channel once the port accepts.
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(member.client_port));
  const bool listening = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  close(fd);
  if (!listening) return false;
  // Short backoffs: a member restarted by a test is back within a second. (Not
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the time one connection attempt
  // may last, and a loaded machine's handshake may take longer.)
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  member.channel = grpc::CreateCustomChannel("ipv4:127.0.0.1:" + std::to_string(member.client_port),
                                             grpc::InsecureChannelCredentials(), args);
  return true;
}

bool EtcdCluster::WaitReady(const std::vector<int>& which, Deadline deadline, std::string* error) {
  std::vector<Subprocess*> processes;
  for (const Member& member : members_) {
    if (member.process != nullptr && !member.process->reaped()) {
      processes.push_back(member.process.get());
    }
  }
  // Each poll gets a short deadline: a member accepts connections before it serves them (its
  // listener opens at startup), and a call sent then would wait out a long deadline.
  constexpr Clock::duration kPoll = std::chrono::milliseconds(500);
  std::string why = "not ready";
  while (true) {
    bool ready = true;
    for (const int i : which) {
      if (!running(i)) {
        *error = "etcd member m" + std::to_string(i) + " " +
                 members_[static_cast<size_t>(i)].process->Wait(Deadline{}).ToString() +
                 "; its log ends:\n" + LogTail(i);
        return false;
      }
      if (!ConnectWhenListening(i)) {
        why = "m" + std::to_string(i) + " does not listen on its client port yet";
        ready = false;
        break;
      }
      etcdserverpb::StatusResponse status;
      grpc::Status s = Status(i, &status, kPoll);
      if (!s.ok() || status.leader() == 0) {
        why = "m" + std::to_string(i) +
              (s.ok() ? std::string(" knows no leader") : " Status: " + Describe(s));
        ready = false;
        break;
      }
      // Linearizable: answered only once this member has caught up with the leader.
      etcdserverpb::RangeRequest range;
      range.set_key("shmdict-etcd-launcher-ready");
      etcdserverpb::RangeResponse response;
      s = Range(range, &response, i, kPoll);
      if (!s.ok()) {
        why = "m" + std::to_string(i) + " Range: " + Describe(s);
        ready = false;
        break;
      }
    }
    if (ready) return true;
    if (Clock::now() >= deadline) {
      *error = why + " after the ready timeout; m" + std::to_string(which.front()) +
               "'s log ends:\n" + LogTail(which.front());
      return false;
    }
    // Waits for the members to come up, or returns at once when one of them exits.
    Pump(processes, std::min(deadline, DeadlineIn(std::chrono::milliseconds(50))));
  }
}

bool EtcdCluster::WaitUntilReady(std::string* error) {
  std::vector<int> which;
  for (int i = 0; i < member_count(); ++i) {
    if (running(i)) which.push_back(i);
  }
  if (which.empty()) {
    *error = "no etcd member runs";
    return false;
  }
  return WaitReady(which, DeadlineIn(options_.ready_timeout), error);
}

int EtcdCluster::Target(int member) const {
  if (member >= 0) return Channel(member) != nullptr ? member : -1;
  for (int i = 0; i < member_count(); ++i) {
    if (running(i) && Channel(i) != nullptr) return i;
  }
  return -1;
}

std::unique_ptr<grpc::ClientContext> EtcdCluster::Context(Clock::duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  return context;
}

namespace {
const grpc::Status kNoMember(grpc::StatusCode::UNAVAILABLE,
                             "no etcd member runs (or the one asked for never listened)");
}  // namespace

grpc::Status EtcdCluster::Range(const etcdserverpb::RangeRequest& request,
                                etcdserverpb::RangeResponse* response, int member) const {
  return Range(request, response, member, options_.request_timeout);
}

grpc::Status EtcdCluster::Range(const etcdserverpb::RangeRequest& request,
                                etcdserverpb::RangeResponse* response, int member,
                                Clock::duration timeout) const {
  const int i = Target(member);
  if (i < 0) return kNoMember;
  return etcdserverpb::KV::NewStub(Channel(i))->Range(Context(timeout).get(), request, response);
}

grpc::Status EtcdCluster::Put(const etcdserverpb::PutRequest& request,
                              etcdserverpb::PutResponse* response, int member) const {
  const int i = Target(member);
  if (i < 0) return kNoMember;
  return etcdserverpb::KV::NewStub(Channel(i))
      ->Put(Context(options_.request_timeout).get(), request, response);
}

grpc::Status EtcdCluster::DeleteRange(const etcdserverpb::DeleteRangeRequest& request,
                                      etcdserverpb::DeleteRangeResponse* response,
                                      int member) const {
  const int i = Target(member);
  if (i < 0) return kNoMember;
  return etcdserverpb::KV::NewStub(Channel(i))
      ->DeleteRange(Context(options_.request_timeout).get(), request, response);
}

grpc::Status EtcdCluster::Txn(const etcdserverpb::TxnRequest& request,
                              etcdserverpb::TxnResponse* response, int member) const {
  const int i = Target(member);
  if (i < 0) return kNoMember;
  return etcdserverpb::KV::NewStub(Channel(i))
      ->Txn(Context(options_.request_timeout).get(), request, response);
}

grpc::Status EtcdCluster::Compact(const etcdserverpb::CompactionRequest& request,
                                  etcdserverpb::CompactionResponse* response, int member) const {
  const int i = Target(member);
  if (i < 0) return kNoMember;
  return etcdserverpb::KV::NewStub(Channel(i))
      ->Compact(Context(options_.request_timeout).get(), request, response);
}

grpc::Status EtcdCluster::Status(int member, etcdserverpb::StatusResponse* response) const {
  return Status(member, response, options_.request_timeout);
}

grpc::Status EtcdCluster::Status(int member, etcdserverpb::StatusResponse* response,
                                 Clock::duration timeout) const {
  if (Target(member) < 0) return kNoMember;
  return etcdserverpb::Maintenance::NewStub(Channel(member))
      ->Status(Context(timeout).get(), etcdserverpb::StatusRequest(), response);
}

grpc::Status EtcdCluster::Put(std::string_view key, std::string_view value, int64_t* revision,
                              int member) const {
  etcdserverpb::PutRequest request;
  request.set_key(std::string(key));
  request.set_value(std::string(value));
  etcdserverpb::PutResponse response;
  grpc::Status s = Put(request, &response, member);
  if (s.ok() && revision != nullptr) *revision = response.header().revision();
  return s;
}

grpc::Status EtcdCluster::Get(std::string_view key, std::string* value, bool* found,
                              int member) const {
  etcdserverpb::RangeRequest request;
  request.set_key(std::string(key));
  etcdserverpb::RangeResponse response;
  grpc::Status s = Range(request, &response, member);
  if (!s.ok()) return s;
  *found = response.kvs_size() > 0;
  if (*found) *value = response.kvs(0).value();
  return s;
}

grpc::Status EtcdCluster::Compact(int64_t revision, int member) const {
  etcdserverpb::CompactionRequest request;
  request.set_revision(revision);
  request.set_physical(true);
  etcdserverpb::CompactionResponse response;
  return Compact(request, &response, member);
}

ExitInfo EtcdCluster::Etcdctl(const std::vector<std::string>& args, std::string* output) const {
  std::string endpoints;
  for (int i = 0; i < member_count(); ++i) {
    if (!running(i)) continue;
    if (!endpoints.empty()) endpoints += ",";
    endpoints += "127.0.0.1:" + std::to_string(members_[static_cast<size_t>(i)].client_port);
  }
  if (options_.etcdctl.empty()) {
    *output = "etcdctl not found in PATH (package etcd-client)";
    return ExitInfo{};
  }
  SpawnOptions spawn;
  spawn.path = options_.etcdctl;
  spawn.argv = {"etcdctl", "--endpoints=" + endpoints};
  spawn.argv.insert(spawn.argv.end(), args.begin(), args.end());
  spawn.env = {"ETCDCTL_API=3"};
  spawn.pipe_stdout = true;
  std::string error;
  std::unique_ptr<Subprocess> process = Subprocess::Start(spawn, &error);
  if (process == nullptr) {
    *output = error;
    return ExitInfo{};
  }
  const ExitInfo exit = process->Wait(DeadlineIn(std::chrono::seconds(30)));
  *output = process->output();
  return exit;
}

}  // namespace shmdict::internal
