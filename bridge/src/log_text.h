// LogText: untrusted text (dict names, keys, peers' strings) made safe for one log line.
//
// A client controls the bytes of every name and key it sends, before anything validates them: a
// raw "\n" forges a log line, a megabyte name makes a megabyte line. Every log call that prints
// such text passes it through LogText, which escapes what is not printable ASCII and cuts it.
#ifndef SHMDICT_BRIDGE_LOG_TEXT_H_
#define SHMDICT_BRIDGE_LOG_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace shmdict::bridge {

// The longest untrusted text a log line carries; longer text ends in "...(N bytes)".
constexpr size_t kMaxLoggedTextBytes = 128;

// `text` escaped and cut as EscapeUntrustedText (shmdict/status.h) does for status messages:
// '\\', '"', control bytes, DEL and bytes >= 0x80 written as \xNN, at most `max_bytes`
// characters of that, then a note of the full length. Thread-safe (pure).
std::string LogText(std::string_view text, size_t max_bytes = kMaxLoggedTextBytes);

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_LOG_TEXT_H_
