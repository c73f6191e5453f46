#include "authorizer.h"

#include <grpcpp/test/server_context_test_spouse.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace shmdict::bridge {
namespace {

// A call's server context carrying `token` (nullopt: no authorization metadata). The spouse
// holds the metadata's storage, so it lives as long as the context.
class Call {
 public:
  explicit Call(std::optional<std::string> authorization) : spouse_(&context_) {
    if (authorization) spouse_.AddClientMetadata("authorization", *authorization);
  }
  const grpc::ServerContext& context() const { return context_; }

 private:
  grpc::ServerContext context_;
  grpc::testing::ServerContextTestSpouse spouse_;
};

Call WithToken(const std::string& token) { return Call("Bearer " + token); }

class AuthorizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shmdict-authorizer-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    token_file_ = dir_ + "/tokens";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void WriteTokens(const std::string& text) { std::ofstream(token_file_, std::ios::trunc) << text; }

  std::unique_ptr<Authorizer> Create(Authorizer::Options options) {
    auto authorizer = Authorizer::Create(std::move(options));
    EXPECT_TRUE(authorizer.ok()) << authorizer.status().ToString();
    return authorizer.ok() ? std::move(*authorizer) : nullptr;
  }

  std::string dir_;
  std::string token_file_;
};

TEST_F(AuthorizerTest, WithoutTokenFileEveryCallerMayReadAndWrite) {
  auto authorizer = Create({});
  ASSERT_NE(authorizer, nullptr);
  EXPECT_FALSE(authorizer->needs_token());
  Call anonymous(std::nullopt);
  EXPECT_TRUE(authorizer->Check(anonymous.context(), "orders", Access::kWrite).ok());
  Access granted = Access::kRead;
  EXPECT_TRUE(authorizer->Authenticate(anonymous.context(), &granted).ok());
  EXPECT_EQ(granted, Access::kWrite);
}

TEST_F(AuthorizerTest, TokenFileGrantsReadOrWritePerToken) {
  WriteTokens("# operators\nwriter-secret rw\n\n  reader-secret   ro  # dashboards\n");
  auto authorizer = Create({.token_file = token_file_});
  ASSERT_NE(authorizer, nullptr);
  Call writer = WithToken("writer-secret");
  Call reader = WithToken("reader-secret");
  EXPECT_TRUE(authorizer->Check(writer.context(), "orders", Access::kWrite).ok());
  EXPECT_TRUE(authorizer->Check(reader.context(), "orders", Access::kRead).ok());
  grpc::Status write = authorizer->Check(reader.context(), "orders", Access::kWrite);
  EXPECT_EQ(write.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(write.error_message().find("read-only (\"ro\")"), std::string::npos)
      << write.error_message();
  Access granted = Access::kWrite;
  ASSERT_TRUE(authorizer->Authenticate(reader.context(), &granted).ok());
  EXPECT_EQ(granted, Access::kRead);
}

TEST_F(AuthorizerTest, MissingMalformedOrUnknownTokenIsUnauthenticated) {
  WriteTokens("writer-secret rw\n");
  auto authorizer = Create({.token_file = token_file_});
  ASSERT_NE(authorizer, nullptr);
  const std::vector<std::optional<std::string>> headers = {
      std::nullopt, "writer-secret", "Basic abc", "Bearer writer-secre", "Bearer writer-secret2"};
  for (const auto& header : headers) {
    Call call(header);
    grpc::Status status = authorizer->Check(call.context(), "", Access::kRead);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    EXPECT_EQ(status.error_message().find("writer-secret"), std::string::npos)
        << "a message quotes the token: " << status.error_message();
  }
}

TEST_F(AuthorizerTest, MalformedTokenFileIsRefusedNamingTheLineNotTheToken) {
  for (const std::string text :
       {"good rw\nsecret-token rx\n", "good rw\nsecret-token\n", "good rw\nsecret-token rw extra\n",
        "secret-token ro\nsecret-token rw\n"}) {
    WriteTokens(text);
    auto authorizer = Authorizer::Create({.token_file = token_file_});
    ASSERT_FALSE(authorizer.ok()) << text;
    EXPECT_EQ(authorizer.status().code(), StatusCode::kInvalidArgument);
    const std::string message = authorizer.status().message();
    EXPECT_NE(message.find(token_file_ + "' line 2"), std::string::npos) << message;
    EXPECT_EQ(message.find("secret-token"), std::string::npos) << message;
  }
}

TEST_F(AuthorizerTest, EmptyOrMissingTokenFileIsRefused) {
  WriteTokens("# nothing but a comment\n\n");
  auto empty = Authorizer::Create({.token_file = token_file_});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("holds no token"), std::string::npos);

  auto missing = Authorizer::Create({.token_file = dir_ + "/absent"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ + "/absent"), std::string::npos);
}

TEST_F(AuthorizerTest, ReadOnlyBridgeRefusesWritesEvenToWriteTokens) {
  WriteTokens("writer-secret rw\n");
  auto authorizer = Create({.read_only = true, .token_file = token_file_});
  ASSERT_NE(authorizer, nullptr);
  Call writer = WithToken("writer-secret");
  EXPECT_TRUE(authorizer->Check(writer.context(), "orders", Access::kRead).ok());
  grpc::Status write = authorizer->Check(writer.context(), "orders", Access::kWrite);
  EXPECT_EQ(write.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(write.error_message().find("--read-only"), std::string::npos) << write.error_message();
}

TEST_F(AuthorizerTest, AllowListAdmitsListedDictsAndTheirNestedChildrenOnly) {
  auto authorizer = Create({.dicts = {"orders", "carts"}});
  ASSERT_NE(authorizer, nullptr);
  EXPECT_TRUE(authorizer->DictAllowed("orders"));
  EXPECT_TRUE(authorizer->DictAllowed("carts"));
  EXPECT_TRUE(authorizer->DictAllowed("orders@c1"));
  EXPECT_TRUE(authorizer->DictAllowed("orders@c1@c2"));
  EXPECT_FALSE(authorizer->DictAllowed("order"));
  EXPECT_FALSE(authorizer->DictAllowed("orders2"));
  EXPECT_FALSE(authorizer->DictAllowed("payments@corders"));
  Call anonymous(std::nullopt);
  grpc::Status denied = authorizer->Check(anonymous.context(), "payments", Access::kRead);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(denied.error_message().find("'payments'"), std::string::npos) << denied.error_message();
  // No dict named: the list is not consulted (ListDicts filters instead).
  EXPECT_TRUE(authorizer->Check(anonymous.context(), "", Access::kRead).ok());
}

TEST_F(AuthorizerTest, ReloadReplacesTheTokensAndKeepsThemWhenTheNewFileIsBad) {
  WriteTokens("old-secret rw\n");
  auto authorizer = Create({.token_file = token_file_});
  ASSERT_NE(authorizer, nullptr);
  Call old_token = WithToken("old-secret");
  Call new_token = WithToken("new-secret");

  WriteTokens("new-secret ro\n");
  ASSERT_TRUE(authorizer->ReloadTokens().ok());
  EXPECT_EQ(authorizer->Check(old_token.context(), "", Access::kRead).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(authorizer->Check(new_token.context(), "", Access::kRead).ok());
  EXPECT_EQ(authorizer->Check(new_token.context(), "d", Access::kWrite).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);

  WriteTokens("new-secret maybe\n");
  Status bad = authorizer->ReloadTokens();
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument) << bad.ToString();
  EXPECT_TRUE(authorizer->Check(new_token.context(), "", Access::kRead).ok())
      << "a bad file dropped the tokens in force";
}

TEST_F(AuthorizerTest, ATokenAcceptedEarlierIsRevalidatedAgainstTheTokensNowInForce) {
  WriteTokens("gone rw\nkept rw\n");
  auto authorizer = Create({.token_file = token_file_});
  ASSERT_NE(authorizer, nullptr);
  Call call = WithToken("kept");
  Access granted = Access::kRead;
  std::string token;
  ASSERT_TRUE(authorizer->Authenticate(call.context(), &granted, &token).ok());
  EXPECT_EQ(token, "kept");
  const uint64_t generation = authorizer->generation();

  WriteTokens("kept ro\n");
  ASSERT_TRUE(authorizer->ReloadTokens().ok());
  EXPECT_NE(authorizer->generation(), generation);
  EXPECT_TRUE(authorizer->Revalidate("kept", Access::kRead).ok());
  EXPECT_EQ(authorizer->Revalidate("kept", Access::kWrite).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(authorizer->Revalidate("gone", Access::kRead).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // A file that does not parse keeps the tokens, and the generation: nothing to recheck.
  const uint64_t kept_generation = authorizer->generation();
  WriteTokens("kept sometimes\n");
  EXPECT_FALSE(authorizer->ReloadTokens().ok());
  EXPECT_EQ(authorizer->generation(), kept_generation);
}

TEST_F(AuthorizerTest, RefusalsNameTheDictEscapedAndBounded) {
  auto authorizer = Create({.dicts = {"allowed"}});
  ASSERT_NE(authorizer, nullptr);
  const std::string forged = "x\nlevel=error forged";
  grpc::Status refused = authorizer->CheckDict(forged);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(refused.error_message().find('\n'), std::string::npos) << refused.error_message();
  EXPECT_LT(authorizer->CheckDict(std::string(1 << 20, 'n')).error_message().size(), 1024u);
}

}  // namespace
}  // namespace shmdict::bridge
