// LogSink: where the library reports what an operator may want to know (snapshot builds, a dead
// lock holder's recovery, a failed build). The library never logs to a global logger and pulls
// no logging library into its users: a program that wants the lines passes a sink in
// Options::log_sink (the shmdict CLI adapts spdlog; see clients of this interface); the default,
// null, drops them.
//
// Thread-safety: Log is called from the handle's thread and from its background snapshot
// builder, possibly at once: implementations must be thread-safe. It must not call back into the
// Dict that logs. Lifetime: the handle shares ownership of the sink until it is closed.
#ifndef SHMDICT_LOG_SINK_H_
#define SHMDICT_LOG_SINK_H_

#include <string_view>

namespace shmdict {

enum class LogLevel { kInfo, kWarning, kError };

class LogSink {
 public:
  virtual ~LogSink() = default;
  // One line, without a trailing newline, naming the dict (e.g. "dict 'orders': snapshot ...").
  virtual void Log(LogLevel level, std::string_view message) = 0;
};

}  // namespace shmdict

#endif  // SHMDICT_LOG_SINK_H_
