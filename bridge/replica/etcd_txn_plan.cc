#include "etcd_txn_plan.h"

#include <cstdlib>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "key_range.h"
#include "value_codec.h"

namespace shmdict::replica {

bool HasClear(const std::vector<Change>& changes) {
  for (const Change& change : changes) {
    if (change.op == ChangeOp::kClear) return true;
  }
  return false;
}

Result<etcdserverpb::TxnRequest> PlanBatchTxn(const std::vector<Change>& changes,
                                              const ClearListing* listing,
                                              const TxnPlanOptions& options) {
  // The last operation per key since the last clear: a value to put, or nullopt to delete.
  std::vector<std::string_view> order;
  std::unordered_map<std::string_view, std::optional<const Value*>> last;
  bool cleared = false;
  for (const Change& change : changes) {
    switch (change.op) {
      case ChangeOp::kClear:
        cleared = true;
        order.clear();
        last.clear();
        continue;
      case ChangeOp::kSet:
      case ChangeOp::kErase:
        break;
    }
    if (change.key.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "an empty key cannot be stored in a replica of an etcd prefix (its etcd key "
                    "would be the prefix itself)");
    }
    std::optional<const Value*> op;
    if (change.op == ChangeOp::kSet) op = &change.value;
    const auto [it, inserted] = last.try_emplace(change.key, op);
    if (inserted) {
      order.push_back(change.key);
    } else {
      it->second = op;
    }
  }
  if (cleared && listing == nullptr) std::abort();  // the caller must list before a clear

  etcdserverpb::TxnRequest txn;
  auto add_delete = [&](std::string etcd_key) {
    txn.add_success()->mutable_request_delete_range()->set_key(std::move(etcd_key));
  };
  if (cleared) {
    etcdserverpb::Compare* unchanged = txn.add_compare();
    unchanged->set_result(etcdserverpb::Compare::LESS);
    unchanged->set_target(etcdserverpb::Compare::MOD);
    unchanged->set_key(PrefixRangeKey(options.prefix));
    unchanged->set_range_end(PrefixRangeEnd(options.prefix));
    unchanged->set_mod_revision(listing->revision + 1);
    std::unordered_set<std::string_view> deleted;
    for (const std::string& etcd_key : listing->etcd_keys) {
      if (!deleted.insert(etcd_key).second) continue;
      // A key set after the clear is put instead (etcd refuses to delete and put one key). One
      // the prefix cannot map (skipped by the replica) is deleted all the same: Clear empties
      // the prefix, as a lone Clear's DeleteRange does.
      const std::optional<std::string_view> local = LocalKeyOf(etcd_key, options.prefix);
      if (local.has_value()) {
        const auto it = last.find(*local);
        if (it != last.end() && it->second.has_value()) continue;
      }
      add_delete(etcd_key);
    }
  }
  for (const std::string_view key : order) {
    const std::optional<const Value*>& op = last.at(key);
    if (!op.has_value()) {
      // After a clear, a key it deleted is gone already and one it did not list did not exist.
      if (!cleared) add_delete(EtcdKeyOf(key, options.prefix));
      continue;
    }
    Result<std::string> encoded = EncodeValue(**op, options.allow_pickle);
    if (!encoded.ok()) {
      return Status(encoded.status().code(),
                    "key " + QuoteForMessage(key) + ": " + encoded.status().message());
    }
    etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
    put->set_key(EtcdKeyOf(key, options.prefix));
    put->set_value(std::move(encoded).value());
  }
  if (static_cast<size_t>(txn.success_size()) > options.max_txn_ops) {
    return Status(StatusCode::kResourceExhausted,
                  "the batch needs " + std::to_string(txn.success_size()) +
                      " etcd operations, more than one etcd transaction takes "
                      "(--etcd-max-txn-ops " +
                      std::to_string(options.max_txn_ops) +
                      ", which must match the cluster's --max-txn-ops): split it; nothing was "
                      "written");
  }
  return txn;
}

}  // namespace shmdict::replica
