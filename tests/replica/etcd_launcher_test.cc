// EtcdCluster (tests/support/etcd_launcher.h) against Debian's etcd: what the replica's tests
// rely on it for.
#include "etcd_launcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <set>

namespace shmdict::internal {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<EtcdCluster> StartCluster(int members) {
  std::string error;
  const auto begin = Clock::now();
  std::unique_ptr<EtcdCluster> cluster = EtcdCluster::Start(members, EtcdClusterOptions{}, &error);
  EXPECT_NE(cluster, nullptr) << error;
  // For the record (not checked: timing never decides a test).
  std::cout << members << "-member etcd cluster ready in "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - begin).count()
            << " ms\n";
  return cluster;
}

std::string Value(const EtcdCluster& etcd, const std::string& key, int member = -1) {
  std::string value;
  bool found = false;
  const grpc::Status s = etcd.Get(key, &value, &found, member);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return found ? value : "<missing>";
}

TEST(EtcdLauncherTest, OneMemberPutsRangesCompactsAndKeepsItsDataOverASigkill) {
  std::unique_ptr<EtcdCluster> etcd = StartCluster(1);
  ASSERT_NE(etcd, nullptr);
  const std::string dir = etcd->data_dir();
  EXPECT_TRUE(dir.starts_with("/tmp/shmdict-etcd-")) << dir;
  ASSERT_EQ(etcd->client_endpoints().size(), 1u);

  int64_t first = 0;
  int64_t second = 0;
  ASSERT_TRUE(etcd->Put("/t/a", "1", &first).ok());
  ASSERT_TRUE(etcd->Put("/t/a", "2", &second).ok());
  EXPECT_EQ(second, first + 1);
  EXPECT_EQ(Value(*etcd, "/t/a"), "2");

  // Reading at an old revision works until it is compacted away.
  etcdserverpb::RangeRequest old;
  old.set_key("/t/a");
  old.set_revision(first);
  etcdserverpb::RangeResponse response;
  ASSERT_TRUE(etcd->Range(old, &response).ok());
  ASSERT_EQ(response.kvs_size(), 1);
  EXPECT_EQ(response.kvs(0).value(), "1");
  ASSERT_TRUE(etcd->Compact(second).ok());
  const grpc::Status compacted = etcd->Range(old, &response);
  EXPECT_EQ(compacted.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_THAT(compacted.error_message(), HasSubstr("compacted"));

  etcd->Kill(0);
  EXPECT_FALSE(etcd->running(0));
  EXPECT_FALSE(etcd->Put("/t/a", "3").ok());
  std::string error;
  ASSERT_TRUE(etcd->Restart(0, &error)) << error;
  EXPECT_EQ(Value(*etcd, "/t/a"), "2");  // --unsafe-no-fsync loses nothing to a SIGKILL

  etcdserverpb::DeleteRangeRequest remove;
  remove.set_key("/t/a");
  etcdserverpb::DeleteRangeResponse removed;
  ASSERT_TRUE(etcd->DeleteRange(remove, &removed).ok());
  EXPECT_EQ(removed.deleted(), 1);
  EXPECT_EQ(Value(*etcd, "/t/a"), "<missing>");

  etcd.reset();
  EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
}

TEST(EtcdLauncherTest, ThreeMembersServeWithOneKilledAndItRejoins) {
  std::unique_ptr<EtcdCluster> etcd = StartCluster(3);
  ASSERT_NE(etcd, nullptr);
  const std::string dir = etcd->data_dir();
  const std::vector<std::string> endpoints = etcd->client_endpoints();
  ASSERT_EQ(endpoints.size(), 3u);
  EXPECT_EQ(std::set<std::string>(endpoints.begin(), endpoints.end()).size(), 3u);

  ASSERT_TRUE(etcd->Put("/t/k", "before", nullptr, 1).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Value(*etcd, "/t/k", i), "before") << "m" << i;

  etcd->Kill(0);
  std::string error;
  ASSERT_TRUE(etcd->WaitUntilReady(&error)) << error;  // m0 may have led: an election
  const grpc::Status put = etcd->Put("/t/k", "while m0 was down", nullptr, 2);  // 2 of 3: a quorum
  ASSERT_TRUE(put.ok()) << put.error_message();
  EXPECT_FALSE(etcd->Put("/t/k", "through m0", nullptr, 0).ok());
  ASSERT_TRUE(etcd->Restart(0, &error)) << error;
  EXPECT_EQ(Value(*etcd, "/t/k", 0), "while m0 was down");

  // etcdctl reaches the same cluster (the replica tests compare with its output).
  std::string output;
  const ExitInfo exit = etcd->Etcdctl({"get", "/t/k", "--print-value-only"}, &output);
  EXPECT_TRUE(exit.Succeeded()) << exit.ToString() << ": " << output;
  EXPECT_EQ(output, "while m0 was down\n");

  etcd.reset();
  EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
}

TEST(EtcdLauncherTest, TxnKeepsEtcdsRulesTheReplicaPlansFor) {
  std::unique_ptr<EtcdCluster> etcd = StartCluster(1);
  ASSERT_NE(etcd, nullptr);
  // etcd refuses a txn that puts one key twice (etcd_txn_plan.h folds batches for this).
  etcdserverpb::TxnRequest twice;
  for (const char* value : {"1", "2"}) {
    etcdserverpb::PutRequest* put = twice.add_success()->mutable_request_put();
    put->set_key("/t/dup");
    put->set_value(value);
  }
  etcdserverpb::TxnResponse response;
  const grpc::Status refused = etcd->Txn(twice, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("duplicate key"));

  twice.mutable_success()->RemoveLast();
  ASSERT_TRUE(etcd->Txn(twice, &response).ok());
  EXPECT_TRUE(response.succeeded());
  EXPECT_EQ(Value(*etcd, "/t/dup"), "1");
}

TEST(EtcdLauncherTest, ReportsAMissingProgram) {
  EtcdClusterOptions options;
  options.program = "/nonexistent/etcd";
  std::string error;
  EXPECT_EQ(EtcdCluster::Start(1, options, &error), nullptr);
  EXPECT_THAT(error, HasSubstr("/nonexistent/etcd"));
}

}  // namespace
}  // namespace shmdict::internal
