// shmdict_remote_worker: the "other side" of the bridge tests, run as a separate process.
//
//   remote-write ADDR DICT PREFIX COUNT  Sets PREFIX-i = i through a bridge (no mirror); prints
//                                        "acked KEY REVISION" after each acknowledged write, and
//                                        retries a write the bridge could not take (it may be
//                                        restarting) every 20 ms.
//   local-write DICT PREFIX COUNT PAUSE  Sets PREFIX-i = i in shared memory; every 7th write is
//                                        an atomic batch of 3 keys; sleeps 1 ms after every
//                                        PAUSE writes (0: never), to spread the writes in time.
//                                        Prints "done".
//   pingpong ADDR DICT N                 For a process with an empty /dev/shm and no network:
//                                        prints "isolated dicts=D", then for i < N sets
//                                        remote-i through the bridge and waits until local-i
//                                        (written by a local process) reaches its mirror.
//   pod ADDR DICT PREFIX MAX             The remote pod of a sidecar test, for a process with an
//                                        empty /dev/shm and no network: prints "isolated dicts=D";
//                                        watches the dict from revision 0 while it sets
//                                        KeyFor(PREFIX, i) = ValueFor(i) (no mirror), retrying as
//                                        remote-write does and printing "acked i REVISION", until
//                                        stdin says "stop" (or MAX writes): "stopped N". Then on
//                                        "final REV" it waits until its watch delivered REV and
//                                        prints the state the watch built ("watched " + a
//                                        DigestLine per entry), the dict read through the bridge
//                                        (a DigestLine per entry) and "end REV". The watch must
//                                        deliver every revision once, in order, with no gap
//                                        (a resync snapshot may replace a stretch of them).
// Every failure prints "error ..." and exits 1.
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>

#include "../support/workload.h"
#include "shmdict/dict.h"
#include "shmdict/local_catalog.h"
#include "shmdict/remote_dict.h"

namespace {

using shmdict::Value;

int Fail(const std::string& what) {
  std::printf("error %s\n", what.c_str());
  std::fflush(stdout);
  return 1;
}

// A writer's RemoteDict: no mirror, short calls, a long wait for the bridge to come up.
shmdict::RemoteOptions WriterOptions(const std::string& address, const std::string& dict) {
  shmdict::RemoteOptions options{.address = address, .dict = dict, .mirror = false};
  options.call_timeout = std::chrono::seconds(5);
  options.open_timeout = std::chrono::seconds(30);
  return options;
}

// Sets `key` until the bridge acknowledges it: a write that failed because the bridge was down
// or restarting (it may or may not have been committed) is sent again, every 20 ms. The
// acknowledged revision, or the first other error.
shmdict::Result<uint64_t> SetUntilAcked(shmdict::RemoteDict& remote, const std::string& key,
                                        const Value& value) {
  for (;;) {
    auto revision = remote.Set(key, value);
    if (revision.ok()) return revision;
    const auto code = revision.status().code();
    if (code != shmdict::StatusCode::kUnavailable &&
        code != shmdict::StatusCode::kDeadlineExceeded) {
      return revision;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int RemoteWrite(const std::string& address, const std::string& dict, const std::string& prefix,
                int count) {
  auto remote = shmdict::RemoteDict::Open(WriterOptions(address, dict));
  if (!remote.ok()) return Fail(remote.status().ToString());
  for (int i = 0; i < count; ++i) {
    const std::string key = prefix + "-" + std::to_string(i);
    auto revision = SetUntilAcked(**remote, key, Value::Int(i));
    if (!revision.ok()) return Fail(revision.status().ToString());
    std::printf("acked %s %llu\n", key.c_str(), static_cast<unsigned long long>(*revision));
    std::fflush(stdout);
  }
  std::printf("done\n");
  return 0;
}

int LocalWrite(const std::string& name, const std::string& prefix, int count, int pause) {
  auto dict = shmdict::Dict::Open({.name = name, .create_mode = shmdict::CreateMode::kMustAttach});
  if (!dict.ok()) return Fail(dict.status().ToString());
  for (int i = 0; i < count; ++i) {
    const std::string key = prefix + "-" + std::to_string(i);
    shmdict::Status written;
    if (i % 7 == 6) {
      std::vector<std::pair<std::string, Value>> batch = {
          {key, Value::Int(i)}, {key + "-b", Value::Int(i)}, {key + "-c", Value::Int(i)}};
      written = dict->Update(batch).status();
    } else {
      written = dict->Set(key, Value::Int(i)).status();
    }
    if (!written.ok()) return Fail(written.ToString());
    if (pause > 0 && i % pause == pause - 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::printf("done\n");
  return 0;
}

int PingPong(const std::string& address, const std::string& dict, int rounds) {
  auto local = shmdict::LocalCatalog().ListNames();
  std::printf("isolated dicts=%zu\n", local.ok() ? local->size() : size_t{0});
  std::fflush(stdout);
  shmdict::RemoteOptions options{.address = address, .dict = dict};
  auto remote = shmdict::RemoteDict::Open(options);
  if (!remote.ok()) return Fail(remote.status().ToString());
  for (int i = 0; i < rounds; ++i) {
    if (auto set = (*remote)->Set("remote-" + std::to_string(i), Value::Int(i)); !set.ok()) {
      return Fail(set.status().ToString());
    }
    const std::string wanted = "local-" + std::to_string(i);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
      auto found = (*remote)->Contains(wanted);
      if (!found.ok()) return Fail(found.status().ToString());
      if (*found) break;
      if (std::chrono::steady_clock::now() > deadline) return Fail(wanted + " never arrived");
      (*remote)
          ->WaitForChange((*remote)->revision(), std::chrono::milliseconds(200))
          .status()
          .IgnoreError();
    }
  }
  std::printf("done\n");
  return 0;
}

// The state a watcher's batches build, checked as they arrive: every revision after the last one
// delivered, once, in order and without a gap (each revision of the pod test's workload holds a
// change), or a snapshot that replaces everything up to its revision.
// Thread-compatible.
class WatchedState {
 public:
  // An empty string, or what is wrong with `batch`.
  std::string Apply(const shmdict::ChangeBatch& batch) {
    if (batch.revision < revision_) {
      return "revision went back from " + std::to_string(revision_) + " to " +
             std::to_string(batch.revision);
    }
    if (batch.is_snapshot) {
      if (batch.snapshot_begins) staging_.clear();
      for (const auto& [key, value] : batch.snapshot_items) staging_[key] = value;
      if (batch.snapshot_ends) {
        state_.swap(staging_);
        staging_.clear();
        revision_ = batch.snapshot_revision;
      }
      return "";
    }
    const uint64_t before = revision_;
    for (const shmdict::Change& change : batch.changes) {
      // The changes of one revision (an atomic batch) come together, in one batch.
      const bool same_revision = change.revision == revision_ && revision_ > before;
      if (!same_revision && change.revision != revision_ + 1) {
        return "change of revision " + std::to_string(change.revision) + " after revision " +
               std::to_string(revision_);
      }
      revision_ = change.revision;
      if (change.op == shmdict::ChangeOp::kSet) {
        state_[change.key] = change.value;
      } else if (change.op == shmdict::ChangeOp::kErase) {
        state_.erase(change.key);
      } else {
        state_.clear();
      }
    }
    if (batch.revision != revision_) {
      return "batch says revision " + std::to_string(batch.revision) + ", its changes reached " +
             std::to_string(revision_);
    }
    return "";
  }

  uint64_t revision() const { return revision_; }
  const std::map<std::string, Value>& state() const { return state_; }

 private:
  uint64_t revision_ = 0;
  std::map<std::string, Value> state_;
  std::map<std::string, Value> staging_;
};

// A line from stdin if one is ready now; nullopt if none is, "" at EOF.
std::optional<std::string> PollStdinLine() {
  pollfd ready{.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
  if (poll(&ready, 1, 0) <= 0) return std::nullopt;
  std::string line;
  if (!std::getline(std::cin, line)) return std::string();
  return line;
}

int Pod(const std::string& address, const std::string& dict, const std::string& prefix,
        int max_writes) {
  auto local = shmdict::LocalCatalog().ListNames();
  std::printf("isolated dicts=%zu\n", local.ok() ? local->size() : size_t{0});
  auto remote = shmdict::RemoteDict::Open(WriterOptions(address, dict));
  if (!remote.ok()) return Fail(remote.status().ToString());
  auto watcher = (*remote)->Watch(0);
  if (!watcher.ok()) return Fail(watcher.status().ToString());

  // The watch runs until it delivered `until` (set once the writes are over), or an error.
  // If it never gets there, the test's deadline ends this process.
  WatchedState watched;
  std::atomic<uint64_t> until{std::numeric_limits<uint64_t>::max()};
  std::string watch_error;  // read after join
  std::thread watch_thread([&] {
    while (watched.revision() < until.load()) {
      auto batch = (*watcher)->Next(shmdict::WatchLimits{}, std::chrono::milliseconds(200));
      if (!batch.ok()) {
        watch_error = "watch: " + batch.status().ToString();
        return;
      }
      if (std::string wrong = watched.Apply(*batch); !wrong.empty()) {
        watch_error = "watch: " + wrong;
        return;
      }
    }
  });

  // Writes until told to stop: the test restarts the bridge meanwhile.
  int written = 0;
  shmdict::Status write_error;
  while (written < max_writes) {
    if (auto line = PollStdinLine(); line.has_value() && *line == "stop") break;
    auto revision = SetUntilAcked(**remote, shmdict::testing::KeyFor(prefix, written),
                                  shmdict::testing::ValueFor(written, 0));
    if (!revision.ok()) {
      write_error = revision.status();
      break;
    }
    std::printf("acked %d %llu\n", written, static_cast<unsigned long long>(*revision));
    ++written;
  }
  if (!write_error.ok()) {
    (*watcher)->Cancel();
    watch_thread.join();
    return Fail(write_error.ToString());
  }
  std::printf("stopped %d\n", written);

  std::string line;
  while (std::getline(std::cin, line) && line.rfind("final ", 0) != 0) {
  }
  if (line.rfind("final ", 0) != 0) {  // stdin closed: the test gave up
    (*watcher)->Cancel();
    watch_thread.join();
    return Fail("stdin closed before \"final REV\"");
  }
  until.store(std::strtoull(line.c_str() + 6, nullptr, 10));
  watch_thread.join();
  if (!watch_error.empty()) return Fail(watch_error);
  if (watched.revision() != until.load()) {
    return Fail("the watch delivered revision " + std::to_string(watched.revision()) +
                ", the final one is " + std::to_string(until.load()));
  }
  for (const auto& [key, value] : watched.state()) {
    std::printf("watched %s\n", shmdict::testing::DigestLine(key, value.view()).c_str());
  }
  auto items = (*remote)->Items();
  if (!items.ok()) return Fail("items: " + items.status().ToString());
  for (const auto& [key, value] : *items) {
    std::printf("%s\n", shmdict::testing::DigestLine(key, value.view()).c_str());
  }
  std::printf("end %llu\n", static_cast<unsigned long long>(watched.revision()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "remote-write" && argc == 6) {
    return RemoteWrite(argv[2], argv[3], argv[4], std::atoi(argv[5]));
  }
  if (command == "local-write" && argc == 6) {
    return LocalWrite(argv[2], argv[3], std::atoi(argv[4]), std::atoi(argv[5]));
  }
  if (command == "pingpong" && argc == 5) return PingPong(argv[2], argv[3], std::atoi(argv[4]));
  if (command == "pod" && argc == 6) return Pod(argv[2], argv[3], argv[4], std::atoi(argv[5]));
  return Fail("usage: see the comment at the top of remote_worker.cc");
}
