// Argument validation that turns absl's exit(1) on bad flags into a
// one-line INVALID_ARGUMENT (exit 2 in the tools).
#include "client/cli_flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(int32_t, test_max_tokens, 16, "test flag");
ABSL_FLAG(bool, test_ignore_eos, false, "test flag");
ABSL_FLAG(std::string, test_router, "", "test flag");

namespace duet::client {
namespace {

using ::testing::HasSubstr;

absl::Status Check(std::vector<std::string> args) {
  args.insert(args.begin(), "prog");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return CheckFlagArgs(static_cast<int>(argv.size()), argv.data());
}

TEST(CheckFlagArgsTest, AcceptsEverySpellingAbslAccepts) {
  EXPECT_TRUE(Check({"generate", "--test-max-tokens=3"}).ok());
  EXPECT_TRUE(Check({"--test_max_tokens", "3", "generate"}).ok());
  EXPECT_TRUE(Check({"-test-max-tokens=3"}).ok());
  EXPECT_TRUE(Check({"--test-ignore-eos"}).ok());
  EXPECT_TRUE(Check({"--test-ignore-eos=false"}).ok());
  EXPECT_TRUE(Check({"--notest_ignore_eos"}).ok());
  EXPECT_TRUE(Check({"--test-router", "127.0.0.1:5"}).ok());
  EXPECT_TRUE(Check({"--", "--not-a-flag"}).ok());
  EXPECT_TRUE(Check({"positional", "-"}).ok());
}

TEST(CheckFlagArgsTest, NamesTheBadFlag) {
  const absl::Status unknown = Check({"--test-max-tokenz=3"});
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(unknown.message(), "unknown flag --test-max-tokenz (see --help)");
  EXPECT_THAT(std::string(Check({"--test-max-tokens=abc"}).message()),
              HasSubstr("bad value 'abc' for --test-max-tokens"));
  EXPECT_THAT(std::string(Check({"--test-max-tokens"}).message()),
              HasSubstr("--test-max-tokens needs a value"));
  EXPECT_THAT(std::string(Check({"--test-ignore-eos=maybe"}).message()),
              HasSubstr("bad value 'maybe'"));
  // "--no" only negates bools.
  EXPECT_FALSE(Check({"--notest_max_tokens"}).ok());
}

TEST(ParseIdListTest, ParsesCommaSeparatedIds) {
  EXPECT_EQ(*ParseIdList("1,2, 3", "prompt-ids"),
            (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(ParseIdList("", "prompt-ids")->empty());
  EXPECT_EQ(*ParseIdList("-1,,7", "x"), (std::vector<int32_t>{-1, 7}));
  const auto bad = ParseIdList("1,x", "prompt-ids");
  EXPECT_EQ(bad.status().message(),
            "--prompt-ids must be comma-separated integers, got 'x'");
  EXPECT_FALSE(ParseIdList("99999999999", "x").ok());
}

}  // namespace
}  // namespace duet::client
