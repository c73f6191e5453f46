// Crash points: named places in the engine where a test can have the process SIGKILL itself, so
// that a crash lands deterministically between two steps that a random kill only hits by chance
// (between the stores that publish a snapshot, between retiring two old snapshots, ...).
//
//   CrashPoint("compactor.publish.chain_base_stored");
//
// A process is armed through its environment, read once before main:
//
//   SHMDICT_CRASH_AT=NAME[:NTH]      SIGKILL this process the NTH time (default 1) NAME is reached
//   SHMDICT_CRASH_ANNOUNCE_FD=FD     first write "crash-point NAME NTH\n" to FD (default 2)
//
// The kill is the real thing: SIGKILL raised on itself, no cleanup, no atexit handler, whichever
// thread reached the point. An unknown NAME or a malformed NTH aborts the process at startup, so a
// misspelled test fails instead of never crashing.
//
// Compiled in only where SHMDICT_CRASH_POINTS is 1: in shmdict_core_crashpoints, the test-only
// build of the engine that the crash-point test's workers link (core/CMakeLists.txt). The
// installed shmdict_core compiles them out in every build type: CrashPoint is then an empty
// inline function, and nothing reads SHMDICT_CRASH_AT. Where compiled in, a point costs one load
// of a flag that never changes after startup and a branch predicted not taken. Only the sources
// core/CMakeLists.txt lists in SHMDICT_CORE_CRASH_POINT_SOURCES may place points: the others are
// compiled once for both libraries, and including this header there is an error.
//
// Names are checked at compile time against kCrashPointNames (the list the crash-point test walks:
// tests/crash_points_test.cc), so a point in the code is always one the test knows.
//
// Thread-safety: CrashPoint may be called from any thread. Points reached before static
// initialization (from another static initializer) are never armed.
#ifndef SHMDICT_CORE_CRASH_POINT_H_
#define SHMDICT_CORE_CRASH_POINT_H_

#include <array>
#include <cstddef>
#include <string_view>

#ifdef SHMDICT_CRASH_POINTS_FORBIDDEN
#error \
    "this source is compiled once for both engine libraries: to place crash points in it, list it in SHMDICT_CORE_CRASH_POINT_SOURCES (core/CMakeLists.txt)"
#endif

namespace shmdict::internal {

// Every crash point; what each one splits is said where it is placed.
inline constexpr std::array<std::string_view, 20> kCrashPointNames = {
    // snapshot.cc: building a segment.
    "snapshot.segment_recycled",     // a retired segment renamed to the new name, not rewritten
    "snapshot.delta_half_written",   // a delta's table half written
    "snapshot.base_half_written",    // a base's table half written (also: folding a delta)
    "snapshot.sealed_before_ready",  // header copied, its ready word not yet stored
    // compactor.cc: between a finished build and its publication.
    "compactor.background.delta_built",  // claim held, writer lock not yet taken
    "compactor.background.base_built",
    "compactor.inline.delta_built",  // writer lock held, nothing stored yet
    "compactor.inline.base_built",
    // compactor.cc, PublishLocked: between the stores that publish a snapshot.
    "compactor.publish.log_position_stored",    // before snapshot_revision
    "compactor.publish.bookkeeping_stored",     // before snapshot_chain_base
    "compactor.publish.new_chain_base_stored",  // a new base's, before snapshot_generation
    "compactor.publish.generation_stored",      // published, writer lock still held
    // compactor.cc: published, not yet cleaned up after.
    "compactor.background.published",  // writer lock released, claim held, no AfterPublish
    "compactor.inline.published",      // writer lock held, no AfterPublish
    // compactor.cc and blob_segment.cc, AfterPublish: between retiring two things.
    "compactor.retire.snapshot_renamed",  // one old snapshot retired, older ones still named
    "compactor.retire.retired_unlinked",  // one surplus retired snapshot unlinked, others not
    "blob.covered_value_unlinked",        // one covered large value unlinked, others not
    // compactor.cc: the claim of a dead builder taken over (by a builder, or a writer waiting for
    // one), not yet used or given back.
    "compactor.claim_taken_over",
    // replica_block.cc: a replica feed's commit (ReplicaFeed::Apply), between its three stores.
    "replica.after_pending",  // (upstream, local) pending stored, commit_revision not yet
    "replica.after_commit",   // committed, the applied pair not yet stored
};

consteval size_t CrashPointIndex(std::string_view name) {
  for (size_t i = 0; i < kCrashPointNames.size(); ++i) {
    if (kCrashPointNames[i] == name) return i;
  }
  // Not a constant expression: an unknown name fails to compile.
  throw "unknown crash point: add it to kCrashPointNames";
}

// A crash point's name, checked against kCrashPointNames when the program is compiled.
class CrashPointName {
 public:
  consteval CrashPointName(const char* name)  // NOLINT: implicit, so call sites read as names
      : index_(CrashPointIndex(name)) {}
  size_t index() const { return index_; }

 private:
  size_t index_;
};

#if SHMDICT_CRASH_POINTS
// Set before main when SHMDICT_CRASH_AT names a point; never written afterwards.
extern bool crash_point_armed;
// Counts hits of the armed point and SIGKILLs the process at the chosen one.
void ReachCrashPoint(size_t index);

inline void CrashPoint(CrashPointName name) {
  if (crash_point_armed) [[unlikely]] {
    ReachCrashPoint(name.index());
  }
}
#else
inline void CrashPoint(CrashPointName) {}
#endif

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_CRASH_POINT_H_
