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
// Every failure prints "error ..." and exits 1.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"

namespace {

using shmdict::Value;

int Fail(const std::string& what) {
  std::printf("error %s\n", what.c_str());
  std::fflush(stdout);
  return 1;
}

int RemoteWrite(const std::string& address, const std::string& dict, const std::string& prefix,
                int count) {
  shmdict::RemoteOptions options{.address = address, .dict = dict, .mirror = false};
  options.call_timeout = std::chrono::seconds(5);
  options.open_timeout = std::chrono::seconds(30);
  auto remote = shmdict::RemoteDict::Open(options);
  if (!remote.ok()) return Fail(remote.status().ToString());
  for (int i = 0; i < count; ++i) {
    const std::string key = prefix + "-" + std::to_string(i);
    for (;;) {
      auto revision = (*remote)->Set(key, Value::Int(i));
      if (revision.ok()) {
        std::printf("acked %s %llu\n", key.c_str(), static_cast<unsigned long long>(*revision));
        std::fflush(stdout);
        break;
      }
      const auto code = revision.status().code();
      if (code != shmdict::StatusCode::kUnavailable &&
          code != shmdict::StatusCode::kDeadlineExceeded) {
        return Fail(revision.status().ToString());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
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
  auto local = shmdict::Dict::ListNames();
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
  return Fail("usage: see the comment at the top of remote_worker.cc");
}
