// RedisLauncher: the one way tests and benchmarks start a private redis-server. It listens on
// 127.0.0.1 only, at a free port, without persistence (--save "" --appendonly no) and with its
// working directory where the caller says; the launcher returns once the server answers PING.
// Like BridgeLauncher, it reports failures as an error string and depends on neither GoogleTest
// nor the benchmark harness (nor on hiredis: the readiness check speaks RESP over a socket).
//
//   RedisLaunchOptions options;
//   options.dir = "/dev/shm/mybench_redis";  // must exist
//   std::string error;
//   std::unique_ptr<RedisLauncher> redis = RedisLauncher::Start(options, &error);
//   if (redis == nullptr) ...error...
//   redisConnect("127.0.0.1", redis->port());
//
// Thread-safety: thread-compatible; use a RedisLauncher from the thread that started it (the
// server is killed when that thread dies). Lifetime: destroying a RedisLauncher SIGKILLs and
// reaps the server; the directory and what the server wrote there stay the caller's.
#ifndef SHMDICT_TESTS_SUPPORT_REDIS_LAUNCHER_H_
#define SHMDICT_TESTS_SUPPORT_REDIS_LAUNCHER_H_

#include <chrono>
#include <memory>
#include <string>

#include "subprocess.h"

namespace shmdict::internal {

struct RedisLaunchOptions {
  std::string program;  // redis-server; empty: RedisLauncher::FindServer()
  std::string dir;      // the server's --dir (an existing directory)
  // How long one attempt waits for PING to be answered.
  Clock::duration ready_timeout = std::chrono::seconds(10);
  // A free port can be taken by another program before the server binds it: then the server
  // exits and the launcher tries again with another port, this many times in all.
  int attempts = 5;
};

class RedisLauncher {
 public:
  // redis-server on $PATH, else in /usr/sbin or /usr/bin; "" when there is none.
  static std::string FindServer();
  // "7.0.15" from `PROGRAM --version`; "" when it does not run or says something else.
  static std::string Version(const std::string& program);

  // Starts the server and waits until it answers PING. On failure (no redis-server, no free
  // port, no answer after every attempt) returns nullptr and sets *error to the cause; nothing is
  // left running.
  static std::unique_ptr<RedisLauncher> Start(const RedisLaunchOptions& options,
                                              std::string* error);
  RedisLauncher(const RedisLauncher&) = delete;
  RedisLauncher& operator=(const RedisLauncher&) = delete;
  ~RedisLauncher() = default;

  // The TCP port on 127.0.0.1.
  int port() const { return port_; }
  // The server's process (its pid for memory readings).
  Subprocess& process() { return *process_; }
  // SIGKILLs and reaps the server now (the destructor does the same).
  void Kill() { process_->Kill(); }

 private:
  RedisLauncher() = default;

  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
};

// A port on 127.0.0.1 that nothing listened on a moment ago (bind to port 0, read it, close);
// 0 (and *error set) when the kernel gave none.
int FreeLoopbackPort(std::string* error);

}  // namespace shmdict::internal

#endif  // SHMDICT_TESTS_SUPPORT_REDIS_LAUNCHER_H_
