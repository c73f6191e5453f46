// LogReader: reading a dict's log the one way every reader does — a handle catching up, a
// Watcher streaming, the snapshot builder replaying, the repair after a dead writer stepping over
// records. It follows the log from a position, fetches large changes from their own segments,
// and when writers lapped it, moves the reader's view to the newest snapshot (docs/DESIGN.md,
// rule 3: never parse bytes that may have been overwritten).
//
// Thread-safety: const and stateless beyond the mapping: any thread may use one LogReader.
// Lifetime: must not outlive the mapping of the header and ring it reads.
#ifndef SHMDICT_CORE_LOG_READER_H_
#define SHMDICT_CORE_LOG_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "built_snapshots.h"
#include "layout.h"
#include "local_view.h"
#include "log_ring.h"
#include "shmdict/status.h"
#include "snapshot.h"

namespace shmdict::internal {

enum class ReadOutcome { kOk, kLapped, kCorrupt };

class LogReader {
 public:
  LogReader() = default;
  LogReader(std::string name, const MainHeader* header, const LogRing* ring)
      : name_(std::move(name)), header_(header), ring_(ring) {}

  // The handle's builder's snapshots (compactor.h): OpenLatestSnapshot takes the published one
  // from there, mapped already, when this process built it. Must outlive the reader's use.
  void UseBuiltSnapshots(const BuiltSnapshots* built) { built_ = built; }

  // kDataLoss "dict 'x': WHAT: the segment is corrupted; unlink the dict".
  Status Corrupt(const std::string& what) const;

  // The published snapshot, mapped (nullptr at generation 0). Retries while newer snapshots
  // replace it; kDataLoss if the published one is missing for good.
  Result<std::shared_ptr<const SnapshotView>> OpenLatestSnapshot() const;
  // Resets *view to the published snapshot (reusing its mapping when it is the same one).
  Status LoadLatestSnapshot(LocalView* view) const;

  // Reads the record of `expected_revision` at `position` (skipping a padding record, fetching a
  // large change's payload) into *payload; on kOk sets *next to the position after it. kLapped:
  // overwritten (or its large-value segment is gone), and *next is still set when the record's
  // header could be read.
  ReadOutcome ReadRecord(uint64_t position, uint64_t expected_revision, std::string* payload,
                         uint64_t* next) const;

  // Applies the log to *view up to `target` (or to the newest snapshot and beyond, if lapped),
  // using *scratch for record bytes.
  Status ReplayLog(LocalView* view, uint64_t target, std::string* scratch) const;

  // The position after the record of `to_revision`, stepping over the records from `position`
  // (just after `revision`'s): where a dead writer's log ends. Calls on_payload(payload) for
  // each record whose bytes could still be read. kDataLoss if a record is invalid.
  template <typename Fn>
  Result<uint64_t> EndOfRecords(uint64_t position, uint64_t revision, uint64_t to_revision,
                                Fn&& on_payload) const {
    std::string scratch;
    while (revision < to_revision) {
      uint64_t next = 0;
      // (A missing large-value segment reads as lapped but still tells where the record ends.)
      const ReadOutcome outcome = ReadRecord(position, revision + 1, &scratch, &next);
      if (outcome == ReadOutcome::kCorrupt || next == 0) {
        return Corrupt("the record of revision " + std::to_string(revision + 1) +
                       " left by a dead writer is invalid");
      }
      if (outcome == ReadOutcome::kOk) on_payload(std::string_view(scratch));
      position = next;
      ++revision;
    }
    return position;
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  const MainHeader* header_ = nullptr;
  const LogRing* ring_ = nullptr;
  const BuiltSnapshots* built_ = nullptr;
};

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_LOG_READER_H_
