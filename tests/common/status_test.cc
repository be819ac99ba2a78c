#include "common/status.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace duet {
namespace {

// Records which steps ran so tests can check where a function stopped.
struct Trace {
  std::vector<std::string> steps;
  absl::Status Step(std::string name, absl::Status result) {
    steps.push_back(std::move(name));
    return result;
  }
};

absl::Status RunSteps(Trace& trace, absl::Status a, absl::Status b,
                      absl::Status c) {
  DUET_RETURN_IF_ERROR(trace.Step("a", a));
  DUET_RETURN_IF_ERROR(trace.Step("b", b));
  DUET_RETURN_IF_ERROR(trace.Step("c", c));
  trace.steps.push_back("end");
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorContinuesOnOk) {
  Trace trace;
  EXPECT_TRUE(
      RunSteps(trace, absl::OkStatus(), absl::OkStatus(), absl::OkStatus())
          .ok());
  EXPECT_EQ(trace.steps, (std::vector<std::string>{"a", "b", "c", "end"}));
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsFirstError) {
  Trace trace;
  const absl::Status s =
      RunSteps(trace, absl::OkStatus(), absl::NotFoundError("first"),
               absl::InternalError("second"));
  EXPECT_EQ(s, absl::NotFoundError("first"));
  EXPECT_EQ(trace.steps, (std::vector<std::string>{"a", "b"}));

  Trace trace2;
  EXPECT_EQ(RunSteps(trace2, absl::CancelledError("x"), absl::OkStatus(),
                     absl::OkStatus()),
            absl::CancelledError("x"));
  EXPECT_EQ(trace2.steps, (std::vector<std::string>{"a"}));
}

TEST(StatusMacrosTest, ReturnIfErrorWorksInIfWithoutBraces) {
  auto f = [](bool check, absl::Status s) -> absl::Status {
    if (check)
      DUET_RETURN_IF_ERROR(s);
    else
      return absl::AbortedError("else branch");
    return absl::OkStatus();
  };
  EXPECT_TRUE(f(true, absl::OkStatus()).ok());
  EXPECT_EQ(f(true, absl::DataLossError("d")).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(f(false, absl::OkStatus()).code(), absl::StatusCode::kAborted);
}

absl::StatusOr<int> MaybeInt(bool ok, int value) {
  if (!ok) return absl::OutOfRangeError("no int");
  return value;
}

absl::StatusOr<std::unique_ptr<std::string>> MaybeOwned(bool ok,
                                                        std::string value) {
  if (!ok) return absl::ResourceExhaustedError("no string");
  return std::make_unique<std::string>(std::move(value));
}

absl::StatusOr<int> SumWithDeclarations(bool ok_a, bool ok_b) {
  DUET_ASSIGN_OR_RETURN(int a, MaybeInt(ok_a, 40));
  DUET_ASSIGN_OR_RETURN(const int b, MaybeInt(ok_b, 2));
  return a + b;
}

TEST(StatusMacrosTest, AssignOrReturnDeclares) {
  absl::StatusOr<int> r = SumWithDeclarations(true, true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 42);
  EXPECT_EQ(SumWithDeclarations(false, true).status(),
            absl::OutOfRangeError("no int"));
  EXPECT_EQ(SumWithDeclarations(true, false).status(),
            absl::OutOfRangeError("no int"));
}

absl::StatusOr<int> AssignToExisting(bool ok) {
  int x = -1;
  DUET_ASSIGN_OR_RETURN(x, MaybeInt(ok, 7));
  return x * 2;
}

TEST(StatusMacrosTest, AssignOrReturnAssignsExistingVariable) {
  EXPECT_EQ(*AssignToExisting(true), 14);
  EXPECT_FALSE(AssignToExisting(false).ok());
}

// Two move-only assignments in one function (distinct hidden temporaries).
absl::StatusOr<std::string> JoinOwned(bool ok_a, bool ok_b) {
  DUET_ASSIGN_OR_RETURN(std::unique_ptr<std::string> a,
                        MaybeOwned(ok_a, "left"));
  DUET_ASSIGN_OR_RETURN(auto b, MaybeOwned(ok_b, "right"));
  static_assert(std::is_same_v<decltype(b), std::unique_ptr<std::string>>);
  if (a == nullptr || b == nullptr) return absl::InternalError("null");
  return *a + "+" + *b;
}

TEST(StatusMacrosTest, AssignOrReturnMoveOnlyTwice) {
  absl::StatusOr<std::string> r = JoinOwned(true, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "left+right");
  EXPECT_EQ(JoinOwned(false, true).status(),
            absl::ResourceExhaustedError("no string"));
  EXPECT_EQ(JoinOwned(true, false).status(),
            absl::ResourceExhaustedError("no string"));
}

// The error type of the enclosing function may differ from the callee's
// (StatusOr<A> -> Status).
absl::Status UseOwned(bool ok, std::string* out) {
  DUET_ASSIGN_OR_RETURN(auto p, MaybeOwned(ok, "payload"));
  *out = *p;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, AssignOrReturnInStatusFunction) {
  std::string out;
  EXPECT_TRUE(UseOwned(true, &out).ok());
  EXPECT_EQ(out, "payload");
  EXPECT_EQ(UseOwned(false, &out).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(StatusMacrosTest, AssignOrReturnEvaluatesExpressionOnce) {
  int calls = 0;
  auto f = [&]() -> absl::StatusOr<int> {
    DUET_ASSIGN_OR_RETURN(int v, ([&]() -> absl::StatusOr<int> {
                            ++calls;
                            return 5;
                          }()));
    return v;
  };
  EXPECT_EQ(*f(), 5);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace duet
