#include "segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#if defined(__SANITIZE_THREAD__)
#define SHMDICT_UNDER_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SHMDICT_UNDER_THREAD_SANITIZER 1
#endif
#endif
#ifndef SHMDICT_UNDER_THREAD_SANITIZER
#define SHMDICT_UNDER_THREAD_SANITIZER 0
#endif

namespace shmdict::internal {

std::string ShmName(std::string_view segment) {
  std::string out = "/";
  out += kShmPrefix;
  out += segment;
  return out;
}

std::string SegmentPath(std::string_view segment) {
  return std::string(kShmDir) + std::string(kShmPrefix) + std::string(segment);
}

std::string SnapshotSegment(std::string_view dict, uint64_t generation) {
  return std::string(dict) + "@s" + std::to_string(generation);
}

std::string RetiredSegment(std::string_view dict, uint64_t generation) {
  return std::string(dict) + "@r" + std::to_string(generation);
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

Status Mapping::Resize(size_t bytes) {
  if (bytes == bytes_) return Status::Ok();
  void* addr = mremap(addr_, bytes_, bytes, MREMAP_MAYMOVE);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, "mremap");
  addr_ = addr;
  bytes_ = bytes;
  return Status::Ok();
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
  if (fd < 0) return ErrnoStatus(errno, "segment " + QuoteForMessage(segment));
  return Fd(fd);
}

Result<Mapping> MapSegment(int fd, size_t bytes, bool writable, bool populate) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* addr = mmap(nullptr, bytes, prot, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  if (addr == MAP_FAILED) return ErrnoStatus(errno, "mmap");
  return Mapping(addr, bytes);
}

namespace {

Status Reserve(int fd, size_t bytes, std::string_view segment) {
  if (bytes == 0 || fallocate(fd, 0, 0, static_cast<off_t>(bytes)) == 0) return Status::Ok();
  const int err = errno;
  if (err == EOPNOTSUPP) return Status::Ok();  // not tmpfs: pages come on first touch
  if (err == ENOSPC) {
    return Status(StatusCode::kResourceExhausted,
                  "no room for " + std::to_string(bytes) + " bytes of segment " +
                      QuoteForMessage(segment) + " in " + std::string(kShmDir) +
                      " (it is full: unlink unused dicts or enlarge it)");
  }
  return ErrnoStatus(err, "reserving segment " + QuoteForMessage(segment));
}

}  // namespace

Result<std::pair<Fd, Mapping>> CreateSegment(std::string_view segment, size_t bytes, mode_t mode,
                                             bool replace_existing, bool populate) {
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
    return ErrnoStatus(err, "sizing segment " + QuoteForMessage(segment));
  }
  if (Status reserved = Reserve(fd->get(), bytes, segment); !reserved.ok()) {
    UnlinkSegmentQuietly(segment);
    return reserved;
  }
  auto map = MapSegment(fd->get(), bytes, true, populate);
  if (!map.ok()) {
    UnlinkSegmentQuietly(segment);
    return map.status();
  }
  return std::make_pair(std::move(*fd), std::move(*map));
}

namespace {

// The step both recycle paths share, with the exclusive flock held: `from` becomes `to`, sized
// and reserved for `bytes`. On failure after the rename, `to` is unlinked.
Status RenameAndSize(int fd, std::string_view from, std::string_view to, size_t bytes) {
  if (Status renamed = RenameSegment(from, to); !renamed.ok()) return renamed;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    UnlinkSegmentQuietly(to);
    return ErrnoStatus(err, "sizing segment " + QuoteForMessage(to));
  }
  if (Status reserved = Reserve(fd, bytes, to); !reserved.ok()) {
    UnlinkSegmentQuietly(to);
    return reserved;
  }
  return Status::Ok();
}

}  // namespace

Result<std::pair<Fd, Mapping>> RecycleSegment(std::string_view from, std::string_view to,
                                              size_t bytes) {
  auto fd = OpenSegment(from, O_RDWR, 0);
  if (!fd.ok()) return fd.status();
  if (flock(fd->get(), LOCK_EX | LOCK_NB) != 0) {
    return Status(StatusCode::kUnavailable,
                  "segment " + QuoteForMessage(from) + " is still mapped");
  }
  if (Status taken = RenameAndSize(fd->get(), from, to, bytes); !taken.ok()) return taken;
  auto map = MapSegment(fd->get(), bytes, /*writable=*/true, /*populate=*/true);
  if (!map.ok()) {
    UnlinkSegmentQuietly(to);
    return map.status();
  }
  return std::make_pair(std::move(*fd), std::move(*map));
}

Result<std::pair<Fd, Mapping>> RecycleHeldSegment(std::pair<Fd, Mapping> held,
                                                  std::string_view from, std::string_view to,
                                                  size_t bytes) {
  auto& [fd, map] = held;
  // Converting our shared flock: fails while any other process holds one (it maps the segment).
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return Status(StatusCode::kUnavailable,
                  "segment " + QuoteForMessage(from) + " is still mapped");
  }
  // The name must still lead to our file: cleanup in another process may have unlinked it, and a
  // newer segment may carry the name since.
  struct stat ours, named;
  auto by_name = OpenSegment(from, O_RDONLY, 0);
  if (!by_name.ok() || fstat(fd.get(), &ours) != 0 || fstat(by_name->get(), &named) != 0 ||
      ours.st_ino != named.st_ino || ours.st_dev != named.st_dev) {
    return Status(StatusCode::kNotFound, "segment " + QuoteForMessage(from) + " is gone");
  }
  if (Status taken = RenameAndSize(fd.get(), from, to, bytes); !taken.ok()) return taken;
#if SHMDICT_UNDER_THREAD_SANITIZER
  // ThreadSanitizer intercepts mmap and munmap but not mremap: after one, its shadow of the range
  // still describes whatever this process mapped at that address before, and it reports races
  // with that. Under it, a size change maps the segment afresh (as RecycleSegment does); the
  // pages are reused all the same, only not this mapping's page-table entries.
  if (map.size() != bytes) {
    auto fresh = MapSegment(fd.get(), bytes, /*writable=*/true, /*populate=*/true);
    if (!fresh.ok()) {
      UnlinkSegmentQuietly(to);
      return fresh.status();
    }
    map = std::move(*fresh);
  }
#else
  const size_t kept = map.size();
  if (Status resized = map.Resize(bytes); !resized.ok()) {
    UnlinkSegmentQuietly(to);
    return resized;
  }
#ifdef MADV_POPULATE_WRITE  // glibc 2.35 and later name it
  if (bytes > kept) {
    // The grown tail is not in our page tables: faulting it in page by page while the build
    // writes it cost a fifth of the builder's time in a 1M-key import (on a VM, where each fault
    // traps). One call maps it all, like MAP_POPULATE for a fresh mapping. Best effort: a kernel
    // without MADV_POPULATE_WRITE (before 5.14) leaves the pages to fault in as before.
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t from = kept / page * page;
    madvise(map.data() + from, bytes - from, MADV_POPULATE_WRITE);
  }
#endif
#endif
  return held;
}

bool SegmentHasInode(std::string_view segment, uint64_t inode) {
  struct stat st {};
  return stat(SegmentPath(segment).c_str(), &st) == 0 && static_cast<uint64_t>(st.st_ino) == inode;
}

Result<uint64_t> SegmentSize(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  return static_cast<uint64_t>(st.st_size);
}

void UnlinkSegmentQuietly(std::string_view segment) { shm_unlink(ShmName(segment).c_str()); }

bool UnlinkDictSegments(std::string_view name) {
  bool found = shm_unlink(ShmName(name).c_str()) == 0;
  for (const std::string& segment : ListSegments(std::string(name) + "@")) {
    UnlinkSegmentQuietly(segment);
    found = true;
  }
  return found;
}

Status RenameSegment(std::string_view from, std::string_view to) {
  if (rename(SegmentPath(from).c_str(), SegmentPath(to).c_str()) != 0) {
    return ErrnoStatus(errno, "renaming segment " + QuoteForMessage(from));
  }
  return Status::Ok();
}

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

std::vector<std::pair<uint64_t, std::string>> ListNumberedSegments(std::string_view prefix) {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (std::string& segment : ListSegments(prefix)) {
    const std::string_view rest = std::string_view(segment).substr(prefix.size());
    if (rest.empty() || rest.size() > 19 ||
        rest.find_first_not_of("0123456789") != std::string_view::npos) {
      continue;
    }
    const uint64_t number = std::strtoull(std::string(rest).c_str(), nullptr, 10);
    if (number != 0) out.emplace_back(number, std::move(segment));
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace shmdict::internal
