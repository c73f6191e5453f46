// Conversions between the shmdict.v1 wire types and the core's API types (shmdict/store.h),
// shared by shmdict-bridge and the clients so that both sides map status codes, type tags and ops
// identically.
//
// Thread-safety: stateless functions. Errors: the FromProto functions return kInvalidArgument
// naming the field when a message holds what the API cannot (an unknown type tag or op).
#ifndef SHMDICT_V1_WIRE_H_
#define SHMDICT_V1_WIRE_H_

#include <grpcpp/support/status.h>

#include <string_view>
#include <utility>

#include "shmdict/dict_status.h"
#include "shmdict/status.h"
#include "shmdict/store.h"
#include "shmdict/v1/dict.pb.h"
#include "shmdict/value.h"

namespace shmdict::wire {

// Metadata a bridge sends with each successful write (trailing) and each Watch stream (initial):
// the incarnation (Dict::incarnation) of the dict it reached, in decimal. A dict unlinked and
// created again under its name has another incarnation and starts its revisions over, so a
// revision means something only together with it. A bridge older than this header sends none; a
// client then learns of a replaced dict only from a Watch ending with ABORTED.
inline constexpr std::string_view kIncarnationMetadata = "shmdict-incarnation";

// shmdict's StatusCode numbers are gRPC's canonical codes, so the mapping keeps the code and
// the message.
grpc::Status ToGrpc(const Status& status);
// The reverse. A transport failure (the bridge unreachable) stays kUnavailable or
// kDeadlineExceeded; it never reads as kNotFound.
Status FromGrpc(const grpc::Status& status);

// True for the built-in tags (0..8) and the application's (128..255).
bool IsKnownTypeTag(uint32_t tag);
void ToProto(ValueView value, v1::Value* out);
inline void ToProto(const Value& value, v1::Value* out) { ToProto(value.view(), out); }
// Moves the bytes into the message (no copy).
inline void ToProto(Value&& value, v1::Value* out) {
  out->set_type(static_cast<uint32_t>(value.type()));
  out->set_data(std::move(value).TakeData());
}
Status FromProto(const v1::Value& value, Value* out);

v1::Op ToProto(ChangeOp op);
// kInvalidArgument for OP_UNSPECIFIED and unknown numbers.
Result<ChangeOp> FromProto(v1::Op op);

// The status's fields by their table names (dict_status.h, StatusField::wire_name): every field
// the status knows and the wire carries is set; unknown ones stay unset.
void ToProto(const DictStatus& status, v1::StatusResponse* out);
// Fields an older bridge did not send (proto3 optional, absent) stay unknown (nullopt).
DictStatus FromProto(const v1::StatusResponse& status);

}  // namespace shmdict::wire

#endif  // SHMDICT_V1_WIRE_H_
