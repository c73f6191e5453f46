#include "segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace shmdict::internal {

std::string ShmName(std::string_view segment) {
  std::string out = "/";
  out += kShmPrefix;
  out += segment;
  return out;
}

std::string SnapshotSegment(std::string_view dict, uint64_t generation) {
  return std::string(dict) + "@s" + std::to_string(generation);
}

std::string BlobSegment(std::string_view dict, uint64_t revision) {
  return std::string(dict) + "@b" + std::to_string(revision);
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (addr_ != nullptr) munmap(addr_, bytes_);
    addr_ = std::exchange(o.addr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (addr_ != nullptr) munmap(addr_, bytes_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) close(fd_);
}

Status ErrnoStatus(int err, const std::string& what) {
  std::string msg = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status(StatusCode::kNotFound, msg);
    case EEXIST:
      return Status(StatusCode::kAlreadyExists, msg);
    case EACCES:
    case EPERM:
      return Status(StatusCode::kPermissionDenied, msg);
    case ENOSPC:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EFBIG:
      return Status(StatusCode::kResourceExhausted, msg);
    case EINVAL:
    case ENAMETOOLONG:
      return Status(StatusCode::kInvalidArgument, msg);
    default:
      return Status(StatusCode::kInternal, msg);
  }
}

Result<Fd> OpenSegment(std::string_view segment, int flags, mode_t mode) {
  int fd = shm_open(ShmName(segment).c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus(errno, "segment '" + std::string(segment) + "'");
  return Fd(fd);
}

Result<Mapping> MapSegment(int fd, size_t bytes, bool writable) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr = mmap(nullptr, bytes, prot, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, "mmap");
  return Mapping(addr, bytes);
}

Result<std::pair<Fd, Mapping>> CreateSegment(std::string_view segment, size_t bytes, mode_t mode,
                                             bool replace_existing) {
  auto fd = OpenSegment(segment, O_RDWR | O_CREAT | O_EXCL, mode);
  if (!fd.ok() && fd.status().code() == StatusCode::kAlreadyExists && replace_existing) {
    UnlinkSegmentQuietly(segment);
    fd = OpenSegment(segment, O_RDWR | O_CREAT | O_EXCL, mode);
  }
  if (!fd.ok()) return fd.status();
  // shm_open applies the umask; the caller's mode is what the user asked for.
  if (fchmod(fd->get(), mode) != 0 || ftruncate(fd->get(), static_cast<off_t>(bytes)) != 0) {
    int err = errno;
    UnlinkSegmentQuietly(segment);
    return ErrnoStatus(err, "sizing segment '" + std::string(segment) + "'");
  }
  auto map = MapSegment(fd->get(), bytes, true);
  if (!map.ok()) {
    UnlinkSegmentQuietly(segment);
    return map.status();
  }
  return std::make_pair(std::move(*fd), std::move(*map));
}

Result<uint64_t> SegmentSize(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  return static_cast<uint64_t>(st.st_size);
}

namespace {
std::atomic<uint32_t> cached_pid{0};
void ForgetPid() { cached_pid.store(0, std::memory_order_relaxed); }
}  // namespace

uint32_t CurrentPid() {
  uint32_t pid = cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    static const int registered = pthread_atfork(nullptr, nullptr, ForgetPid);
    (void)registered;
    pid = static_cast<uint32_t>(getpid());
    cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

void UnlinkSegmentQuietly(std::string_view segment) { shm_unlink(ShmName(segment).c_str()); }

std::vector<std::string> ListSegments(std::string_view prefix) {
  std::vector<std::string> out;
  DIR* dir = opendir(std::string(kShmDir).c_str());
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    std::string_view file = e->d_name;
    if (!file.starts_with(kShmPrefix)) continue;
    file.remove_prefix(kShmPrefix.size());
    if (file.starts_with(prefix)) out.emplace_back(file);
  }
  closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace shmdict::internal
