#include "shmdict/bridge/presence.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <random>
#include <tuple>
#include <utility>

namespace shmdict::bridge {
namespace {

constexpr char kDefaultDir[] = "/dev/shm/shmdict-bridges";
constexpr char kSuffix[] = ".bridge";
constexpr std::string_view kMagic = "shmdict-bridge 1\n";
constexpr std::string_view kEnd = "end ";
// A record larger than this is not one of ours.
constexpr size_t kMaxRecordBytes = size_t{4} << 20;
// A torn read (the writer rewrites in place) is retried this many times before the record is
// skipped; a rewrite takes microseconds.
constexpr int kReadAttempts = 5;

uint64_t Fnv1a64(std::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::string Hex(uint64_t value) {
  char buf[17];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, 16);
  return std::string(buf, end);
}

template <typename T>
bool ParseNumber(std::string_view text, T* value, int base = 10) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value, base);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

Status Errno(const std::string& what, const std::string& path) {
  const int error = errno;
  const StatusCode code = error == EACCES || error == EPERM     ? StatusCode::kPermissionDenied
                          : error == ENOENT || error == ENOTDIR ? StatusCode::kNotFound
                          : error == ENOSPC || error == EDQUOT || error == EMFILE
                              ? StatusCode::kResourceExhausted
                              : StatusCode::kUnavailable;
  return Status(code,
                "bridge registry: cannot " + what + " '" + path + "': " + std::strerror(error));
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The whole file from offset 0; nullopt on a read error or an oversized file.
std::optional<std::string> ReadAll(int fd) {
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = pread(fd, buf, sizeof(buf), static_cast<off_t>(text.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxRecordBytes) return std::nullopt;
  }
}

// A line's value may not hold a newline; a name or address that does is left out of the record.
bool OneLine(std::string_view text) { return text.find('\n') == std::string_view::npos; }

}  // namespace

std::string RegistryDir() {
  const char* dir = std::getenv("SHMDICT_BRIDGE_REGISTRY_DIR");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string(kDefaultDir);
}

std::string FormatUtc(int64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm utc = {};
  if (gmtime_r(&t, &utc) == nullptr) return std::to_string(unix_seconds);
  char buf[32];
  const size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return std::string(buf, n);
}

std::string FormatRecord(const BridgeRecord& record) {
  std::string text(kMagic);
  text += "pid " + std::to_string(record.pid) + "\n";
  // The ISO form is for people reading the file; readers take the number.
  text += "since " + std::to_string(record.since_unix) + " " + FormatUtc(record.since_unix) + "\n";
  for (const std::string& address : record.addresses) {
    if (OneLine(address)) text += "listen " + address + "\n";
  }
  // "dict COUNT NAME": the name last, so that it is the rest of the line.
  for (const auto& [name, subscribers] : record.dicts) {
    if (OneLine(name)) text += "dict " + std::to_string(subscribers) + " " + name + "\n";
  }
  text += std::string(kEnd) + Hex(Fnv1a64(text)) + "\n";
  return text;
}

std::optional<BridgeRecord> ParseRecord(std::string_view text) {
  if (text.substr(0, kMagic.size()) != kMagic) return std::nullopt;
  BridgeRecord record;
  bool have_pid = false;
  bool have_since = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find('\n', pos);
    if (newline == std::string_view::npos) return std::nullopt;  // truncated
    const std::string_view line = text.substr(pos, newline - pos);
    if (line.substr(0, kEnd.size()) == kEnd) {
      uint64_t checksum = 0;
      if (!ParseNumber(line.substr(kEnd.size()), &checksum, 16) ||
          checksum != Fnv1a64(text.substr(0, pos)) || !have_pid || !have_since) {
        return std::nullopt;
      }
      return record;
    }
    pos = newline + 1;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, space);
    const std::string_view value = line.substr(space + 1);
    if (key == "pid") {
      if (!ParseNumber(value, &record.pid) || record.pid <= 0) return std::nullopt;
      have_pid = true;
    } else if (key == "since") {
      if (!ParseNumber(value.substr(0, value.find(' ')), &record.since_unix)) return std::nullopt;
      have_since = true;
    } else if (key == "listen") {
      if (value.empty()) return std::nullopt;
      record.addresses.emplace_back(value);
    } else if (key == "dict") {
      const size_t name_at = value.find(' ');
      uint64_t subscribers = 0;
      if (name_at == std::string_view::npos || name_at + 1 == value.size() ||
          !ParseNumber(value.substr(0, name_at), &subscribers)) {
        return std::nullopt;
      }
      record.dicts[std::string(value.substr(name_at + 1))] = subscribers;
    }
  }
  return std::nullopt;  // no "end" line: torn or truncated
}

std::vector<BridgeRecord> ListLiveBridges(const std::string& dir) {
  std::vector<BridgeRecord> live;
  DIR* listing = opendir(dir.c_str());
  if (listing == nullptr) return live;
  std::vector<std::string> names;
  while (const dirent* entry = readdir(listing)) {
    const std::string_view name = entry->d_name;
    if (name.size() > std::strlen(kSuffix) && name.ends_with(kSuffix)) names.emplace_back(name);
  }
  closedir(listing);

  bool removed_stale = false;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    // O_NONBLOCK: a FIFO planted under a record's name must not hang the reader.
    const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;  // removed meanwhile (a bridge exiting), or not ours to read
    struct stat opened = {};
    if (fstat(fd, &opened) != 0 || !S_ISREG(opened.st_mode)) {
      close(fd);
      continue;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
      // Nobody holds its lock: its bridge is gone. Remove it unless the name was meanwhile given
      // to another file (it cannot be: names are unique per bridge; the check is cheap).
      struct stat named = {};
      if (stat(path.c_str(), &named) == 0 && SameFile(opened, named)) {
        unlink(path.c_str());
        removed_stale = true;
      }
      close(fd);
      continue;
    }
    if (errno != EWOULDBLOCK) {
      close(fd);
      continue;
    }
    std::optional<BridgeRecord> record;
    for (int attempt = 0; attempt < kReadAttempts && !record; ++attempt) {
      if (attempt > 0) usleep(2000);
      std::optional<std::string> text = ReadAll(fd);
      if (!text) break;
      record = ParseRecord(*text);
    }
    close(fd);
    if (!record) continue;
    record->path = path;
    live.push_back(std::move(*record));
  }
  // As a bridge's exit does: no empty directory left behind (a starting bridge makes it again).
  if (removed_stale && live.empty()) rmdir(dir.c_str());
  std::sort(live.begin(), live.end(), [](const BridgeRecord& a, const BridgeRecord& b) {
    return std::tie(a.since_unix, a.pid, a.path) < std::tie(b.since_unix, b.pid, b.path);
  });
  return live;
}

Result<std::unique_ptr<PresencePublisher>> PresencePublisher::Start(Options options) {
  std::random_device entropy;
  const int64_t pid = getpid();
  for (int attempt = 0;; ++attempt) {
    // Inside the loop: the last bridge to exit removes the empty directory (no leftover in
    // /dev/shm), possibly between this mkdir and the open below; the open then fails with
    // ENOENT and the next attempt makes the directory again.
    if (mkdir(options.dir.c_str(), options.dir == kDefaultDir ? 01777 : 0755) == 0) {
      // mkdir's mode is cut by the umask; the shared default directory must be usable by every
      // user's bridges, with the sticky bit so that none removes another's live record.
      if (options.dir == kDefaultDir) chmod(options.dir.c_str(), 01777);
    } else if (errno != EEXIST) {
      return Errno("create the directory", options.dir);
    }
    const uint64_t nonce = (uint64_t{entropy()} << 32) | entropy();
    const std::string path = options.dir + "/" + std::to_string(pid) + "-" + Hex(nonce) + kSuffix;
    // O_CLOEXEC: a child process inheriting the descriptor would keep the lock, and so the
    // record, alive after the bridge died.
    // 0600 until locked: no other user can open it, and so none can take its lock first.
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      if ((errno == EEXIST || errno == ENOENT) && attempt < 3) continue;
      return Errno("create", path);
    }
    // Until this lock is held, a reader (of this user) may find the new, empty file unlocked and
    // remove it as a dead bridge's; such a reader holds its lock only while removing, so wait a
    // little, never forever: the record is advisory and must not hold up the bridge. Once the
    // lock is held no reader removes the file; if one did before, the name is gone: start over.
    bool locked = false;
    for (int wait = 0; wait < 100 && !locked; ++wait) {
      if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        locked = true;
      } else if (errno == EWOULDBLOCK || errno == EINTR) {
        usleep(10000);
      } else {
        break;
      }
    }
    if (!locked) {
      Status failed = Errno("lock", path);
      close(fd);
      unlink(path.c_str());
      return failed;
    }
    fchmod(fd, 0644);  // now readable by every local user, whatever the umask
    struct stat opened = {};
    struct stat named = {};
    if (fstat(fd, &opened) != 0 || stat(path.c_str(), &named) != 0 || !SameFile(opened, named)) {
      close(fd);
      if (attempt < 3) continue;
      errno = ENOENT;
      return Errno("keep", path);
    }
    const int64_t since = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    std::unique_ptr<PresencePublisher> publisher(
        new PresencePublisher(std::move(options), fd, path, since));
    publisher->Publish();
    publisher->thread_ = std::thread([p = publisher.get()] { p->Run(); });
    return publisher;
  }
}

PresencePublisher::PresencePublisher(Options options, int fd, std::string path, int64_t since_unix)
    : options_(std::move(options)), fd_(fd), path_(std::move(path)), since_unix_(since_unix) {}

PresencePublisher::~PresencePublisher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Removed while still locked, so no reader ever sees it unlocked under its name.
  unlink(path_.c_str());
  close(fd_);
  // The last one out removes the directory; it fails (ENOTEMPTY, EPERM) while others are there.
  rmdir(options_.dir.c_str());
}

void PresencePublisher::Publish() {
  BridgeRecord record;
  record.pid = getpid();
  record.since_unix = since_unix_;
  record.addresses = options_.addresses;
  if (options_.counts) record.dicts = options_.counts();
  std::string text = FormatRecord(record);
  if (text == written_) return;
  // New text first, then the length: a reader in between sees the new record followed by the old
  // one's tail, which it ignores (after "end"), or a torn record, which fails its checksum.
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = pwrite(fd_, text.data() + done, text.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      written_.clear();  // unknown content: rewrite next time
      return;
    }
    done += static_cast<size_t>(n);
  }
  if (ftruncate(fd_, static_cast<off_t>(text.size())) != 0) {
    written_.clear();
    return;
  }
  written_ = std::move(text);
}

void PresencePublisher::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (wake_.wait_for(lock, options_.interval, [this] { return stop_; })) return;
    lock.unlock();
    Publish();
    lock.lock();
  }
}

}  // namespace shmdict::bridge
