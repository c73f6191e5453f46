#include "shmdict/v1/wire.h"

#include <cstdlib>
#include <string>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

namespace shmdict::wire {

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  const int code = static_cast<int>(status.error_code());
  // UNAUTHENTICATED (16) has no StatusCode of its own: it is a permission failure to the caller.
  StatusCode mapped = code == grpc::StatusCode::UNAUTHENTICATED ? StatusCode::kPermissionDenied
                      : (code >= 0 && code <= static_cast<int>(StatusCode::kDataLoss))
                          ? static_cast<StatusCode>(code)
                          : StatusCode::kUnknown;
  std::string message = status.error_message();
  if (message.empty()) message = "the bridge answered " + std::string(StatusCodeName(mapped));
  return Status(mapped, std::move(message));
}

bool IsKnownTypeTag(uint32_t tag) {
  return tag <= static_cast<uint32_t>(ValueType::kPickle) ||
         (tag >= static_cast<uint32_t>(ValueType::kUserFirst) && tag <= 255);
}

void ToProto(ValueView value, v1::Value* out) {
  out->set_type(static_cast<uint32_t>(value.type));
  out->set_data(value.data.data(), value.data.size());
}

Status FromProto(const v1::Value& value, Value* out) {
  if (!IsKnownTypeTag(value.type())) {
    return Status(StatusCode::kInvalidArgument,
                  "value type tag " + std::to_string(value.type()) +
                      " is not one of shmdict's (0..8, or 128..255 for the application's own)");
  }
  out->assign(static_cast<ValueType>(value.type()), value.data());
  return Status::Ok();
}

v1::Op ToProto(ChangeOp op) {
  switch (op) {
    case ChangeOp::kSet:
      return v1::OP_SET;
    case ChangeOp::kErase:
      return v1::OP_DELETE;
    case ChangeOp::kClear:
      return v1::OP_CLEAR;
  }
  return v1::OP_UNSPECIFIED;
}

Result<ChangeOp> FromProto(v1::Op op) {
  switch (op) {
    case v1::OP_SET:
      return ChangeOp::kSet;
    case v1::OP_DELETE:
      return ChangeOp::kErase;
    case v1::OP_CLEAR:
      return ChangeOp::kClear;
    default:
      return Status(StatusCode::kInvalidArgument, "op " + std::to_string(static_cast<int>(op)) +
                                                      " is not OP_SET, OP_DELETE or OP_CLEAR");
  }
}

namespace {

using google::protobuf::FieldDescriptor;

// The wire field of a table row; null for a row the wire does not carry. A row that names a field
// the message lacks is a build of mismatched sources: abort (wire_test checks every row).
const FieldDescriptor* WireField(const StatusField& field) {
  if (field.wire_name.empty()) return nullptr;
  const FieldDescriptor* wire =
      v1::StatusResponse::descriptor()->FindFieldByName(std::string(field.wire_name));
  if (wire == nullptr) std::abort();
  return wire;
}

}  // namespace

void ToProto(const DictStatus& status, v1::StatusResponse* out) {
  const google::protobuf::Reflection* reflection = out->GetReflection();
  for (const StatusField& field : StatusFields()) {
    const FieldDescriptor* wire = WireField(field);
    std::optional<StatusFieldValue> value = field.get(status);
    if (wire == nullptr || !value) continue;
    if (const auto* text = std::get_if<std::string>(&*value)) {
      reflection->SetString(out, wire, *text);
    } else if (const auto* flag = std::get_if<bool>(&*value)) {
      reflection->SetBool(out, wire, *flag);
    } else if (wire->cpp_type() == FieldDescriptor::CPPTYPE_UINT32) {
      reflection->SetUInt32(out, wire, static_cast<uint32_t>(std::get<uint64_t>(*value)));
    } else {
      reflection->SetUInt64(out, wire, std::get<uint64_t>(*value));
    }
  }
}

DictStatus FromProto(const v1::StatusResponse& in) {
  DictStatus status;
  const google::protobuf::Reflection* reflection = in.GetReflection();
  for (const StatusField& field : StatusFields()) {
    const FieldDescriptor* wire = WireField(field);
    if (wire == nullptr) continue;
    if (wire->has_presence() && !reflection->HasField(in, wire)) continue;
    switch (wire->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        field.set(status, reflection->GetString(in, wire));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        field.set(status, reflection->GetBool(in, wire));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        field.set(status, uint64_t{reflection->GetUInt32(in, wire)});
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        field.set(status, reflection->GetUInt64(in, wire));
        break;
      default:
        std::abort();  // a status field of another wire type: wire_test catches it
    }
  }
  return status;
}

}  // namespace shmdict::wire
