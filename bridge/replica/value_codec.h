// How shmdict values are stored as etcd values, so that every shmdict type round-trips exactly
// through etcd between replicas while strings and JSON stay readable in `etcdctl get`.
//
//   str (1)             its UTF-8 bytes as they are
//   any other tag T     payload || FF 53 44 T   (payload: the core's encoding of T, value.h;
//                                                 53 44 is "SD"; 4 bytes of trailer)
//
// 0xFF never occurs in UTF-8, so no text can end in a trailer: a value written by another etcd
// client that is valid UTF-8 always reads as str. Decoding never fails: a value whose last four
// bytes are a trailer with a known tag and whose payload is a valid encoding of that tag reads
// as that type; anything else reads as str when it is valid UTF-8, else as bytes (the raw value,
// trailer included). The one ambiguity, said in docs/REPLICA.md: a foreign binary value that
// happens to end in a trailer whose payload is valid reads as typed.
//
// Nested dicts (tag 6) cannot be replicated (their child segments are local): refused on write,
// read as bytes. Pickles (8) only where the operator allowed them (--allow-pickle): refused on
// write, read as bytes otherwise.
//
// Thread-safety: pure functions. Lifetime: results own their bytes.
#ifndef SHMDICT_BRIDGE_REPLICA_VALUE_CODEC_H_
#define SHMDICT_BRIDGE_REPLICA_VALUE_CODEC_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict::replica {

// The first three bytes of the trailer; the fourth is the tag.
inline constexpr std::string_view kTrailerMagic{"\xFF\x53\x44", 3};
inline constexpr size_t kTrailerBytes = 4;

// The etcd value for `value`. Errors (nothing encoded): INVALID_ARGUMENT for a nested-dict value
// or bytes that are not a valid encoding of their tag (ValidateEncoding's message);
// PERMISSION_DENIED for a pickle when !allow_pickle, naming --allow-pickle.
Result<std::string> EncodeValue(const Value& value, bool allow_pickle);

// The shmdict value an etcd value stands for (see the header comment). Never fails.
Value DecodeValue(std::string_view etcd_value, bool allow_pickle);

}  // namespace shmdict::replica

#endif  // SHMDICT_BRIDGE_REPLICA_VALUE_CODEC_H_
