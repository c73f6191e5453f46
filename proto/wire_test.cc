#include "shmdict/v1/wire.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace shmdict::wire {
namespace {

using google::protobuf::FieldDescriptor;

DictStatus FullStatus() {
  DictStatus status;
  status.name = "orders";
  status.layout_version = 7;
  status.revision = 1001;
  status.entries = 42;
  status.log_capacity = 1 << 20;
  status.log_used = 4096;
  status.snapshot_revision = 999;
  status.lock_held = true;
  status.segment_bytes = 3 << 20;
  status.snapshot_generation = 12;
  status.snapshots_built = 11;
  status.lock_holder_pid = 4321;
  status.lock_holder_pid_namespace = 4026531836;
  status.lock_holder_in_this_pid_namespace = false;
  status.lock_recoveries = 2;
  status.creator_pid = 77;
  status.creator_alive = true;
  status.attached = true;
  status.mode = 0640;
  status.replica_of = "etcd:http://127.0.0.1:2379 prefix=/app/";
  status.replica_listen = "127.0.0.1:7400";
  status.upstream_revision = 4242;
  status.upstream_connected = true;
  status.last_upstream_contact = 1765000000123;
  return status;
}

TEST(StatusWireTest, EveryStatusResponseFieldIsARowOfTheStatusTable) {
  std::set<std::string> rows;
  for (const StatusField& field : StatusFields()) rows.insert(std::string(field.wire_name));
  const auto* descriptor = v1::StatusResponse::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    EXPECT_TRUE(rows.contains(descriptor->field(i)->name()))
        << "StatusResponse." << descriptor->field(i)->name()
        << " has no row in StatusFields(): clients would never show it";
  }
}

TEST(StatusWireTest, EveryRowWithAWireNameHasAWireFieldOfItsKind) {
  for (const StatusField& field : StatusFields()) {
    if (field.wire_name.empty()) continue;
    const FieldDescriptor* wire =
        v1::StatusResponse::descriptor()->FindFieldByName(std::string(field.wire_name));
    ASSERT_NE(wire, nullptr) << field.name;
    switch (field.kind) {
      case StatusFieldKind::kText:
        EXPECT_EQ(wire->cpp_type(), FieldDescriptor::CPPTYPE_STRING) << field.name;
        break;
      case StatusFieldKind::kFlag:
        EXPECT_EQ(wire->cpp_type(), FieldDescriptor::CPPTYPE_BOOL) << field.name;
        break;
      case StatusFieldKind::kCount:
      case StatusFieldKind::kFileMode:
        EXPECT_TRUE(wire->cpp_type() == FieldDescriptor::CPPTYPE_UINT32 ||
                    wire->cpp_type() == FieldDescriptor::CPPTYPE_UINT64)
            << field.name;
        break;
    }
  }
}

TEST(StatusWireTest, OptionalMembersMapToWireFieldsWithPresenceAndPlainOnesToPlainFields) {
  // A member the transport may not know must be told apart from a reported zero on the wire.
  const DictStatus empty;
  for (const StatusField& field : StatusFields()) {
    if (field.wire_name.empty()) continue;
    const FieldDescriptor* wire =
        v1::StatusResponse::descriptor()->FindFieldByName(std::string(field.wire_name));
    ASSERT_NE(wire, nullptr) << field.name;
    const bool optional_member = !field.get(empty).has_value();
    EXPECT_EQ(wire->has_presence(), optional_member) << field.name;
  }
}

TEST(StatusWireTest, AFullStatusCrossesTheWireExceptTheCallersOwnNamespaceFlag) {
  v1::StatusResponse wire;
  ToProto(FullStatus(), &wire);
  EXPECT_EQ(wire.dict(), "orders");
  EXPECT_EQ(wire.mode(), 0640u);
  const DictStatus back = FromProto(wire);
  DictStatus expected = FullStatus();
  expected.lock_holder_in_this_pid_namespace.reset();  // about the caller: never sent
  for (const StatusField& field : StatusFields()) {
    EXPECT_EQ(field.get(back), field.get(expected)) << field.name;
  }
}

TEST(StatusWireTest, FieldsAnOlderBridgeDidNotSendStayUnknownNotZero) {
  v1::StatusResponse wire;  // what a v1.0 bridge sends: the plain fields only
  wire.set_dict("orders");
  wire.set_revision(5);
  wire.set_entries(3);
  const DictStatus status = FromProto(wire);
  EXPECT_EQ(status.name, "orders");
  EXPECT_EQ(status.revision, 5u);
  EXPECT_FALSE(status.snapshot_generation.has_value());
  EXPECT_FALSE(status.creator_alive.has_value());
  EXPECT_FALSE(status.mode.has_value());
  EXPECT_FALSE(status.abandoned().has_value());
}

TEST(StatusWireTest, AZeroThatWasReportedIsKnown) {
  DictStatus status = FullStatus();
  status.lock_recoveries = 0;
  status.creator_alive = false;
  v1::StatusResponse wire;
  ToProto(status, &wire);
  const DictStatus back = FromProto(wire);
  EXPECT_EQ(back.lock_recoveries, std::optional<uint64_t>(0));
  EXPECT_EQ(back.creator_alive, std::optional<bool>(false));
}

}  // namespace
}  // namespace shmdict::wire
