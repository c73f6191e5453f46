// shmdict-demo: several unrelated processes share one dict through shared memory while another
// process watches the changes live. Run it without arguments; it spawns copies of itself.
//
//   shmdict-demo                      orchestrates: creates the dict, spawns, checks, unlinks
//   shmdict-demo watch NAME COUNT     prints changes until revision COUNT
//   shmdict-demo work NAME ID N       N increments of a shared counter plus its own keys
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "shmdict/dict.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

constexpr int kWorkers = 4;
constexpr int kIncrementsPerWorker = 2500;

shmdict::Dict MustAttach(const std::string& name) {
  shmdict::Options options;
  options.name = name;
  options.create_mode = shmdict::CreateMode::kMustAttach;
  auto dict = shmdict::Dict::Open(options);
  if (!dict.ok()) {
    std::fprintf(stderr, "demo: %s\n", dict.status().ToString().c_str());
    std::exit(2);
  }
  return std::move(*dict);
}

int Work(const std::string& name, int id, int n) {
  shmdict::Dict dict = MustAttach(name);
  for (int i = 0; i < n; ++i) {
    if (!dict.Increment("visits").ok()) return 1;
    if (i % 500 == 0) {
      std::string key = "worker-" + std::to_string(id);
      if (!dict.Set(key, shmdict::Value::Int(i)).ok()) return 1;
    }
  }
  std::string key = "worker-" + std::to_string(id);
  return dict.Set(key, shmdict::Value::Str("done, pid " + std::to_string(getpid()))).ok() ? 0 : 1;
}

int Watch(const std::string& name, uint64_t until) {
  shmdict::Dict dict = MustAttach(name);
  auto watched = dict.Watch(0);
  if (!watched.ok()) {
    std::fprintf(stderr, "watch: %s\n", watched.status().ToString().c_str());
    return 1;
  }
  shmdict::Watcher& watcher = **watched;
  uint64_t changes = 0;
  size_t snapshot_entries = 0;  // of the snapshot being received, in chunks
  while (watcher.revision() < until) {
    auto batch = watcher.Next(4096, 5s);
    if (!batch.ok()) {
      std::fprintf(stderr, "watch: %s\n", batch.status().ToString().c_str());
      return 1;
    }
    if (batch->is_snapshot) {
      if (batch->snapshot_begins) snapshot_entries = 0;
      snapshot_entries += batch->snapshot_items.size();
    }
    if (batch->is_snapshot && batch->snapshot_ends) {
      // A watcher slower than the writers is never allowed to hold them back: when the log has
      // moved past it, it resumes from the newest snapshot.
      std::printf(
          "  [watcher pid %d] fell behind the log: resynced from the snapshot at "
          "revision %llu (%zu entries)\n",
          getpid(), static_cast<unsigned long long>(batch->snapshot_revision), snapshot_entries);
    }
    for (const shmdict::Change& c : batch->changes) {
      ++changes;
      // Print the interesting ones; the counter changes thousands of times.
      if (c.key != "visits" || c.revision % 2000 == 0) {
        std::printf("  [watcher pid %d] rev %-6llu %s = %s\n", getpid(),
                    static_cast<unsigned long long>(c.revision), c.key.c_str(),
                    c.value.ToText().c_str());
      }
    }
    std::fflush(stdout);
  }
  std::printf("  [watcher pid %d] received %llu changes in revision order up to revision %llu\n",
              getpid(), static_cast<unsigned long long>(changes),
              static_cast<unsigned long long>(watcher.revision()));
  return 0;
}

pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) {
    std::perror("posix_spawn");
    std::exit(2);
  }
  return pid;
}

int Orchestrate() {
  shmdict::Options options;
  options.name = "demo-" + std::to_string(getpid());
  options.buffer_size = 64 * 1024;  // small on purpose: the demo goes through many snapshots
  auto created = shmdict::Dict::Open(options);
  if (!created.ok()) {
    std::fprintf(stderr, "demo: %s\n", created.status().ToString().c_str());
    return 2;
  }
  shmdict::Dict dict = std::move(*created);
  std::printf("created dict '%s' in /dev/shm/shmdict.%s\n", dict.name().c_str(),
              dict.name().c_str());
  std::fflush(stdout);
  // Every worker commits kIncrementsPerWorker increments, 5 progress sets and a final set.
  const uint64_t total_revisions = kWorkers * (kIncrementsPerWorker + 5 + 1);
  pid_t watcher = Spawn({"shmdict-demo", "watch", dict.name(), std::to_string(total_revisions)});
  std::vector<pid_t> workers;
  for (int id = 0; id < kWorkers; ++id) {
    workers.push_back(Spawn({"shmdict-demo", "work", dict.name(), std::to_string(id),
                             std::to_string(kIncrementsPerWorker)}));
  }
  std::printf("spawned %d writer processes and 1 watcher process\n", kWorkers);
  std::fflush(stdout);
  int failures = 0;
  for (pid_t pid : workers) {
    int status = 0;
    waitpid(pid, &status, 0);
    failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  int status = 0;
  waitpid(watcher, &status, 0);
  failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  const int64_t visits = dict.Get("visits")->value_or(shmdict::Value::Int(-1)).AsInt().value_or(-1);
  std::printf("\nfinal state seen by the creator (pid %d):\n", getpid());
  for (const auto& [key, value] : dict.Export()) {
    std::printf("  %-10s = %s\n", key.c_str(), value.ToText().c_str());
  }
  shmdict::DictStatus st = dict.GetStatus();
  std::printf("revision %llu, %llu entries, %llu snapshots built, %llu lock recoveries\n",
              static_cast<unsigned long long>(st.revision),
              static_cast<unsigned long long>(st.entries),
              static_cast<unsigned long long>(st.snapshots_built.value_or(0)),
              static_cast<unsigned long long>(st.lock_recoveries.value_or(0)));
  const bool exact = visits == kWorkers * kIncrementsPerWorker;
  std::printf("counter: %lld (expected exactly %d): %s\n", static_cast<long long>(visits),
              kWorkers * kIncrementsPerWorker, exact ? "no lost updates" : "LOST UPDATES");
  // The creator's handle unlinks the dict (auto_unlink) when it goes out of scope.
  return exact && failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return Orchestrate();
  if (args[0] == "watch" && args.size() == 3) return Watch(args[1], std::stoull(args[2]));
  if (args[0] == "work" && args.size() == 4) {
    return Work(args[1], std::stoi(args[2]), std::stoi(args[3]));
  }
  std::fprintf(stderr, "usage: shmdict-demo [watch NAME UNTIL_REVISION | work NAME ID N]\n");
  return 2;
}
