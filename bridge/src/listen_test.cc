#include "listen.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace shmdict::bridge {
namespace {

TEST(ParseListenAddressTest, UnixPathIsTakenAsGiven) {
  auto address = ParseListenAddress("unix:/run/shmdict/bridge.sock");
  ASSERT_TRUE(address.ok()) << address.status().ToString();
  EXPECT_TRUE(address->is_unix);
  EXPECT_EQ(address->unix_path, "/run/shmdict/bridge.sock");
  EXPECT_EQ(address->spec, "unix:/run/shmdict/bridge.sock");
}

TEST(ParseListenAddressTest, HostAndPortAreSplit) {
  auto address = ParseListenAddress("127.0.0.1:7377");
  ASSERT_TRUE(address.ok()) << address.status().ToString();
  EXPECT_FALSE(address->is_unix);
  EXPECT_EQ(address->host, "127.0.0.1");
  EXPECT_EQ(address->port, 7377);
}

TEST(ParseListenAddressTest, BracketedIpv6HostLosesItsBrackets) {
  auto address = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(address.ok()) << address.status().ToString();
  EXPECT_EQ(address->host, "::1");
  EXPECT_EQ(address->port, 0);
  EXPECT_EQ(address->spec, "[::1]:0");
}

TEST(ParseListenAddressTest, NamesAndHighestPortAreAccepted) {
  auto address = ParseListenAddress("localhost:65535");
  ASSERT_TRUE(address.ok()) << address.status().ToString();
  EXPECT_EQ(address->host, "localhost");
  EXPECT_EQ(address->port, 65535);
}

// Each bad input is refused with kInvalidArgument and a message that quotes it and says which
// forms are expected.
TEST(ParseListenAddressTest, MalformedAddressesAreRefusedNamingTheForms) {
  for (const std::string spec : {"", "7377", "localhost", ":7377", "localhost:", "host:77x",
                                 "host:-1", "host:port", "[::1]"}) {
    auto address = ParseListenAddress(spec);
    ASSERT_FALSE(address.ok()) << "'" << spec << "' was accepted";
    EXPECT_EQ(address.status().code(), StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(address.status().message().find("'" + spec + "'"), std::string::npos)
        << address.status().message();
    EXPECT_NE(address.status().message().find("HOST:PORT nor unix:PATH"), std::string::npos)
        << address.status().message();
  }
}

TEST(ParseListenAddressTest, PortAbove65535IsRefused) {
  auto address = ParseListenAddress("127.0.0.1:65536");
  ASSERT_FALSE(address.ok());
  EXPECT_EQ(address.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(address.status().message().find("0 to 65535"), std::string::npos)
      << address.status().message();
}

TEST(ParseListenAddressTest, UnixPathMustFitASocketAddress) {
  auto empty = ParseListenAddress("unix:");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  const size_t limit = sizeof(sockaddr_un::sun_path) - 1;
  EXPECT_TRUE(ParseListenAddress("unix:/" + std::string(limit - 1, 'a')).ok());
  auto too_long = ParseListenAddress("unix:/" + std::string(limit, 'a'));
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("1 to " + std::to_string(limit) + " characters"),
            std::string::npos)
      << too_long.status().message();
}

class UnixSocketClaimsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shmdict-listen-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/bridge.sock";
  }
  void TearDown() override {
    for (int fd : fds_) close(fd);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  // A socket bound at path_; listening: someone answers on it.
  void Bind(bool listening) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    fds_.push_back(fd);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    if (listening) {
      ASSERT_EQ(listen(fd, 1), 0);
    }
  }

  std::string dir_;
  std::string path_;
  std::vector<int> fds_;
};

TEST_F(UnixSocketClaimsTest, SecondClaimOfAPathIsRefusedWhileTheFirstHoldsIt) {
  {
    UnixSocketClaims first;
    ASSERT_TRUE(first.Claim(path_).ok());
    UnixSocketClaims second;
    Status taken = second.Claim(path_);
    EXPECT_EQ(taken.code(), StatusCode::kAlreadyExists) << taken.ToString();
    EXPECT_NE(taken.message().find("another shmdict-bridge"), std::string::npos) << taken.message();
  }
  UnixSocketClaims third;  // the first released it
  EXPECT_TRUE(third.Claim(path_).ok());
}

TEST_F(UnixSocketClaimsTest, ReleasingAClaimRemovesTheSocketFile) {
  {
    UnixSocketClaims claims;
    ASSERT_TRUE(claims.Claim(path_).ok());
    Bind(/*listening=*/true);  // what the server does with the claimed path
  }
  struct stat info {};
  EXPECT_NE(lstat(path_.c_str(), &info), 0) << path_ << " is still there";
}

TEST_F(UnixSocketClaimsTest, PathAnotherProgramAnswersOnIsNotTakenOver) {
  Bind(/*listening=*/true);
  UnixSocketClaims claims;
  Status taken = claims.Claim(path_);
  EXPECT_EQ(taken.code(), StatusCode::kAlreadyExists) << taken.ToString();
  EXPECT_NE(taken.message().find("in use by another program"), std::string::npos)
      << taken.message();
  struct stat info {};
  EXPECT_EQ(lstat(path_.c_str(), &info), 0) << "the other program's socket was removed";
}

TEST_F(UnixSocketClaimsTest, StaleSocketNobodyAnswersOnIsReplaced) {
  Bind(/*listening=*/false);  // bound, never listening: a connect is refused, as after a crash
  UnixSocketClaims claims;
  ASSERT_TRUE(claims.Claim(path_).ok());
  struct stat info {};
  EXPECT_NE(lstat(path_.c_str(), &info), 0) << "the stale socket file was kept";
}

TEST_F(UnixSocketClaimsTest, PathThatIsNotASocketIsLeftAlone) {
  std::ofstream(path_) << "precious";
  UnixSocketClaims claims;
  Status taken = claims.Claim(path_);
  EXPECT_EQ(taken.code(), StatusCode::kAlreadyExists) << taken.ToString();
  EXPECT_NE(taken.message().find("not a socket"), std::string::npos) << taken.message();
  std::ifstream in(path_);
  std::string text;
  in >> text;
  EXPECT_EQ(text, "precious");
}

}  // namespace
}  // namespace shmdict::bridge
