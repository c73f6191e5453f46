#include "shmdict/v1/wire.h"

#include <string>

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

}  // namespace shmdict::wire
