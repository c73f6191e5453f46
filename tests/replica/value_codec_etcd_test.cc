// The replica's etcd encoding (bridge/replica: value_codec.h, etcd_txn_plan.h) against a real
// etcd member: values round-trip through etcd, etcdctl shows str and JSON readably, and etcd
// accepts the txns the plan builds.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <map>
#include <string>
#include <vector>

#include "etcd_launcher.h"
#include "etcd_txn_plan.h"
#include "key_range.h"
#include "status_matchers.h"
#include "value_codec.h"

namespace shmdict::replica {
namespace {

using internal::EtcdCluster;
using internal::EtcdClusterOptions;
using internal::ExitInfo;
using ::shmdict::testing::IsOkAndHolds;
using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::StartsWith;

class ValueCodecEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    etcd_ = EtcdCluster::Start(1, EtcdClusterOptions{}, &error);
    ASSERT_NE(etcd_, nullptr) << error;
  }

  // Every key under `prefix` with its decoded value (a linearizable Range).
  std::map<std::string, Value> Contents(const std::string& prefix) {
    etcdserverpb::RangeRequest request;
    request.set_key(PrefixRangeKey(prefix));
    request.set_range_end(PrefixRangeEnd(prefix));
    etcdserverpb::RangeResponse response;
    const grpc::Status s = etcd_->Range(request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::map<std::string, Value> contents;
    for (const mvccpb::KeyValue& kv : response.kvs()) {
      contents.emplace(std::string(LocalKeyOf(kv.key(), prefix).value_or("<skipped>")),
                       DecodeValue(kv.value(), /*allow_pickle=*/false));
    }
    return contents;
  }

  std::unique_ptr<EtcdCluster> etcd_;
};

TEST_F(ValueCodecEtcdTest, EveryTypeReadsBackAsWrittenAndTextStaysReadableInEtcdctl) {
  const std::map<std::string, Value> values = {
      {"str", Value::Str("h\xC3\xA9llo")},
      {"json", Value::Json(R"({"a": [1, 2]})")},
      {"int", Value::Int(std::numeric_limits<int64_t>::min())},
      {"float", Value::Double(3.25)},
      {"bool", Value::Bool(true)},
      {"null", Value::Null()},
      {"bytes", Value::Bytes(std::string("\x00\xFF\x53\x44\x02", 5))},
      {"user", Value(static_cast<ValueType>(200), "anything")},
  };
  for (const auto& [key, value] : values) {
    ASSERT_OK_AND_ASSIGN(const std::string encoded, EncodeValue(value, false));
    const grpc::Status s = etcd_->Put("/codec/" + key, encoded);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(Contents("/codec/"), values);

  std::string output;
  ExitInfo exit = etcd_->Etcdctl({"get", "/codec/str", "--print-value-only"}, &output);
  ASSERT_TRUE(exit.Succeeded()) << exit.ToString();
  EXPECT_EQ(output, "h\xC3\xA9llo\n");
  exit = etcd_->Etcdctl({"get", "/codec/json", "--print-value-only"}, &output);
  ASSERT_TRUE(exit.Succeeded()) << exit.ToString();
  EXPECT_THAT(output, StartsWith(R"({"a": [1, 2]})"));  // then the 4-byte trailer
}

TEST_F(ValueCodecEtcdTest, ValuesFromOtherClientsReadAsStrOrBytes) {
  ASSERT_TRUE(etcd_->Put("/foreign/text", "set by etcdctl").ok());
  ASSERT_TRUE(etcd_->Put("/foreign/binary", std::string("\x89PNG\r\n\x1a\n", 8)).ok());
  std::string output;
  ASSERT_TRUE(etcd_->Etcdctl({"put", "/foreign/from-etcdctl", R"({"n": 1})"}, &output).Succeeded());
  EXPECT_THAT(Contents("/foreign/"),
              ElementsAre(Pair("binary", Value::Bytes(std::string("\x89PNG\r\n\x1a\n", 8))),
                          Pair("from-etcdctl", Value::Str(R"({"n": 1})")),
                          Pair("text", Value::Str("set by etcdctl"))));
}

TEST_F(ValueCodecEtcdTest, EtcdAppliesThePlannedTxnOfABatchWithAClear) {
  const std::string prefix = "/batch/";
  for (const char* key : {"old1", "old2", "kept"}) {
    ASSERT_TRUE(etcd_->Put(prefix + key, "before").ok());
  }
  ASSERT_TRUE(etcd_->Put("/batch0", "outside the prefix").ok());
  // Rewrites of one key, a delete, then a clear and keys set again: the plan folds them so that
  // etcd accepts the txn (no key put twice, none both deleted and put).
  const std::vector<Change> batch = {
      {.op = ChangeOp::kSet, .key = "x", .value = Value::Int(1)},
      {.op = ChangeOp::kSet, .key = "x", .value = Value::Int(2)},
      {.op = ChangeOp::kErase, .key = "old1"},
      {.op = ChangeOp::kClear},
      {.op = ChangeOp::kSet, .key = "kept", .value = Value::Str("after")},
      {.op = ChangeOp::kSet, .key = "new", .value = Value::Bool(false)},
      {.op = ChangeOp::kSet, .key = "new", .value = Value::Null()},
  };
  etcdserverpb::RangeRequest list;
  list.set_key(prefix);
  list.set_range_end(PrefixRangeEnd(prefix));
  list.set_keys_only(true);
  etcdserverpb::RangeResponse listed;
  ASSERT_TRUE(etcd_->Range(list, &listed).ok());
  ClearListing listing{.revision = listed.header().revision()};
  for (const mvccpb::KeyValue& kv : listed.kvs()) listing.etcd_keys.push_back(kv.key());

  ASSERT_OK_AND_ASSIGN(const etcdserverpb::TxnRequest txn,
                       PlanBatchTxn(batch, &listing, TxnPlanOptions{.prefix = prefix}));
  etcdserverpb::TxnResponse response;
  grpc::Status s = etcd_->Txn(txn, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(response.succeeded());
  EXPECT_THAT(Contents(prefix),
              ElementsAre(Pair("kept", Value::Str("after")), Pair("new", Value::Null())));
  std::string outside;
  bool found = false;
  ASSERT_TRUE(etcd_->Get("/batch0", &outside, &found).ok());
  EXPECT_TRUE(found);

  // A key written under the prefix after the listing makes the same txn fail, changing nothing.
  ASSERT_TRUE(etcd_->Put(prefix + "late", "x").ok());
  s = etcd_->Txn(txn, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(response.succeeded());
  EXPECT_EQ(Contents(prefix).size(), 3u);
}

}  // namespace
}  // namespace shmdict::replica
