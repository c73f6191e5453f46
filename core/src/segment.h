// POSIX shared-memory segments: names, opening with errors that say what to do, mapping, listing
// and unlinking. shmdict names its segments "shmdict.<dict>" (main) and "shmdict.<dict>@..."
// (snapshots, large values, nested children); on Linux they live in /dev/shm.
//
// Thread-safety: free functions are thread-safe; a Mapping is a move-only owner of one mmap.
#ifndef SHMDICT_CORE_SEGMENT_H_
#define SHMDICT_CORE_SEGMENT_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmdict/status.h"

namespace shmdict::internal {

inline constexpr std::string_view kShmDir = "/dev/shm/";
inline constexpr std::string_view kShmPrefix = "shmdict.";

// "/shmdict.<segment>" for shm_open.
std::string ShmName(std::string_view segment);
// "/dev/shm/shmdict.<segment>": the file behind it, for stat and rename.
std::string SegmentPath(std::string_view segment);
std::string SnapshotSegment(std::string_view dict, uint64_t generation);
std::string BlobSegment(std::string_view dict, uint64_t revision);
// A snapshot segment no longer published, kept so that a builder can reuse its pages.
std::string RetiredSegment(std::string_view dict, uint64_t generation);

// Owns one mapping; unmaps on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t bytes) : addr_(addr), bytes_(bytes) {}
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return bytes_; }
  bool valid() const { return addr_ != nullptr; }
  // Grows or shrinks the mapping to `bytes` (mremap, which may move it): the pages it keeps stay
  // in this process's page tables. The file behind it must be at least `bytes` long.
  Status Resize(size_t bytes);

 private:
  void* addr_ = nullptr;
  size_t bytes_ = 0;
};

// Owns a file descriptor; closes on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// errno -> canonical status: ENOENT NOT_FOUND, EEXIST ALREADY_EXISTS, EACCES/EPERM
// PERMISSION_DENIED, ENOSPC/ENOMEM/EMFILE RESOURCE_EXHAUSTED, else INTERNAL.
Status ErrnoStatus(int err, const std::string& what);

// shm_open(ShmName(segment), flags, mode); `what` names the segment in errors.
Result<Fd> OpenSegment(std::string_view segment, int flags, mode_t mode);
// `populate`: map every page now (MAP_POPULATE), for a mapping about to be written in full.
Result<Mapping> MapSegment(int fd, size_t bytes, bool writable, bool populate = false);
// Creates segment exclusively with `bytes`, mode forced despite the umask; an existing name is
// replaced if replace_existing (leftovers of a writer that died mid-way).
// Creates `segment` with `bytes` of memory reserved up front (fallocate), so that a full /dev/shm
// is this RESOURCE_EXHAUSTED error instead of a SIGBUS on the first write to the mapping.
// `populate`: map every page now (MapSegment), for a segment about to be written in full.
Result<std::pair<Fd, Mapping>> CreateSegment(std::string_view segment, size_t bytes, mode_t mode,
                                             bool replace_existing, bool populate = false);
// Takes over the existing segment `from` under the new name `to`, resized to `bytes` and mapped
// writable with its pages already present: page faults on fresh tmpfs pages cost about 1 ms per
// MiB on the machines we measured, several times the copy itself, so reusing a retired
// snapshot's pages makes a snapshot build several times cheaper. Fails with UNAVAILABLE, changing
// nothing, while any process holds a shared flock on `from` (it still maps it). The returned fd
// holds an exclusive flock.
Result<std::pair<Fd, Mapping>> RecycleSegment(std::string_view from, std::string_view to,
                                              size_t bytes);
// RecycleSegment for a retired segment this process still maps writable (`held`: the fd it
// opened it with, holding a shared flock, and that mapping): the mapping is kept and resized
// instead of made anew, so a build writes into pages already in this process's page tables. On
// the VMs we measured, the first touch of a page through a new mapping costs 10-20 us even when
// the page is in tmpfs (shadow page tables), so copying 10 MiB into a recycled segment took 12-40
// ms through a fresh mapping and under 1 ms through a held one. UNAVAILABLE while another process
// maps `from`; NOT_FOUND when `from` no longer names the held file (someone unlinked it). On
// failure `held` is released.
Result<std::pair<Fd, Mapping>> RecycleHeldSegment(std::pair<Fd, Mapping> held,
                                                  std::string_view from, std::string_view to,
                                                  size_t bytes);
// Whether `segment` still names the file with inode `inode` (a dict's name still means that
// dict: not unlinked, not created again).
bool SegmentHasInode(std::string_view segment, uint64_t inode);
// Current size of the file behind fd.
Result<uint64_t> SegmentSize(int fd);
// Unlinks; ENOENT is OK (someone else did it).
void UnlinkSegmentQuietly(std::string_view segment);
// Unlinks every name of dict `name`: its main segment and everything named "NAME@..." (snapshots,
// large values, nested children and theirs). False if there was nothing to unlink.
bool UnlinkDictSegments(std::string_view name);
// Renames a segment (atomically, replacing `to` if it exists).
Status RenameSegment(std::string_view from, std::string_view to);

// Segment names (without "shmdict.") in /dev/shm that start with `prefix`, sorted.
std::vector<std::string> ListSegments(std::string_view prefix);
// The segments named `prefix` followed by a decimal number > 0 (a snapshot generation, a
// retired generation, a large value's revision) with that number, in increasing order. Names
// with anything else after the prefix (a nested child's segments) are left out.
std::vector<std::pair<uint64_t, std::string>> ListNumberedSegments(std::string_view prefix);

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_SEGMENT_H_
