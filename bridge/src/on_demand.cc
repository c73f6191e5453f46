#include "on_demand.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/server_posix.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

extern char** environ;

namespace shmdict::bridge {

namespace {

// How long a caller of --ensure waits for the lock (another caller starting a bridge) and for its
// own bridge to print "ready".
constexpr auto kEnsureTimeout = std::chrono::seconds(60);

// Does anything accept a connection at `address`? (A bridge starting or serving; the port being
// taken by another program also means a bridge could not start there.)
bool Answers(const ListenAddress& address) {
  if (address.is_unix) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un target{};
    target.sun_family = AF_UNIX;
    std::strncpy(target.sun_path, address.unix_path.c_str(), sizeof(target.sun_path) - 1);
    const bool answered = connect(fd, reinterpret_cast<sockaddr*>(&target), sizeof(target)) == 0;
    close(fd);
    return answered;
  }
  const std::string port = std::to_string(address.port);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found) != 0) return false;
  bool answered = false;
  for (addrinfo* ai = found; ai != nullptr && !answered; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      answered = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof(error);
      answered = poll(&p, 1, 2000) == 1 &&
                 getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
    }
    close(fd);
  }
  freeaddrinfo(found);
  return answered;
}

// A directory only this user can write: `dir` must be one already (not a symlink, owned by the
// effective uid, no group or other write).
Status CheckPrivateDir(const std::string& dir, bool exact_0700) {
  struct stat info {};
  if (lstat(dir.c_str(), &info) != 0) {
    return Status(StatusCode::kNotFound, "cannot stat " + dir + ": " + std::strerror(errno));
  }
  const mode_t mode = info.st_mode & 07777;
  if (S_ISLNK(info.st_mode) || !S_ISDIR(info.st_mode) || info.st_uid != geteuid() ||
      (exact_0700 ? mode != 0700 : (mode & 022) != 0)) {
    return Status(StatusCode::kPermissionDenied,
                  dir + " is not a private directory of uid " + std::to_string(geteuid()) +
                      " (a symlink, another owner, or writable by others): not putting the "
                      "--ensure lock there");
  }
  return Status::Ok();
}

// Where the lock of `address` lives. Beside a Unix socket (its directory is the operator's
// choice, as the socket's is); for TCP in a directory of this user's only -- $XDG_RUNTIME_DIR,
// else $TMPDIR/shmdict-bridge-EUID (else /tmp/...), created 0700 -- never in a shared directory
// where another user could plant a symlink for a root bridge to follow.
Result<std::string> EnsureLockPath(const ListenAddress& address) {
  if (address.is_unix) return address.unix_path + ".ensure.lock";
  std::string dir;
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && *runtime != '\0') {
    dir = runtime;
    Status private_dir = CheckPrivateDir(dir, false);
    if (!private_dir.ok()) return private_dir;
  } else {
    const char* tmp = std::getenv("TMPDIR");
    dir = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/shmdict-bridge-" +
          std::to_string(geteuid());
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status(StatusCode::kPermissionDenied,
                    "cannot create " + dir + ": " + std::strerror(errno));
    }
    Status private_dir = CheckPrivateDir(dir, true);
    if (!private_dir.ok()) return private_dir;
  }
  std::string name = address.spec;
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') c = '_';
  }
  return dir + "/shmdict-bridge-ensure-" + name + ".lock";
}

int EnsureFail(const std::string& message) {
  std::fprintf(stderr, "shmdict-bridge --ensure: %s\n", message.c_str());
  return 2;
}

}  // namespace

int EnsureBridge(const ListenAddress& address, int argc, char** argv) {
  if (!address.is_unix && address.port == 0) {
    return EnsureFail(
        "needs a fixed --listen address: with port 0 every call would start a bridge");
  }
  Result<std::string> where = EnsureLockPath(address);
  if (!where.ok()) return EnsureFail(where.status().message());
  const std::string& lock_path = *where;
  // O_NOFOLLOW: a symlink planted at the lock's path is refused, never followed.
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) return EnsureFail("cannot open " + lock_path + ": " + std::strerror(errno));
  // Closed on every return path, releasing the lock; the bridge never inherits it (O_CLOEXEC).
  struct CloseOnReturn {
    int fd;
    ~CloseOnReturn() { close(fd); }
  } lock_guard{lock_fd};
  struct stat lock_info {};
  if (fstat(lock_fd, &lock_info) != 0 || !S_ISREG(lock_info.st_mode) ||
      lock_info.st_uid != geteuid()) {
    return EnsureFail(lock_path + " is not a regular file of uid " + std::to_string(geteuid()) +
                      ": not using it as the --ensure lock");
  }
  const auto deadline = std::chrono::steady_clock::now() + kEnsureTimeout;
  while (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return EnsureFail("flock " + lock_path + ": " + std::strerror(errno));
    if (std::chrono::steady_clock::now() > deadline) {
      return EnsureFail("another --ensure has held " + lock_path + " for over 60 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (Answers(address)) {
    std::printf("already serving %s\n", address.spec.c_str());
    return 0;
  }

  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ensure") != 0) args.emplace_back(argv[i]);
  }
  std::vector<char*> child_argv;
  for (std::string& arg : args) child_argv.push_back(arg.data());
  child_argv.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return EnsureFail(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // A new session: the bridge outlives this command and its terminal's hang-up.
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
  pid_t pid = -1;
  const int spawned =
      posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, child_argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return EnsureFail(std::string("cannot start the bridge: ") + std::strerror(spawned));
  }
  // Relay the bridge's start-up lines; "ready" means it serves, and the lock may go.
  std::string buffer;
  bool ready = false;
  char chunk[4096];
  while (!ready) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{out[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = read(out[0], chunk, sizeof(chunk));
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t end;
    while (!ready && (end = buffer.find('\n')) != std::string::npos) {
      const std::string line = buffer.substr(0, end);
      buffer.erase(0, end + 1);
      std::printf("%s\n", line.c_str());
      ready = line == "ready";
    }
  }
  close(out[0]);
  if (ready) {
    std::printf("started pid %d\n", static_cast<int>(pid));
    return 0;
  }
  std::fprintf(stderr, "%s", buffer.c_str());
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);  // not ready in time: leave no half-started bridge behind
    waitpid(pid, &status, 0);
    return EnsureFail("the bridge did not become ready within 60 s");
  }
  return EnsureFail("the bridge exited before it was ready (its messages are above)");
}

Result<std::vector<int>> TakeActivationSockets() {
  std::vector<int> fds;
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  if (pid == nullptr || count == nullptr) return fds;
  const bool ours = std::strtol(pid, nullptr, 10) == static_cast<long>(getpid());
  const long n = std::strtol(count, nullptr, 10);
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  if (!ours) return fds;       // meant for a process that exec'ed us: not ours to take
  constexpr int kFirstFd = 3;  // SD_LISTEN_FDS_START
  for (int fd = kFirstFd; fd < kFirstFd + n; ++fd) {
    int listening = 0;
    socklen_t length = sizeof(listening);
    int type = 0;
    socklen_t type_length = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) != 0 || !listening ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0 || type != SOCK_STREAM) {
      return Status(StatusCode::kInvalidArgument,
                    "LISTEN_FDS: fd " + std::to_string(fd) +
                        " is not a listening stream socket (the socket unit needs Accept=no and "
                        "ListenStream=)");
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fds.push_back(fd);
  }
  return fds;
}

std::string DescribeSocket(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return "fd " + std::to_string(fd);
  }
  char host[INET6_ADDRSTRLEN] = "";
  switch (storage.ss_family) {
    case AF_INET: {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
      return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
      return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    case AF_UNIX:
      return "unix:" + std::string(reinterpret_cast<const sockaddr_un*>(&storage)->sun_path);
    default:
      return "fd " + std::to_string(fd);
  }
}

ActivatedListeners::ActivatedListeners(std::vector<int> fds, grpc::Server* server,
                                       std::function<void()> on_accept)
    : fds_(std::move(fds)), server_(server), on_accept_(std::move(on_accept)) {
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    spdlog::error("socket activation: pipe: {}", std::strerror(errno));
    return;
  }
  thread_ = std::thread([this] { Run(); });
}

ActivatedListeners::~ActivatedListeners() { Stop(); }

void ActivatedListeners::Stop() {
  if (thread_.joinable()) {
    const char byte = 0;
    (void)!write(wake_[1], &byte, 1);
    thread_.join();
  }
  for (int fd : fds_) close(fd);
  fds_.clear();
  for (int& fd : wake_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

void ActivatedListeners::Run() {
  std::vector<pollfd> polled;
  for (int fd : fds_) polled.push_back({fd, POLLIN, 0});
  polled.push_back({wake_[0], POLLIN, 0});
  for (;;) {
    if (poll(polled.data(), polled.size(), -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("socket activation: poll: {}", std::strerror(errno));
      return;
    }
    if (polled.back().revents != 0) return;  // Stop()
    for (size_t i = 0; i + 1 < polled.size(); ++i) {
      if (polled[i].revents == 0) continue;
      // Drain the backlog: the listening fd is non-blocking, EAGAIN ends the round.
      for (;;) {
        const int connection =
            accept4(polled[i].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (connection < 0) {
          if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
            spdlog::warn("socket activation: accept on {}: {}", DescribeSocket(polled[i].fd),
                         std::strerror(errno));
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // EMFILE: back off
          }
          break;
        }
        if (on_accept_) on_accept_();
        grpc::AddInsecureChannelFromFd(server_, connection);  // the server owns it now
      }
    }
  }
}

}  // namespace shmdict::bridge
