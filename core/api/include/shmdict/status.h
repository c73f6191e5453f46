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
