// The number of passes over a whole dict that this thread has made: scans of a LocalView and wipes
// of an overlay's slot array, each O(entries). Tests read it to show that a cost does not grow with
// what it must not (a batch of N clears makes a bounded number of passes, not N): a count is
// deterministic where a timing is not. One thread-local increment per pass, nothing beside the
// pass.
#ifndef SHMDICT_CORE_PASS_COUNTER_H_
#define SHMDICT_CORE_PASS_COUNTER_H_

#include <cstdint>

namespace shmdict::internal {

inline thread_local uint64_t whole_dict_passes = 0;

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_PASS_COUNTER_H_
