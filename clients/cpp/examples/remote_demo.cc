// shmdict-remote-demo: a process that cannot see this host's shared memory reads, writes and
// watches a dict through shmdict-bridge, while a local process writes to it through /dev/shm.
//
//   shmdict-remote-demo                         orchestrates: creates the dict, starts a bridge on
//                                               a Unix socket, runs the client (below) in a mount
//                                               namespace with an empty /dev/shm and an empty
//                                               network namespace when run as root, writes
//                                               locally, checks, stops the bridge and unlinks
//   shmdict-remote-demo client ADDRESS NAME     the client: counts the dicts it can see (0),
//                                               writes through the bridge, prints the local
//                                               writes it receives through its mirror
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/remote_dict.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
constexpr int kRounds = 5;

int Client(const std::string& address, const std::string& name) {
  auto visible = shmdict::LocalCatalog().ListNames();
  std::printf("  [client pid %d] dicts visible in my /dev/shm: %zu\n", getpid(),
              visible.ok() ? visible->size() : size_t{0});
  auto dict = shmdict::RemoteDict::Open({.address = address, .dict = name});
  if (!dict.ok()) {
    std::fprintf(stderr, "client: %s\n", dict.status().ToString().c_str());
    return 2;
  }
  shmdict::RemoteDict& remote = **dict;
  for (int round = 0; round < kRounds; ++round) {
    auto revision = remote.Set("from-container", shmdict::Value::Int(round));
    if (!revision.ok()) return 2;
    std::printf("  [client] set from-container=%d            -> revision %llu\n", round,
                static_cast<unsigned long long>(*revision));
    // Wait for the local process's answer to arrive in the mirror.
    const std::string wanted = std::to_string(round);
    for (int tries = 0; tries < 100; ++tries) {
      auto answer = remote.Get("from-host");
      if (answer.ok() && answer->has_value() && (*answer)->ToText() == wanted) break;
      remote.WaitForChange(remote.revision(), 100ms).status().IgnoreError();
    }
    auto answer = remote.Get("from-host");
    if (!answer.ok() || !answer->has_value()) return 2;
    std::printf("  [client] mirror has from-host=%s at revision %llu\n",
                (*answer)->ToText().c_str(), static_cast<unsigned long long>(remote.revision()));
  }
  return 0;
}

pid_t Spawn(const std::vector<std::string>& args, posix_spawn_file_actions_t* actions = nullptr) {
  std::vector<char*> argv;
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], actions, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

int Orchestrate(const std::string& self) {
  const std::string bridge_path =
      (std::filesystem::path(self).parent_path() / "../../bridge/shmdict-bridge")
          .lexically_normal();
  char dir_template[] = "/tmp/shmdict-demo-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string address = "unix:" + dir + "/bridge.sock";
  const std::string name = "remote-demo-" + std::to_string(getpid());

  auto dict = shmdict::Dict::Open({.name = name, .create_mode = shmdict::CreateMode::kMustCreate});
  if (!dict.ok()) {
    std::fprintf(stderr, "demo: %s\n", dict.status().ToString().c_str());
    return 2;
  }
  std::printf("shmdict-remote-demo: dict '%s' in /dev/shm; bridge on %s\n", name.c_str(),
              address.c_str());
  // The bridge's stdout (its "listening"/"ready" lines) goes to a pipe we wait on.
  int ready_pipe[2];
  if (pipe(ready_pipe) != 0) return 2;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, ready_pipe[1], 1);
  posix_spawn_file_actions_addclose(&actions, ready_pipe[0]);
  const pid_t bridge = Spawn({bridge_path, "--listen", address, "--log-level", "warn"}, &actions);
  posix_spawn_file_actions_destroy(&actions);
  close(ready_pipe[1]);
  std::string output;
  char buffer[256];
  while (output.find("ready\n") == std::string::npos) {
    const ssize_t n = read(ready_pipe[0], buffer, sizeof(buffer));
    if (n <= 0) {
      std::fprintf(stderr, "demo: %s did not start\n", bridge_path.c_str());
      return 2;
    }
    output.append(buffer, static_cast<size_t>(n));
  }
  close(ready_pipe[0]);

  // The client: as root, in its own mount namespace with an empty /dev/shm and its own, empty,
  // network namespace (it reaches the bridge only through the socket file).
  std::vector<std::string> client = {self, "client", address, name};
  if (geteuid() == 0 && access("/usr/bin/unshare", X_OK) == 0) {
    std::printf("client: unshare -m -n, an empty tmpfs on /dev/shm, no network\n");
    client = {"/usr/bin/unshare",
              "-m",
              "-n",
              "--propagation",
              "private",
              "sh",
              "-c",
              "mount -t tmpfs none /dev/shm && exec \"$0\" client \"$1\" \"$2\"",
              self,
              address,
              name};
  } else {
    std::printf("client: an ordinary process (not root: no namespaces)\n");
  }
  const pid_t client_pid = Spawn(client);
  int rounds_answered = 0;
  for (int round = 0; round < kRounds; ++round) {
    // Wait for the client's write through the bridge, then answer through shared memory.
    for (int tries = 0; tries < 200; ++tries) {
      auto got = dict->Get("from-container");
      if (got.ok() && got->has_value() && (*got)->AsInt() == round) break;
      dict->WaitForChange(dict->published_revision(), 50ms).status().IgnoreError();
    }
    auto got = dict->Get("from-container");
    if (!got.ok() || !got->has_value() || (*got)->AsInt() != round) break;
    auto revision = dict->Set("from-host", shmdict::Value::Int(round));
    if (!revision.ok()) break;
    std::printf(
        "  [host pid %d] saw from-container=%d in /dev/shm; set from-host -> revision "
        "%llu\n",
        getpid(), round, static_cast<unsigned long long>(*revision));
    ++rounds_answered;
  }
  int client_status = 0;
  waitpid(client_pid, &client_status, 0);
  kill(bridge, SIGTERM);
  int bridge_status = 0;
  waitpid(bridge, &bridge_status, 0);
  std::filesystem::remove_all(dir);
  const bool ok =
      rounds_answered == kRounds && WIFEXITED(client_status) && WEXITSTATUS(client_status) == 0;
  std::printf("%s: %d round trips host <-> bridge client; bridge stopped; dict unlinked\n",
              ok ? "OK" : "FAILED", rounds_answered);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 4 && std::string(argv[1]) == "client") return Client(argv[2], argv[3]);
  if (argc == 1) {
    return Orchestrate(std::filesystem::canonical("/proc/self/exe").string());
  }
  std::fprintf(stderr, "usage: shmdict-remote-demo\n");
  return 2;
}
