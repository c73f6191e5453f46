// Links shmdict::client from the installed package and calls it: with no bridge at the address,
// Open must report UNAVAILABLE (never "missing").
#include <shmdict/remote_dict.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

int main() {
  shmdict::RemoteOptions options;
  options.address = "unix:/tmp/shmdict-install-consumer-" + std::to_string(getpid()) + ".sock";
  options.dict = "anything";
  options.open_timeout = std::chrono::milliseconds(300);
  auto remote = shmdict::RemoteDict::Open(options);
  if (remote.ok() || remote.status().code() != shmdict::StatusCode::kUnavailable) {
    std::fprintf(stderr, "expected UNAVAILABLE, got %s\n", remote.status().ToString().c_str());
    return 1;
  }
  return 0;
}
