// Bridge presence: an advisory registry of the shmdict-bridge processes running on this host, so
// that `shmdict ls`, `shmdict status NAME` and `shmdict bridges` can show which bridges serve a
// dict (addresses, pid, since when, Watch subscribers).
//
// Where: one file per bridge in RegistryDir() (/dev/shm/shmdict-bridges, or
// $SHMDICT_BRIDGE_REGISTRY_DIR), named "<pid>-<random>.bridge". Putting it on /dev/shm makes the
// registry visible wherever the dicts are, e.g. to every container of a pod sharing /dev/shm.
//
// Liveness is the kernel's, not the record's: the bridge holds an exclusive flock(2) on its record
// file for its whole life. A reader that can take a shared lock on a record without waiting has
// proof that no live process holds it: that bridge is dead (SIGKILLed, crashed), whatever its pid
// now names, so the reader skips the record and removes it (best effort). A SIGKILLed bridge thus
// never looks alive, and pid reuse cannot make it look alive either.
//
// Why the record is rewritten in place (pwrite + ftruncate) and never replaced by rename: the lock
// belongs to the inode. A replacement inode would be unlocked between its rename and its lock, and
// a reader holding the old inode would see it unlocked and remove the live record by name. In
// place, the inode (and its lock) never changes; a reader may see a torn record, which the
// record's last line, a checksum of everything before it, exposes: the reader retries, then skips.
//
// Advisory only: a record grants nothing. The bridge gets no authority over any dict from it and
// the CLI uses records for display only; anyone who can write the directory can plant a record, so
// nothing may trust one for more than that. A malformed record is skipped without an error.
//
// Thread-safety: the free functions may be called from any thread. A PresencePublisher's methods
// are for its owner's thread; it runs one thread of its own, which calls `counts`.
#ifndef SHMDICT_BRIDGE_PRESENCE_H_
#define SHMDICT_BRIDGE_PRESENCE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shmdict/status.h"

namespace shmdict::bridge {

// What one bridge reports about itself.
struct BridgeRecord {
  int64_t pid = 0;
  int64_t since_unix = 0;  // when it became ready, in seconds since the epoch
  // Its listening addresses as it printed them ("unix:/run/b.sock", "127.0.0.1:7377").
  std::vector<std::string> addresses;
  // The dicts it has attached (it attaches a dict on first use), each with its number of Watch
  // streams now open.
  std::map<std::string, uint64_t> dicts;
  // The record file (filled by ListLiveBridges; not part of the record's text).
  std::string path;
};

// $SHMDICT_BRIDGE_REGISTRY_DIR if set and not empty, else "/dev/shm/shmdict-bridges".
std::string RegistryDir();

// "2026-12-01T09:44:02Z".
std::string FormatUtc(int64_t unix_seconds);

// The record's text: "key value" lines, the last one "end <checksum of every byte before it>".
std::string FormatRecord(const BridgeRecord& record);
// Nullopt for text that is not a whole, intact record (torn, truncated, foreign, malformed).
// Lines after the "end" line are ignored (a writer truncates right after writing). Unknown keys
// are ignored, so that a later version may add some.
std::optional<BridgeRecord> ParseRecord(std::string_view text);

// The live bridges whose records are in `dir`, sorted by since_unix then pid. Records of dead
// bridges are skipped and removed (best effort: silently kept where this user may not remove
// them); malformed ones are skipped. A missing or unreadable directory lists no bridge.
std::vector<BridgeRecord> ListLiveBridges(const std::string& dir = RegistryDir());

// A bridge's own record: created, locked and written by Start, rewritten at most once per
// `interval` when its content changed, removed by the destructor. A SIGKILLed bridge leaves its
// file behind, unlocked: readers treat it as dead and remove it.
class PresencePublisher {
 public:
  // The dicts attached and their Watch subscriber counts, asked from the publisher's thread.
  using CountsFunction = std::function<std::map<std::string, uint64_t>()>;

  struct Options {
    std::string dir = RegistryDir();
    std::vector<std::string> addresses;
    CountsFunction counts;  // may be null: no dicts reported
    std::chrono::milliseconds interval{1000};
  };

  // Creates the directory if missing (the default one sticky and writable by all, like /tmp),
  // then the record. kPermissionDenied, kNotFound, kResourceExhausted... from the file system,
  // with a message naming the path; the bridge serves just the same without a record.
  static Result<std::unique_ptr<PresencePublisher>> Start(Options options);

  // Stops the thread and removes the record.
  ~PresencePublisher();
  PresencePublisher(const PresencePublisher&) = delete;
  PresencePublisher& operator=(const PresencePublisher&) = delete;

  const std::string& path() const { return path_; }

 private:
  PresencePublisher(Options options, int fd, std::string path, int64_t since_unix);
  // Rewrites the record if its text changed. From Start, then the thread only.
  void Publish();
  void Run();

  const Options options_;
  const int fd_;
  const std::string path_;
  const int64_t since_unix_;
  std::string written_;  // the text last written; the thread's own after Start

  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_PRESENCE_H_
