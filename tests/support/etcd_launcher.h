// EtcdCluster: the one way tests and benchmarks start a private etcd cluster (Debian's
// etcd-server 3.4). Its members listen on free 127.0.0.1 ports (never 2379/2380) and keep their
// data in a fresh mkdtemp directory /tmp/shmdict-etcd-XXXXXX (not /dev/shm: the tests check that
// they leave /dev/shm as they found it), which the destructor removes. Members run with
// --unsafe-no-fsync unless EtcdClusterOptions::fsync (a test's data need not survive a power cut;
// SIGKILL loses nothing; benchmarks keep fsync to measure what production pays) and
// --experimental-watch-progress-notify-interval 500ms (idle watchers hear progress quickly).
// Like RedisLauncher, it reports failures as an error string and depends on neither GoogleTest
// nor the benchmark harness. Requests go through shmdict::etcd_wire's stubs; etcdctl (about
// 50 ms of CPU per call) only where its own output is what a test checks.
//
//   std::string error;
//   std::unique_ptr<EtcdCluster> etcd = EtcdCluster::Start(3, EtcdClusterOptions{}, &error);
//   if (etcd == nullptr) ...error...
//   etcd->Put("/app/a", "1");
//   etcd->Kill(0);     // SIGKILL member 0
//   etcd->Restart(0);  // same command and data directory: it rejoins
//
// Readiness (Start, Restart): every running member reports a leader (Maintenance.Status
// leader != 0) and a linearizable Range succeeds through each member waited for.
//
// Thread-safety: Start, Kill, Restart and the destructor from the thread that called Start (the
// members are killed when that thread dies: SpawnOptions::kill_with_parent); the request helpers
// (Put, Range, ...) and Channel from any thread while no member is being killed or restarted.
// Lifetime: destroying an EtcdCluster SIGKILLs and reaps every member (SIGTERM to the last member
// of a cluster can hang for seconds) and removes the data directory.
#ifndef SHMDICT_TESTS_SUPPORT_ETCD_LAUNCHER_H_
#define SHMDICT_TESTS_SUPPORT_ETCD_LAUNCHER_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "etcd/etcdserverpb/rpc.grpc.pb.h"
#include "subprocess.h"

namespace shmdict::internal {

struct EtcdClusterOptions {
  std::string program;  // etcd; empty: FindProgram("etcd")
  std::string etcdctl;  // etcdctl; empty: FindProgram("etcdctl")
  // How long Start and Restart wait for readiness (per attempt for Start).
  Clock::duration ready_timeout = std::chrono::seconds(30);
  // A free port can be taken by another program before a member binds it: then the member
  // exits and Start tries again with other ports, this many times in all.
  int attempts = 5;
  // The deadline of each request the helpers send.
  Clock::duration request_timeout = std::chrono::seconds(10);
  std::vector<std::string> extra_args;  // more etcd flags for every member, after ours
  // false: --unsafe-no-fsync (the tests' speed); true: etcd's default, an fsync per commit, as a
  // production cluster runs (the benchmarks).
  bool fsync = false;
};

class EtcdCluster {
 public:
  // Starts `members` (1 or more) members as one new cluster and waits until it is ready. On
  // failure (no etcd, no free port or temp directory, a member exiting or the cluster not ready
  // after every attempt) returns nullptr and sets *error to the cause and the members' last log
  // lines; nothing is left running and the directory is removed.
  static std::unique_ptr<EtcdCluster> Start(int members, const EtcdClusterOptions& options,
                                            std::string* error);
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;
  ~EtcdCluster();

  int member_count() const { return static_cast<int>(members_.size()); }
  bool running(int i) const;
  // "127.0.0.1:PORT" of each member's client URL, in member order (a gRPC target and an
  // etcdctl --endpoints entry alike).
  std::vector<std::string> client_endpoints() const;
  // The directory holding the members' data dirs and logs (m<i>/, m<i>.log).
  const std::string& data_dir() const { return dir_; }
  // The last `lines` lines member i logged (zap JSON at warn level and above), for messages.
  std::string LogTail(int i, int lines = 20) const;

  // SIGKILLs and reaps member i (does nothing when it is not running). Its channel stays: calls
  // through it fail with UNAVAILABLE until Restart.
  void Kill(int i);
  // Starts member i again with its first command and data directory (it rejoins the cluster)
  // and waits until it reports a leader and serves a linearizable Range. False, with *error
  // set, when it is running already, exits, or is not ready within ready_timeout.
  bool Restart(int i, std::string* error);

  // Waits until every running member reports a leader and serves a linearizable Range, as Start
  // does: after a Kill, the survivors may need an election (etcd's 1 s election timeout) before
  // they take writes. False, with *error set, when one exits or ready_timeout passes.
  bool WaitUntilReady(std::string* error);

  // A channel to member i, made by Start or the last Restart(i); shared, never null after they
  // succeeded.
  std::shared_ptr<grpc::Channel> Channel(int i) const;

  // One request each, to member `member`, or to the first running member when -1, with the
  // request_timeout deadline. Return gRPC's status (etcd's own errors: INVALID_ARGUMENT
  // "duplicate key given in txn request", OUT_OF_RANGE "required revision has been
  // compacted", ...); UNAVAILABLE when no member runs.
  grpc::Status Range(const etcdserverpb::RangeRequest& request,
                     etcdserverpb::RangeResponse* response, int member = -1) const;
  grpc::Status Put(const etcdserverpb::PutRequest& request, etcdserverpb::PutResponse* response,
                   int member = -1) const;
  grpc::Status DeleteRange(const etcdserverpb::DeleteRangeRequest& request,
                           etcdserverpb::DeleteRangeResponse* response, int member = -1) const;
  grpc::Status Txn(const etcdserverpb::TxnRequest& request, etcdserverpb::TxnResponse* response,
                   int member = -1) const;
  grpc::Status Compact(const etcdserverpb::CompactionRequest& request,
                       etcdserverpb::CompactionResponse* response, int member = -1) const;
  grpc::Status Status(int member, etcdserverpb::StatusResponse* response) const;

  // Shorthands. Put: *revision (when non-null) gets the header revision of the put. Get: *value
  // gets the value, *found whether the key exists (a linearizable read). Compact: physical, to
  // `revision`.
  grpc::Status Put(std::string_view key, std::string_view value, int64_t* revision = nullptr,
                   int member = -1) const;
  grpc::Status Get(std::string_view key, std::string* value, bool* found, int member = -1) const;
  grpc::Status Compact(int64_t revision, int member = -1) const;

  // Runs `etcdctl --endpoints=<running members> ARGS...` (ETCDCTL_API=3) and returns its exit;
  // *output gets what it printed on stdout. When it cannot start (no etcdctl): ExitInfo{} (not
  // reaped) and *output says why.
  ExitInfo Etcdctl(const std::vector<std::string>& args, std::string* output) const;

 private:
  struct Member {
    std::string name;  // m<i>
    int client_port = 0;
    int peer_port = 0;
    std::vector<std::string> argv;
    std::unique_ptr<Subprocess> process;
    std::shared_ptr<grpc::Channel> channel;
  };

  EtcdCluster() = default;
  // Spawns member i with its argv (its channel is made by WaitReady); false with *error on a
  // spawn failure.
  bool Spawn(int i, std::string* error);
  // Makes member i's channel once its client port accepts connections; false until then.
  bool ConnectWhenListening(int i);
  // Waits until each member in `which` reports a leader and serves a linearizable Range, or
  // the deadline passes, or one of them exits; false with *error saying which and why.
  bool WaitReady(const std::vector<int>& which, Deadline deadline, std::string* error);
  int Target(int member) const;  // `member`, or the first running one for -1; -1 if none
  std::unique_ptr<grpc::ClientContext> Context(Clock::duration timeout) const;
  grpc::Status Status(int member, etcdserverpb::StatusResponse* response,
                      Clock::duration timeout) const;
  grpc::Status Range(const etcdserverpb::RangeRequest& request,
                     etcdserverpb::RangeResponse* response, int member,
                     Clock::duration timeout) const;

  EtcdClusterOptions options_;
  std::string dir_;
  std::vector<Member> members_;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_TESTS_SUPPORT_ETCD_LAUNCHER_H_
