// The change log's record format: the codes a record carries and the one encoder and decoder of
// its header and body, shared by the writer (Dict::Impl::CommitLocked, LogRing::Write) and every
// reader (LogRing::Read, LogReader, Watcher, the snapshot builder's replay, the dead-writer
// repair). Like leveldb's log_format.h it knows bytes only: no public type of the library, so
// the record bytes cannot change because an API enum did. The structs are layout.h's; the codes
// below are part of the layout too (docs/LAYOUT.md, "Log ring"), under its rule: changing the
// width, order or meaning of a code or a field bumps kLayoutVersion. change_record.h maps the
// engine's ops (the public ChangeOp) onto these codes.
//
// Thread-safety: pure functions of their arguments. Views returned point into the caller's bytes.
#ifndef SHMDICT_CORE_RECORD_FORMAT_H_
#define SHMDICT_CORE_RECORD_FORMAT_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "layout.h"

namespace shmdict::internal {

// RecordHeader::kind.
enum class RecordKind : uint8_t {
  kChange = 1,    // body: ops
  kPadding = 2,   // fills to the ring's end; revision 0, no body
  kExternal = 3,  // body: a BlobRef; the ops are in segment NAME@b<revision>
};
static_assert(static_cast<uint8_t>(RecordKind::kChange) == 1,
              "layout changed: bump kLayoutVersion");
static_assert(static_cast<uint8_t>(RecordKind::kPadding) == 2,
              "layout changed: bump kLayoutVersion");
static_assert(static_cast<uint8_t>(RecordKind::kExternal) == 3,
              "layout changed: bump kLayoutVersion");

// OpHeader::op: what one op of a change body does.
enum class RecordOp : uint8_t {
  kSet = 1,    // key, value (OpHeader::type: the value's type tag)
  kErase = 2,  // key
  kClear = 3,  // no key, no value
  // Not a change: names a nested child (the value) that the record's changes drop the last
  // reference to, so that the next lock holder's repair can unlink it if the writer died first.
  kRetireChild = 0x80,
};
static_assert(static_cast<uint8_t>(RecordOp::kSet) == 1, "layout changed: bump kLayoutVersion");
static_assert(static_cast<uint8_t>(RecordOp::kErase) == 2, "layout changed: bump kLayoutVersion");
static_assert(static_cast<uint8_t>(RecordOp::kClear) == 3, "layout changed: bump kLayoutVersion");
static_assert(static_cast<uint8_t>(RecordOp::kRetireChild) == 0x80,
              "layout changed: bump kLayoutVersion");

// The op code of a byte, or false when the byte is not one.
constexpr bool DecodeRecordOp(uint8_t code, RecordOp* op) {
  switch (static_cast<RecordOp>(code)) {
    case RecordOp::kSet:
    case RecordOp::kErase:
    case RecordOp::kClear:
    case RecordOp::kRetireChild:
      *op = static_cast<RecordOp>(code);
      return true;
  }
  return false;
}

// ---- The record header.

// Bytes a record with a body of `body_bytes` occupies in the ring: header and body, rounded up to
// kRecordAlign.
constexpr uint64_t RecordLength(uint64_t body_bytes) {
  return (sizeof(RecordHeader) + body_bytes + kRecordAlign - 1) & ~uint64_t{kRecordAlign - 1};
}
// The body bytes of a header that RecordFramed accepted.
constexpr uint64_t RecordBodyBytes(const RecordHeader& h) {
  return h.length - sizeof(RecordHeader);
}

// Hash64 of the body, seeded with the header's position, revision, length and kind.
uint64_t RecordChecksum(const RecordHeader& h, std::string_view body);
// The header of a record at `position` (length and checksum filled in).
RecordHeader EncodeRecordHeader(uint64_t position, uint64_t revision, RecordKind kind,
                                std::string_view body);
// The header of a padding record at `position` filling the `room` bytes left before the ring's
// end.
RecordHeader EncodePaddingHeader(uint64_t position, uint64_t room);

// Whether a header read at `position`, with `room` bytes left before the ring's end, frames a
// record there: its own position, and a length that fits. False for stale bytes of an earlier lap.
constexpr bool RecordFramed(const RecordHeader& h, uint64_t position, uint64_t room) {
  return h.position == position && h.length >= sizeof(RecordHeader) &&
         RecordLength(h.length - sizeof(RecordHeader)) <= room;
}
constexpr bool IsPadding(const RecordHeader& h) {
  return h.kind == static_cast<uint8_t>(RecordKind::kPadding);
}

enum class RecordCheck { kChange, kExternal, kPadding, kInvalid };
// What a framed record is, once its body (empty for padding) has been read: kInvalid for an
// unknown kind, a padding record with a revision, or a checksum that does not match.
RecordCheck CheckRecord(const RecordHeader& h, std::string_view body);

// ---- A change body: ops, each an OpHeader then key bytes then value bytes, unaligned.

// One op of a change body; views into the body's bytes.
struct RecordOpView {
  RecordOp op = RecordOp::kSet;
  uint8_t type = 0;  // the value's type tag (docs/LAYOUT.md)
  std::string_view key;
  std::string_view value;
};

void EncodeOp(const RecordOpView& op, std::string* body);

// Calls fn(const RecordOpView&) for each op of `body`, in order, up to the first malformed one;
// false if there is one (truncated, or an op code that is none of RecordOp's).
template <typename Fn>
bool DecodeOps(std::string_view body, Fn&& fn) {
  while (!body.empty()) {
    if (body.size() < sizeof(OpHeader)) return false;
    OpHeader h;
    std::memcpy(&h, body.data(), sizeof(h));
    body.remove_prefix(sizeof(h));
    if (uint64_t{h.key_bytes} + h.value_bytes > body.size()) return false;
    RecordOpView op;
    if (!DecodeRecordOp(h.op, &op.op)) return false;
    op.type = h.type;
    op.key = body.substr(0, h.key_bytes);
    op.value = body.substr(h.key_bytes, h.value_bytes);
    body.remove_prefix(uint64_t{h.key_bytes} + h.value_bytes);
    fn(op);
  }
  return true;
}

// ---- An external body: the BlobRef (layout.h) of the segment holding the ops.

// The body of a kExternal record referring to `ref`; views `ref`'s bytes.
inline std::string_view EncodeBlobRef(const BlobRef& ref) {
  return std::string_view(reinterpret_cast<const char*>(&ref), sizeof(ref));
}
// False if `body` is not a BlobRef's size.
inline bool DecodeBlobRef(std::string_view body, BlobRef* ref) {
  if (body.size() != sizeof(*ref)) return false;
  std::memcpy(ref, body.data(), sizeof(*ref));
  return true;
}

}  // namespace shmdict::internal

#endif  // SHMDICT_CORE_RECORD_FORMAT_H_
