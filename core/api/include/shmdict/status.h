// Status and Result<T>: how every fallible shmdict call reports failure.
//
// Nothing in shmdict throws across its API. Operations return a [[nodiscard]] Status, fallible
// constructors and queries a Result<T>. Codes are the gRPC canonical codes (same numbers), so the
// bridge maps them with one cast. A missing key is not an error: lookups return std::optional.
//
// Thread-safety: Status and Result are plain values; distinct objects may be used from distinct
// threads freely, a single object needs external synchronization like any std type.
#ifndef SHMDICT_STATUS_H_
#define SHMDICT_STATUS_H_

#include <cstddef>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shmdict {

// Numbers are gRPC's canonical status codes; do not renumber.
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// Returns the canonical upper-case name ("NOT_FOUND"), or "UNKNOWN" for a number outside the set.
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  // Names the thing and, where there is one, the fix. Empty when ok().
  const std::string& message() const { return message_; }
  // "NOT_FOUND: dict 'orders' does not exist", or "OK".
  std::string ToString() const;

  // Marks a status as deliberately ignored.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Untrusted text in messages. A caller controls every byte of the names and keys it passes, and a
// status travels on (the bridge sends its message to a client in a gRPC header, which a peer
// refuses past a few KiB): a message quotes such text only through QuoteForMessage, which escapes
// it and bounds it. Both functions are pure and thread-safe.

// The most characters of escaped text QuoteForMessage keeps. Every valid dict name
// (kMaxNameLength, dict.h) fits: a message quotes a name it could open whole.
inline constexpr size_t kMaxQuotedBytes = 200;

// `text` with '\\', '"', control bytes, DEL and bytes >= 0x80 written as \xNN, so that it can
// break neither a line nor a "-quoted log field ("'" stays: messages quote with it, and the bridge
// logs whole messages through this same rule). Cut before the escaped text grows past `max_bytes`
// characters, and then followed by "...(N bytes)" with the full length of `text`.
std::string EscapeUntrustedText(std::string_view text, size_t max_bytes);

// `text` quoted for a status message: "'" + EscapeUntrustedText(text, kMaxQuotedBytes) + "'", at
// most kMaxQuotedBytes + 34 bytes whatever `text` is ("dict 'orders' does not exist").
std::string QuoteForMessage(std::string_view text);

// Either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}  // NOLINT: implicit by design, like absl::StatusOr
  Result(Status status) : data_(std::move(status)) {  // NOLINT
    // A Result built from OK carries no value: a programming error, not a runtime condition.
    if (std::get<Status>(data_).ok()) std::abort();
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(data_); }

  // Precondition: ok(). Calling these on an error aborts.
  T& value() & { return Checked(); }
  const T& value() const& { return const_cast<Result*>(this)->Checked(); }
  T&& value() && { return std::move(Checked()); }
  T& operator*() & { return Checked(); }
  const T& operator*() const& { return const_cast<Result*>(this)->Checked(); }
  T* operator->() { return &Checked(); }
  const T* operator->() const { return &const_cast<Result*>(this)->Checked(); }

 private:
  T& Checked() {
    if (!ok()) std::abort();
    return std::get<T>(data_);
  }
  std::variant<T, Status> data_;
};

}  // namespace shmdict

#endif  // SHMDICT_STATUS_H_
