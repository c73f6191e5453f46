// The `shmdict` command-line tool's commands, one function each, apart from argument parsing
// (main.cc) so that every command reads as: open, act, print, map the outcome to an exit status.
//
// Exit status contract: kExitOk on success, kExitKeyMissing when the key a command needs is
// absent (get, del), kExitError for anything else, with exactly one line on stderr naming the dict
// and the cause ("shmdict: dict 'orders': NOT_FOUND: ...").
//
// Output goes to std::cout / std::cerr; the functions are not thread-safe.
#ifndef SHMDICT_CLI_COMMANDS_H_
#define SHMDICT_CLI_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <string>

namespace spdlog {
class logger;
}

namespace shmdict::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitKeyMissing = 1;
inline constexpr int kExitError = 2;

// Everything the user gave on the command line; each command reads the fields it declares.
struct CommandLine {
  // The bridge address of --remote / $SHMDICT_REMOTE; empty: this host's shared memory.
  std::string remote;
  // --token / $SHMDICT_TOKEN, --tls-ca, --tls-cert, --tls-key: how to reach the bridge.
  std::string token;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // health --service.
  std::string service;
  std::string name;
  std::string key;
  std::string value;
  std::string type = "str";
  int64_t delta = 1;
  bool json = false;
  std::string file = "-";
  uint64_t buffer_size = uint64_t{4} << 20;
  std::string mode = "0600";
  bool exclusive = false;
  bool from_given = false;
  uint64_t from = 0;
  uint64_t count = 0;  // 0: unlimited
  // Null unless --verbose: the library stays silent by default.
  std::shared_ptr<spdlog::logger> logger;
};

int RunCreate(const CommandLine& cl);
int RunSet(const CommandLine& cl);
int RunGet(const CommandLine& cl);
int RunDel(const CommandLine& cl);
int RunIncr(const CommandLine& cl);
int RunList(const CommandLine& cl);
int RunImport(const CommandLine& cl);
int RunExport(const CommandLine& cl);
int RunWatch(const CommandLine& cl);
int RunStatus(const CommandLine& cl);
int RunLs(const CommandLine& cl);
int RunUnlink(const CommandLine& cl);
// The live shmdict-bridge processes of this host (their advisory records).
int RunBridges(const CommandLine& cl);
// Exit 0 when the bridge reports `service` SERVING, 1 when NOT_SERVING or unknown, 2 when it
// cannot be reached.
int RunHealth(const CommandLine& cl);

// Prints "shmdict: <cause>" as one line on stderr; returns kExitError.
int FailWithoutDict(std::string cause);

}  // namespace shmdict::cli

#endif  // SHMDICT_CLI_COMMANDS_H_
