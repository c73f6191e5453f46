#include "record_format.h"

#include "hash.h"

namespace shmdict::internal {

uint64_t RecordChecksum(const RecordHeader& h, std::string_view body) {
  const uint64_t seed =
      h.position ^ (h.revision * 0x9E3779B97F4A7C15ull) ^ (uint64_t{h.length} << 8) ^ h.kind;
  return Hash64(body.data(), body.size(), seed);
}

RecordHeader EncodeRecordHeader(uint64_t position, uint64_t revision, RecordKind kind,
                                std::string_view body) {
  RecordHeader h{};
  h.position = position;
  h.revision = revision;
  h.length = static_cast<uint32_t>(sizeof(h) + body.size());
  h.kind = static_cast<uint8_t>(kind);
  h.checksum = RecordChecksum(h, body);
  return h;
}

RecordHeader EncodePaddingHeader(uint64_t position, uint64_t room) {
  RecordHeader h{};
  h.position = position;
  h.length = static_cast<uint32_t>(room);
  h.kind = static_cast<uint8_t>(RecordKind::kPadding);
  h.checksum = RecordChecksum(h, {});
  return h;
}

RecordCheck CheckRecord(const RecordHeader& h, std::string_view body) {
  switch (static_cast<RecordKind>(h.kind)) {
    case RecordKind::kPadding:
      // Its body is the rest of the ring, never read: the checksum covers none of it.
      return h.revision == 0 ? RecordCheck::kPadding : RecordCheck::kInvalid;
    case RecordKind::kChange:
    case RecordKind::kExternal:
      if (RecordChecksum(h, body) != h.checksum) return RecordCheck::kInvalid;
      return h.kind == static_cast<uint8_t>(RecordKind::kChange) ? RecordCheck::kChange
                                                                 : RecordCheck::kExternal;
  }
  return RecordCheck::kInvalid;
}

void EncodeOp(const RecordOpView& op, std::string* body) {
  OpHeader h{};
  h.op = static_cast<uint8_t>(op.op);
  h.type = op.type;
  h.key_bytes = static_cast<uint32_t>(op.key.size());
  h.value_bytes = static_cast<uint32_t>(op.value.size());
  body->append(reinterpret_cast<const char*>(&h), sizeof(h));
  body->append(op.key);
  body->append(op.value);
}

}  // namespace shmdict::internal
