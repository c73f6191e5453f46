#include "etcd_txn_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "shmdict/dict.h"
#include "status_matchers.h"
#include "value_codec.h"

namespace shmdict::replica {
namespace {

using ::shmdict::testing::IsOk;
using ::shmdict::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

Change Set(std::string key, Value value) {
  return Change{.op = ChangeOp::kSet, .key = std::move(key), .value = std::move(value)};
}
Change Erase(std::string key) { return Change{.op = ChangeOp::kErase, .key = std::move(key)}; }
Change Clear() { return Change{.op = ChangeOp::kClear}; }

// "put KEY=VALUE" (the value decoded back) or "delete KEY", in txn order.
std::vector<std::string> Ops(const etcdserverpb::TxnRequest& txn) {
  std::vector<std::string> ops;
  for (const etcdserverpb::RequestOp& op : txn.success()) {
    if (op.has_request_put()) {
      ops.push_back("put " + op.request_put().key() + "=" +
                    DecodeValue(op.request_put().value(), false).ToText());
    } else if (op.has_request_delete_range()) {
      EXPECT_TRUE(op.request_delete_range().range_end().empty());
      ops.push_back("delete " + op.request_delete_range().key());
    } else {
      ops.push_back("other");
    }
  }
  return ops;
}

const TxnPlanOptions kOptions{.prefix = "/p/"};

TEST(EtcdTxnPlanTest, KeepsTheLastOperationOfEachKey) {
  const std::vector<Change> batch = {
      Set("a", Value::Int(1)),     Set("b", Value::Str("x")), Erase("a"),
      Set("c", Value::Bool(true)), Set("b", Value::Str("y")), Erase("d"),
      Set("d", Value::Str("z"))};
  ASSERT_FALSE(HasClear(batch));
  ASSERT_OK_AND_ASSIGN(const etcdserverpb::TxnRequest txn, PlanBatchTxn(batch, nullptr, kOptions));
  EXPECT_EQ(txn.compare_size(), 0);
  EXPECT_EQ(txn.failure_size(), 0);
  EXPECT_THAT(Ops(txn), ElementsAre("delete /p/a", "put /p/b=y", "put /p/c=true", "put /p/d=z"));
}

TEST(EtcdTxnPlanTest, AClearDeletesTheListedKeysNotSetAfterIt) {
  const std::vector<Change> batch = {Set("gone", Value::Str("v")),
                                     Set("a", Value::Int(1)),
                                     Clear(),
                                     Set("a", Value::Int(2)),
                                     Set("new", Value::Str("n")),
                                     Erase("b"),
                                     Erase("never")};
  ASSERT_TRUE(HasClear(batch));
  // "/p/" itself and an over-long key are not in the replica, but a clear removes them too.
  const std::string too_long = "/p/" + std::string(kMaxKeyBytes + 1, 'k');
  const ClearListing listing{.etcd_keys = {"/p/", "/p/a", "/p/b", "/p/c", too_long, "/p/c"},
                             .revision = 41};
  ASSERT_OK_AND_ASSIGN(const etcdserverpb::TxnRequest txn, PlanBatchTxn(batch, &listing, kOptions));
  EXPECT_THAT(Ops(txn), ElementsAre("delete /p/", "delete /p/b", "delete /p/c",
                                    "delete " + too_long, "put /p/a=2", "put /p/new=n"));
  // Applies only if nothing under the prefix changed since the listing.
  ASSERT_EQ(txn.compare_size(), 1);
  const etcdserverpb::Compare& compare = txn.compare(0);
  EXPECT_EQ(compare.target(), etcdserverpb::Compare::MOD);
  EXPECT_EQ(compare.result(), etcdserverpb::Compare::LESS);
  EXPECT_EQ(compare.key(), "/p/");
  EXPECT_EQ(compare.range_end(), "/p0");
  EXPECT_EQ(compare.mod_revision(), 42);
}

TEST(EtcdTxnPlanTest, ALoneClearDeletesEveryListedKey) {
  const ClearListing listing{.etcd_keys = {"k1", "k2"}, .revision = 7};
  ASSERT_OK_AND_ASSIGN(
      const etcdserverpb::TxnRequest txn,
      PlanBatchTxn({Set("k1", Value::Null()), Clear()}, &listing, TxnPlanOptions{.prefix = ""}));
  EXPECT_THAT(Ops(txn), ElementsAre("delete k1", "delete k2"));
  ASSERT_EQ(txn.compare_size(), 1);
  EXPECT_EQ(txn.compare(0).key(), std::string(1, '\0'));  // etcd refuses an empty key
  EXPECT_EQ(txn.compare(0).range_end(), std::string(1, '\0'));
}

TEST(EtcdTxnPlanTest, RefusesMoreOperationsThanOneTxnTakes) {
  std::vector<Change> batch;
  for (int i = 0; i < 128; ++i) batch.push_back(Set("k" + std::to_string(i), Value::Int(i)));
  // Rewriting keys folds away: 128 distinct keys is the limit, whatever the batch's length.
  batch.push_back(Set("k0", Value::Int(-1)));
  ASSERT_OK_AND_ASSIGN(const etcdserverpb::TxnRequest txn, PlanBatchTxn(batch, nullptr, kOptions));
  EXPECT_EQ(txn.success_size(), 128);
  batch.push_back(Erase("k128"));
  EXPECT_THAT(PlanBatchTxn(batch, nullptr, kOptions),
              StatusIs(StatusCode::kResourceExhausted,
                       HasSubstr("129 etcd operations, more than one etcd transaction takes "
                                 "(--etcd-max-txn-ops 128")));
  EXPECT_THAT(PlanBatchTxn({Set("a", Value::Int(1)), Set("b", Value::Int(2))}, nullptr,
                           TxnPlanOptions{.prefix = "/p/", .max_txn_ops = 1}),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("--etcd-max-txn-ops 1,")));
  // The deletes a clear implies count too.
  const ClearListing listing{.etcd_keys = {"/p/x", "/p/y"}, .revision = 1};
  EXPECT_THAT(PlanBatchTxn({Clear(), Set("a", Value::Int(1))}, &listing,
                           TxnPlanOptions{.prefix = "/p/", .max_txn_ops = 2}),
              StatusIs(StatusCode::kResourceExhausted, HasSubstr("needs 3 etcd operations")));
}

TEST(EtcdTxnPlanTest, RefusesValuesTheCodecRefusesAndEmptyKeys) {
  EXPECT_THAT(PlanBatchTxn({Set("n", Value(ValueType::kNestedDict, "d@c1"))}, nullptr, kOptions),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("key 'n': a nested-dict")));
  EXPECT_THAT(PlanBatchTxn({Set("p", Value(ValueType::kPickle, "x"))}, nullptr, kOptions),
              StatusIs(StatusCode::kPermissionDenied, HasSubstr("--allow-pickle")));
  EXPECT_THAT(PlanBatchTxn({Set("p", Value(ValueType::kPickle, "x"))}, nullptr,
                           TxnPlanOptions{.prefix = "/p/", .allow_pickle = true}),
              IsOk());
  EXPECT_THAT(PlanBatchTxn({Erase("")}, nullptr, kOptions),
              StatusIs(StatusCode::kInvalidArgument, HasSubstr("empty key")));
}

}  // namespace
}  // namespace shmdict::replica
