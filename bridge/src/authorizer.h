// Authorizer: who may do what through this bridge. Every handler of DictService and Watch's start
// asks it before touching a dict: the caller's token (metadata "authorization: Bearer TOKEN",
// when the bridge has a --token-file), the dict's name (refused before anything reads it), the
// dict against the --dict allow-list, and whether a write is allowed (--read-only, or a read-only
// token).
//
// Checked in the service, not in gRPC: gRPC 1.51's AuthMetadataProcessor aborts with insecure
// server credentials and its server interceptors are experimental.
//
// Thread-safety: thread-safe. ReloadTokens may run concurrently with checks; a check sees either
// the old or the new token set, never a mix. Tokens are compared in constant time and never
// logged or put into a message.
#ifndef SHMDICT_BRIDGE_AUTHORIZER_H_
#define SHMDICT_BRIDGE_AUTHORIZER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "shmdict/status.h"

namespace shmdict::bridge {

enum class Access { kRead, kWrite };

class Authorizer {
 public:
  struct Options {
    // Dicts that may be served (nested children come with their parent); empty: every dict.
    std::set<std::string> dicts;
    // Every write is refused.
    bool read_only = false;
    // Lines "TOKEN rw" / "TOKEN ro"; empty: no token needed.
    std::string token_file;
  };

  // Reads the token file, if any: kInvalidArgument naming the file and line when it is malformed,
  // kNotFound/kPermissionDenied when it cannot be read.
  static Result<std::unique_ptr<Authorizer>> Create(Options options);

  // OK, or, in this order: UNAUTHENTICATED (no or unknown token), INVALID_ARGUMENT (`dict` is no
  // name a dict can have, Dict::ValidateAttachName: a dict's internal segment, a name starting
  // with '-', ...), PERMISSION_DENIED (the dict is not allowed, or a write by a read-only token or
  // through a --read-only bridge). `dict` empty: no dict check. Messages quote `dict` bounded.
  grpc::Status Check(const grpc::ServerContextBase& context, const std::string& dict,
                     Access access) const;
  // The token part of Check alone (Watch checks it when the stream opens, before its dict).
  // `token` (may be null): the token presented, for Revalidate; empty without a token file.
  grpc::Status Authenticate(const grpc::ServerContextBase& context, Access* granted,
                            std::string* token = nullptr) const;
  // Whether a token Authenticate accepted earlier still grants `needed` under the tokens now in
  // force: OK, UNAUTHENTICATED (the token file was reloaded without it) or PERMISSION_DENIED (it
  // is now read-only and `needed` is kWrite). A long call (a Watch stream) asks again whenever
  // generation() moved, so that revoking a token ends the streams opened with it.
  grpc::Status Revalidate(const std::string& token, Access needed) const;
  // Changes each time ReloadTokens installs a new token set.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // Whether `dict` (or, for a nested child "PARENT@c...", its parent) is on the allow-list.
  bool DictAllowed(const std::string& dict) const;
  // PERMISSION_DENIED naming the dict when it is not allowed.
  grpc::Status CheckDict(const std::string& dict) const;

  // Re-reads the token file (SIGHUP). On error the previous tokens stay in force.
  Status ReloadTokens();
  bool needs_token() const { return !options_.token_file.empty(); }

 private:
  struct Token {
    std::string secret;
    Access access;
  };
  using TokenSet = std::vector<Token>;

  explicit Authorizer(Options options) : options_(std::move(options)) {}
  static Result<std::shared_ptr<const TokenSet>> ReadTokenFile(const std::string& path);
  // The access of `presented` in the current token set, nullopt when it holds no such token.
  // Compares every token in constant time: the answer's timing says nothing about the secrets.
  std::optional<Access> LookUp(std::string_view presented) const;

  const Options options_;
  mutable std::mutex mu_;
  std::shared_ptr<const TokenSet> tokens_;  // guarded by mu_ (the pointer; the set is immutable)
  std::atomic<uint64_t> generation_{0};
};

}  // namespace shmdict::bridge

#endif  // SHMDICT_BRIDGE_AUTHORIZER_H_
