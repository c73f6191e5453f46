// Status assertions and gMock matchers for shmdict::Status and shmdict::Result<T>, part of the
// shmdict::testing kit (tests only, never installed). Every failure prints the expression and the
// status's code and message.
//
//   ASSERT_OK(dict.Set("k", Value::Int(1))) << "context";
//   EXPECT_OK(Dict::UnlinkByName(name));
//   ASSERT_OK_AND_ASSIGN(Dict dict, Dict::Open(options));
//   ASSERT_OK_AND_ASSIGN(auto got, store.Get("k"));
//   EXPECT_THAT(dict.Increment("text", 1), StatusIs(StatusCode::kFailedPrecondition));
//   EXPECT_THAT(Dict::Open(o), StatusIs(StatusCode::kNotFound, HasSubstr(name)));
//   EXPECT_THAT(store.Size(), IsOkAndHolds(3u));
//
// Thread-safety: as GoogleTest's assertions (safe from any thread where gtest is).
#ifndef SHMDICT_TESTS_SUPPORT_STATUS_MATCHERS_H_
#define SHMDICT_TESTS_SUPPORT_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shmdict/status.h"
#include "shmdict/value.h"

namespace shmdict {

// gtest prints these through PrintTo (found by argument-dependent lookup), so a failed matcher
// shows "NOT_FOUND: dict 'x' ..." instead of the object's bytes.
inline void PrintTo(const Status& status, std::ostream* os) { *os << status.ToString(); }
inline void PrintTo(const Value& value, std::ostream* os) {
  *os << TypeName(value.type()) << "(" << value.ToText() << ")";
}
template <typename T>
void PrintTo(const Result<T>& result, std::ostream* os) {
  if (result.ok()) {
    *os << "OK holding " << ::testing::PrintToString(*result);
  } else {
    *os << result.status().ToString();
  }
}

namespace testing {

inline const Status& ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}

// (The switch is gtest's guard against a dangling else.)
#define SHMDICT_STATUS_CHECK_(on_failure, expr)                                       \
  switch (0)                                                                          \
  case 0:                                                                             \
  default:                                                                            \
    if (const ::shmdict::Status shmdict_status_ = ::shmdict::testing::ToStatus(expr); \
        shmdict_status_.ok()) {                                                       \
    } else                                                                            \
      on_failure() << #expr << " returned " << shmdict_status_.ToString() << " "
#define ASSERT_OK(expr) SHMDICT_STATUS_CHECK_(GTEST_FAIL, expr)
#define EXPECT_OK(expr) SHMDICT_STATUS_CHECK_(ADD_FAILURE, expr)

// ASSERT_OK_AND_ASSIGN(lhs, expr): expr is a Result<T>; on success moves its value into lhs (a
// declaration such as `auto x` or an existing variable), otherwise fails the test and returns.
#define SHMDICT_CONCAT_INNER_(a, b) a##b
#define SHMDICT_CONCAT_(a, b) SHMDICT_CONCAT_INNER_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  SHMDICT_ASSERT_OK_AND_ASSIGN_(SHMDICT_CONCAT_(shmdict_result_, __LINE__), lhs, expr)
#define SHMDICT_ASSERT_OK_AND_ASSIGN_(result, lhs, expr)                           \
  auto result = (expr);                                                            \
  ASSERT_TRUE(result.ok()) << #expr << " returned " << result.status().ToString(); \
  lhs = std::move(*result)

// StatusIs(code) / StatusIs(code, message_matcher): matches a Status or a Result<T> whose status
// has that code (kOk included) and, if given, a message the matcher accepts.
class StatusIsMatcher {
 public:
  StatusIsMatcher(StatusCode code, ::testing::Matcher<const std::string&> message)
      : code_(code), message_(std::move(message)) {}

  template <typename T>
  bool MatchAndExplain(const T& value, ::testing::MatchResultListener* listener) const {
    // (The value itself is printed by gtest through PrintTo.)
    const Status status = ToStatus(value);
    if (status.code() != code_) return false;
    const std::string message(status.message());
    return message_.MatchAndExplain(message, listener);
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has status code " << StatusCodeName(code_) << " and a message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have status code " << StatusCodeName(code_) << " or a message that ";
    message_.DescribeTo(os);
  }

 private:
  StatusCode code_;
  ::testing::Matcher<const std::string&> message_;
};

inline ::testing::PolymorphicMatcher<StatusIsMatcher> StatusIs(
    StatusCode code, ::testing::Matcher<const std::string&> message = ::testing::_) {
  return ::testing::MakePolymorphicMatcher(StatusIsMatcher(code, std::move(message)));
}

// IsOk(): a Status or Result<T> that is OK.
inline ::testing::PolymorphicMatcher<StatusIsMatcher> IsOk() { return StatusIs(StatusCode::kOk); }

// IsOkAndHolds(m): a Result<T> that is OK and whose value matches m.
template <typename ResultRef>
class IsOkAndHoldsMatcherImpl : public ::testing::MatcherInterface<ResultRef> {
 public:
  using ResultType = std::remove_cvref_t<ResultRef>;
  using ValueType = std::remove_cvref_t<decltype(*std::declval<const ResultType&>())>;

  template <typename InnerMatcher>
  explicit IsOkAndHoldsMatcherImpl(InnerMatcher&& inner)
      : inner_(::testing::SafeMatcherCast<const ValueType&>(std::forward<InnerMatcher>(inner))) {}

  void DescribeTo(std::ostream* os) const override {
    *os << "is OK and holds a value that ";
    inner_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const override {
    *os << "is not OK, or holds a value that ";
    inner_.DescribeNegationTo(os);
  }
  bool MatchAndExplain(ResultRef result, ::testing::MatchResultListener* listener) const override {
    if (!result.ok()) {
      *listener << "whose status is " << result.status().ToString();
      return false;
    }
    ::testing::StringMatchResultListener inner_listener;
    const bool matched = inner_.MatchAndExplain(*result, &inner_listener);
    const std::string explanation = inner_listener.str();
    *listener << "whose value " << ::testing::PrintToString(*result)
              << (matched ? " matches" : " doesn't match");
    if (!explanation.empty()) *listener << ", " << explanation;
    return matched;
  }

 private:
  const ::testing::Matcher<const ValueType&> inner_;
};

template <typename InnerMatcher>
class IsOkAndHoldsMatcher {
 public:
  explicit IsOkAndHoldsMatcher(InnerMatcher inner) : inner_(std::move(inner)) {}
  template <typename ResultRef>
  operator ::testing::Matcher<ResultRef>() const {  // NOLINT: gMock's conversion protocol
    return ::testing::Matcher<ResultRef>(new IsOkAndHoldsMatcherImpl<const ResultRef&>(inner_));
  }

 private:
  const InnerMatcher inner_;
};

template <typename InnerMatcher>
IsOkAndHoldsMatcher<std::decay_t<InnerMatcher>> IsOkAndHolds(InnerMatcher&& inner) {
  return IsOkAndHoldsMatcher<std::decay_t<InnerMatcher>>(std::forward<InnerMatcher>(inner));
}

}  // namespace testing
}  // namespace shmdict

#endif  // SHMDICT_TESTS_SUPPORT_STATUS_MATCHERS_H_
