#include "redis_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace shmdict::internal {
namespace {

int RemainingMs(Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// True when a server on 127.0.0.1:port answers "PING" with "+PONG" before the deadline; else
// false with *error saying why (connection refused while the server starts, most often).
bool AnswersPing(int port, Deadline deadline, std::string* error) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    *error = "connect 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno);
  } else if (send(fd, "PING\r\n", 6, MSG_NOSIGNAL) != 6) {
    *error = std::string("send PING: ") + std::strerror(errno);
  } else {
    std::string reply;
    while (reply.find("\r\n") == std::string::npos) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, RemainingMs(deadline)) <= 0) {
        *error = "no answer to PING";
        break;
      }
      char buffer[64];
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        *error = "the connection closed before PING was answered";
        break;
      }
      reply.append(buffer, static_cast<size_t>(n));
    }
    ok = reply.rfind("+PONG\r\n", 0) == 0;
    if (!ok && error->empty()) *error = "PING answered with '" + reply + "'";
  }
  close(fd);
  return ok;
}

}  // namespace

int FreeLoopbackPort(std::string* error) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return 0;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    *error = std::string("bind 127.0.0.1:0: ") + std::strerror(errno);
  } else {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

std::string RedisLauncher::FindServer() { return FindProgram("redis-server"); }

std::string RedisLauncher::Version(const std::string& program) {
  SpawnOptions spawn;
  spawn.path = program;
  spawn.argv = {program, "--version"};
  spawn.pipe_stdout = true;
  spawn.quiet = true;
  std::string error;
  std::unique_ptr<Subprocess> process = Subprocess::Start(spawn, &error);
  if (process == nullptr) return "";
  std::string line;
  const Deadline deadline = DeadlineIn(std::chrono::seconds(10));
  if (process->ReadLine(&line, deadline) != LineStatus::kLine) line.clear();
  process->Wait(deadline);
  // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=...".
  const size_t at = line.find("v=");
  if (at == std::string::npos) return "";
  return line.substr(at + 2, line.find(' ', at) - at - 2);
}

std::unique_ptr<RedisLauncher> RedisLauncher::Start(const RedisLaunchOptions& options,
                                                    std::string* error) {
  const std::string program = options.program.empty() ? FindServer() : options.program;
  if (program.empty()) {
    *error = "redis-server not found in PATH (package redis-server)";
    return nullptr;
  }
  std::unique_ptr<RedisLauncher> redis(new RedisLauncher());
  std::string last_error = "no attempt";
  for (int attempt = 0; attempt < options.attempts; ++attempt) {
    const int port = FreeLoopbackPort(&last_error);
    if (port == 0) break;
    SpawnOptions spawn;
    spawn.path = program;
    spawn.argv = {"redis-server",
                  "--port",
                  std::to_string(port),
                  "--bind",
                  "127.0.0.1",
                  "--save",
                  "",
                  "--appendonly",
                  "no",
                  "--dir",
                  options.dir,
                  "--daemonize",
                  "no",
                  "--loglevel",
                  "warning"};
    spawn.quiet = true;
    spawn.kill_with_parent = true;
    redis->process_ = Subprocess::Start(spawn, error);
    if (redis->process_ == nullptr) return nullptr;
    const Deadline deadline = DeadlineIn(options.ready_timeout);
    while (Clock::now() < deadline) {
      last_error.clear();
      if (AnswersPing(port, deadline, &last_error)) {
        redis->port_ = port;
        return redis;
      }
      // Waits 5 ms for the server to start listening, or to exit: a server that lost its port
      // to another program exits, and the next attempt takes another port.
      Pump({redis->process_.get()}, DeadlineIn(std::chrono::milliseconds(5)));
      if (redis->process_->reaped()) break;
    }
    redis->process_->Kill();
  }
  *error = "redis-server did not start: " + last_error;
  return nullptr;
}

}  // namespace shmdict::internal
