#include "authorizer.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include "shmdict/dict.h"
#include "shmdict/v1/wire.h"

namespace shmdict::bridge {

namespace {

constexpr std::string_view kBearer = "Bearer ";

// Equal without a data-dependent early exit: the time depends on the lengths only.
bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace

Result<std::unique_ptr<Authorizer>> Authorizer::Create(Options options) {
  std::unique_ptr<Authorizer> authorizer(new Authorizer(std::move(options)));
  if (authorizer->needs_token()) {
    auto tokens = ReadTokenFile(authorizer->options_.token_file);
    if (!tokens.ok()) return tokens.status();
    authorizer->tokens_ = std::move(*tokens);
  }
  return authorizer;
}

Result<std::shared_ptr<const Authorizer::TokenSet>> Authorizer::ReadTokenFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status(StatusCode::kNotFound, "token file '" + path + "' cannot be read");
  }
  auto tokens = std::make_shared<TokenSet>();
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string secret;
    std::string access;
    std::string extra;
    if (!(fields >> secret)) continue;  // blank or comment
    // The message names the line, never the token.
    const std::string where = "token file '" + path + "' line " + std::to_string(number);
    if (!(fields >> access) || (fields >> extra) || (access != "rw" && access != "ro")) {
      return Status(StatusCode::kInvalidArgument,
                    where + ": expected \"TOKEN rw\" or \"TOKEN ro\"");
    }
    for (const Token& token : *tokens) {
      if (token.secret == secret) {
        return Status(StatusCode::kInvalidArgument, where + ": the token appears twice");
      }
    }
    tokens->push_back(Token{secret, access == "rw" ? Access::kWrite : Access::kRead});
  }
  if (in.bad())
    return Status(StatusCode::kInvalidArgument, "token file '" + path + "': read error");
  if (tokens->empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "token file '" + path + "' holds no token: every call would be refused");
  }
  return std::shared_ptr<const TokenSet>(std::move(tokens));
}

Status Authorizer::ReloadTokens() {
  if (!needs_token()) return Status::Ok();
  auto tokens = ReadTokenFile(options_.token_file);
  if (!tokens.ok()) return tokens.status();
  {
    std::lock_guard lock(mu_);
    tokens_ = std::move(*tokens);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return Status::Ok();
}

std::optional<Access> Authorizer::LookUp(std::string_view presented) const {
  std::shared_ptr<const TokenSet> tokens;
  {
    std::lock_guard lock(mu_);
    tokens = tokens_;
  }
  std::optional<Access> access;
  for (const Token& token : *tokens) {  // every token is compared: no early exit
    if (ConstantTimeEqual(presented, token.secret)) access = token.access;
  }
  return access;
}

grpc::Status Authorizer::Revalidate(const std::string& token, Access needed) const {
  if (!needs_token()) return grpc::Status::OK;
  const std::optional<Access> access = LookUp(token);
  if (!access) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the token of this call was revoked (the token file no longer holds it)");
  }
  if (needed == Access::kWrite && *access != Access::kWrite) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "the token of this call lost write access (it is now \"ro\")");
  }
  return grpc::Status::OK;
}

grpc::Status Authorizer::Authenticate(const grpc::ServerContextBase& context, Access* granted,
                                      std::string* token) const {
  *granted = Access::kWrite;
  if (!needs_token()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto header = metadata.find("authorization");
  if (header == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this bridge needs a token: send metadata \"authorization: Bearer TOKEN\"");
  }
  const std::string_view value(header->second.data(), header->second.size());
  if (value.substr(0, kBearer.size()) != kBearer) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the authorization metadata must be \"Bearer TOKEN\"");
  }
  const std::string_view presented = value.substr(kBearer.size());
  const std::optional<Access> access = LookUp(presented);
  if (!access) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown token");
  *granted = *access;
  if (token != nullptr) token->assign(presented);
  return grpc::Status::OK;
}

bool Authorizer::DictAllowed(const std::string& dict) const {
  if (options_.dicts.empty()) return true;
  // A nested child "PARENT@c..." (or a child's child) comes with its top-level parent.
  const size_t child = dict.find("@c");
  return options_.dicts.count(child == std::string::npos ? dict : dict.substr(0, child)) > 0;
}

grpc::Status Authorizer::CheckDict(const std::string& dict) const {
  if (DictAllowed(dict)) return grpc::Status::OK;
  return grpc::Status(
      grpc::StatusCode::PERMISSION_DENIED,
      "dict " + QuoteForMessage(dict) + " is not served by this bridge (not in its --dict list)");
}

grpc::Status Authorizer::Check(const grpc::ServerContextBase& context, const std::string& dict,
                               Access access) const {
  Access granted = Access::kRead;
  grpc::Status status = Authenticate(context, &granted);
  if (!status.ok()) return status;
  if (!dict.empty()) {
    // The name before anything that reads or quotes it: a client's junk (a megabyte, a forged
    // line, an internal segment's name) ends here with a bounded message.
    const Status valid = Dict::ValidateAttachName(dict);
    if (!valid.ok()) return wire::ToGrpc(valid);
    status = CheckDict(dict);
    if (!status.ok()) return status;
  }
  if (access == Access::kWrite) {
    const std::string what = dict.empty() ? "" : "dict " + QuoteForMessage(dict) + ": ";
    if (options_.read_only) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          what + "this bridge is read-only (--read-only): writes are refused");
    }
    if (granted != Access::kWrite) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          what + "this token is read-only (\"ro\"): writes are refused");
    }
  }
  return grpc::Status::OK;
}

}  // namespace shmdict::bridge
