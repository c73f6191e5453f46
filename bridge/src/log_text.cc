#include "log_text.h"

#include "shmdict/status.h"

namespace shmdict::bridge {

// One escaping rule for logs and status messages: the core's, which quotes names in messages.
std::string LogText(std::string_view text, size_t max_bytes) {
  return EscapeUntrustedText(text, max_bytes);
}

}  // namespace shmdict::bridge
