// A Kubernetes pod on one machine, end to end: the bridge as a sidecar next to an application
// that uses the dict through shared memory, and another pod that reaches it only through gRPC.
//
//   app container:   pid 1 of a pid namespace of its own, the host's /dev/shm (the pod's
//                    emptyDir), writes through shared memory (shmdict_worker write)
//   bridge sidecar:  shmdict-bridge on a Unix socket, SIGKILLed and restarted as a kubelet would
//   remote pod:      an empty /dev/shm, no network, the socket's directory bind-mounted; writes
//                    and watches through RemoteDict (shmdict_remote_worker pod)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "../support/workload.h"
#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

constexpr const char* kUnshare = "/usr/bin/unshare";

// A writer's acknowledged writes: index -> revision, from its "acked INDEX REVISION" lines.
using Acks = std::map<int64_t, uint64_t>;

// Reads the complete lines `worker` printed so far (not TakeLines: a line half written must wait
// for its end): acks into `acks`, every other line into `other`.
void TakeOutput(WorkerProcess& worker, Acks* acks, std::vector<std::string>* other) {
  std::string line;
  while (worker.ReadLine(&line, Clock::now()) == LineStatus::kLine) {
    if (line.rfind("acked ", 0) == 0) {
      const size_t space = line.rfind(' ');
      (*acks)[std::strtoll(line.c_str() + 6, nullptr, 10)] =
          std::strtoull(line.c_str() + space + 1, nullptr, 10);
    } else {
      other->push_back(line);
    }
  }
}

class PodTest : public DictTestBase {
 protected:
  // Reads both workers' output until `done` holds. False (and a test failure) if a worker
  // reported an error, or at the deadline (a hang guard, not a timing assertion; a worker that
  // died without a word is found here too).
  template <typename Done>
  bool PumpUntil(WorkerProcess& app, WorkerProcess& pod, Done done) {
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    for (;;) {
      TakeOutput(app, &app_acks_, &app_lines_);
      TakeOutput(pod, &pod_acks_, &pod_lines_);
      for (const std::string& line : app_lines_) {
        if (line.rfind("error", 0) == 0) ADD_FAILURE() << "app: " << line;
      }
      for (const std::string& line : pod_lines_) {
        if (line.rfind("error", 0) == 0) ADD_FAILURE() << "remote pod: " << line;
      }
      if (HasFailure()) return false;
      if (done()) return true;
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "stuck at " << app_acks_.size() << " app and " << pod_acks_.size()
                      << " remote acks\napp: " << app.output() << "\nremote pod: " << pod.output();
        return false;
      }
      Pump({&app, &pod}, deadline);
    }
  }

  Acks app_acks_;
  Acks pod_acks_;
  std::vector<std::string> app_lines_;
  std::vector<std::string> pod_lines_;
};

TEST_F(PodTest, SidecarRestartsLoseNoAcknowledgedWriteAndBothSidesEndEqual) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for unshare --pid and unshare -m -n";
  // The pod's /dev/shm: the test creates the dict there (and unlinks it at the end).
  auto dict = Dict::Open(CreateOptions(name_));
  ASSERT_OK(dict);
  BridgeProcess bridge;
  ASSERT_TRUE(bridge.Start());

  // The app container: pid 1 in its own pid namespace, same /dev/shm. It writes kStep keys per
  // line it reads, so the test decides when it writes: while the bridge is up, and while it is
  // down.
  const int restarts = Scaled(3);
  constexpr int kStep = 200;
  const int app_writes = (2 * restarts + 1) * kStep;
  WorkerProcess app(kUnshare,
                    {"--pid", "--fork", "--kill-child", WorkerProgram(), "write", name_, "app",
                     std::to_string(app_writes), "--print-pid", "--step=" + std::to_string(kStep)});
  auto pid = app.AwaitLine("pid", DeadlineIn(kWorkerTimeout));
  ASSERT_TRUE(pid.has_value()) << app.output();
  EXPECT_EQ(*pid, "pid 1") << "the app must be pid 1 of its own pid namespace";

  // The remote pod: an empty /dev/shm, an empty network namespace, the bridge's socket directory
  // at /mnt (it survives restarts: a new bridge binds the same path).
  const std::string socket_dir = bridge.socket_path().substr(0, bridge.socket_path().rfind('/'));
  const std::string script = "mount -t tmpfs none /dev/shm && mount --bind '" + socket_dir +
                             "' /mnt && exec '" + RemoteWorkerProgram() +
                             "' pod unix:/mnt/bridge.sock '" + name_ + "' remote 1000000";
  WorkerProcess pod(kUnshare, {"-m", "-n", "--propagation", "private", "sh", "-c", script});
  auto isolated = pod.AwaitLine("isolated", DeadlineIn(kWorkerTimeout));
  ASSERT_TRUE(isolated.has_value()) << pod.output();
  EXPECT_EQ(*isolated, "isolated dicts=0") << "the remote pod must not see this host's dicts";

  // Each round: both sides write through a live bridge; the bridge is SIGKILLed while the remote
  // pod writes; the app writes while it is down; a new bridge starts.
  constexpr size_t kRemotePerRound = 100;
  for (int round = 0; round < restarts; ++round) {
    SCOPED_TRACE("restart " + std::to_string(round));
    const size_t remote_before = pod_acks_.size();
    const size_t app_before = app_acks_.size();
    ASSERT_TRUE(app.SendLine("go"));
    ASSERT_TRUE(PumpUntil(app, pod, [&] {
      return app_acks_.size() >= app_before + kStep &&
             pod_acks_.size() >= remote_before + kRemotePerRound;
    }));
    bridge.Kill();
    ASSERT_TRUE(app.SendLine("go"));
    ASSERT_TRUE(PumpUntil(app, pod, [&] { return app_acks_.size() >= app_before + 2 * kStep; }));
    ASSERT_TRUE(bridge.Start());
  }
  // The app writes the rest at once; the remote pod goes on through the last bridge, then stops.
  app.CloseStdin();
  const size_t remote_before = pod_acks_.size();
  ASSERT_TRUE(PumpUntil(app, pod, [&] {
    return app_acks_.size() == static_cast<size_t>(app_writes) &&
           pod_acks_.size() >= remote_before + kRemotePerRound;
  }));
  ASSERT_TRUE(pod.SendLine("stop"));
  ASSERT_TRUE(PumpUntil(app, pod, [&] {
    return !pod_lines_.empty() && pod_lines_.back().rfind("stopped ", 0) == 0;
  }));
  ExitInfo app_exit = app.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(app_exit.Succeeded()) << app_exit.ToString() << app.output();

  // Nobody writes any more: the final state, as the app's side of the pod sees it.
  const uint64_t final_revision = dict->published_revision();
  const std::map<std::string, Value> local = dict->Export();
  ASSERT_TRUE(pod.SendLine("final " + std::to_string(final_revision)));
  ASSERT_TRUE(PumpUntil(
      app, pod, [&] { return !pod_lines_.empty() && pod_lines_.back().rfind("end ", 0) == 0; }));
  ExitInfo pod_exit = pod.Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_TRUE(pod_exit.Succeeded()) << pod_exit.ToString() << pod.output();

  // Every acknowledged write is there with its value, each at a revision of its own; and there is
  // nothing else (each writer stopped only after its last write was acknowledged).
  std::map<std::string, Value> expected;
  std::set<uint64_t> revisions;
  for (const auto& [prefix, acks] : {std::pair{"app", &app_acks_}, {"remote", &pod_acks_}}) {
    for (const auto& [index, revision] : *acks) {
      expected[KeyFor(prefix, index)] = ValueFor(index, 0);
      EXPECT_TRUE(revisions.insert(revision).second)
          << KeyFor(prefix, index) << " was acknowledged at revision " << revision
          << ", as another write was";
      EXPECT_LE(revision, final_revision) << KeyFor(prefix, index);
    }
  }
  EXPECT_EQ(app_acks_.size(), static_cast<size_t>(app_writes));
  for (const std::string& line : pod_lines_) {
    if (line.rfind("stopped ", 0) == 0) {
      EXPECT_EQ(line, "stopped " + std::to_string(pod_acks_.size())) << "an ack line was lost";
    }
  }
  for (const auto& [key, value] : expected) {
    auto found = local.find(key);
    if (found == local.end()) {
      ADD_FAILURE() << key << " was acknowledged but is missing";
    } else {
      EXPECT_EQ(found->second, value) << key;
    }
  }
  EXPECT_EQ(local.size(), expected.size())
      << "the dict must hold the acknowledged writes and nothing else";

  // Both sides hold the same state: through shared memory, through the bridge, and as the remote
  // pod's watch built it from revision 0 up to the final revision (checked in the worker: every
  // revision once, in order).
  std::vector<std::string> through_bridge;
  std::vector<std::string> watched;
  for (const std::string& line : pod_lines_) {
    if (line.rfind("item ", 0) == 0) through_bridge.push_back(line);
    if (line.rfind("watched ", 0) == 0) watched.push_back(line.substr(8));
  }
  std::sort(through_bridge.begin(), through_bridge.end());  // Items() is in the table's order
  EXPECT_EQ(through_bridge, DigestLines(local));
  EXPECT_EQ(watched, DigestLines(local));
  EXPECT_EQ(pod_lines_.back(), "end " + std::to_string(final_revision));
}

}  // namespace
}  // namespace shmdict::testing
