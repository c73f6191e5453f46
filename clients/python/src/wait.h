// Waiting without blocking Ctrl-C: blocking calls wait in slices, checking for signals in
// between, since a signal only sets a flag in the C handler and Python raises KeyboardInterrupt
// once control is back in the interpreter. Needs the GIL.
#ifndef SHMDICT_PYTHON_WAIT_H_
#define SHMDICT_PYTHON_WAIT_H_

#include <algorithm>
#include <chrono>
#include <optional>

#include "state.h"

namespace shmdict::python {

inline constexpr std::chrono::milliseconds kSignalCheckInterval{100};

// Calls `attempt(slice)` without the GIL until it returns true (then returns true) or
// `timeout_seconds` passed (false; nullopt: forever). Raises what a signal handler raised.
template <typename F>
bool WaitInterruptibly(State* s, std::optional<double> timeout_seconds, F&& attempt) {
  using std::chrono::nanoseconds;
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    nanoseconds slice = kSignalCheckInterval;
    if (timeout_seconds) {
      const auto left =
          std::chrono::duration_cast<nanoseconds>(std::chrono::duration<double>(*timeout_seconds) -
                                                  (std::chrono::steady_clock::now() - start));
      if (left < slice) slice = std::max(left, nanoseconds(0));
    }
    bool done;
    {
      WithoutGil unlocked(s);
      done = attempt(slice);
    }
    if (done) return true;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (timeout_seconds && std::chrono::steady_clock::now() - start >=
                               std::chrono::duration<double>(*timeout_seconds)) {
      return false;
    }
  }
}

}  // namespace shmdict::python

#endif  // SHMDICT_PYTHON_WAIT_H_
