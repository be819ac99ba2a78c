#include "common/flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, duet_test_max_tokens, 0, "test flag");
ABSL_FLAG(std::string, duet_test_prompt_ids, "", "test flag");
ABSL_FLAG(bool, duet_test_verbose, false, "test flag");

namespace duet {
namespace {

TEST(NormalizeFlagArgTest, RewritesOnlyTheName) {
  EXPECT_EQ(NormalizeFlagArg("--max-tokens=a-b"), "--max_tokens=a-b");
  EXPECT_EQ(NormalizeFlagArg("--prompt-ids"), "--prompt_ids");
  EXPECT_EQ(NormalizeFlagArg("--prompt-ids=1,2,-3"), "--prompt_ids=1,2,-3");
  EXPECT_EQ(NormalizeFlagArg("--a-b=c=d-e"), "--a_b=c=d-e");
  EXPECT_EQ(NormalizeFlagArg("--x=--y-z"), "--x=--y-z");
  EXPECT_EQ(NormalizeFlagArg("--already_fine=1"), "--already_fine=1");
  EXPECT_EQ(NormalizeFlagArg("--a-b-c-d"), "--a_b_c_d");
  EXPECT_EQ(NormalizeFlagArg("--a-b="), "--a_b=");
}

TEST(NormalizeFlagArgTest, SingleDash) {
  EXPECT_EQ(NormalizeFlagArg("-max-tokens=3"), "-max_tokens=3");
  EXPECT_EQ(NormalizeFlagArg("-prompt-ids"), "-prompt_ids");
  EXPECT_EQ(NormalizeFlagArg("-v"), "-v");
}

TEST(NormalizeFlagArgTest, LeavesNonFlagsAlone) {
  EXPECT_EQ(NormalizeFlagArg(""), "");
  EXPECT_EQ(NormalizeFlagArg("-"), "-");
  EXPECT_EQ(NormalizeFlagArg("--"), "--");
  EXPECT_EQ(NormalizeFlagArg("a-b"), "a-b");
  EXPECT_EQ(NormalizeFlagArg("path/to-file.json"), "path/to-file.json");
  EXPECT_EQ(NormalizeFlagArg("x--y=z-w"), "x--y=z-w");
}

// Runs ParseFlags on a copy of `args` (argv strings must be writable).
std::vector<std::string> Parse(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return ParseFlags(static_cast<int>(args.size()), argv.data());
}

void ResetFlags() {
  absl::SetFlag(&FLAGS_duet_test_max_tokens, 0);
  absl::SetFlag(&FLAGS_duet_test_prompt_ids, "");
  absl::SetFlag(&FLAGS_duet_test_verbose, false);
}

TEST(ParseFlagsTest, DashedNamesSetFlags) {
  ResetFlags();
  const std::vector<std::string> positional =
      Parse({"prog", "--duet-test-max-tokens=12",
             "--duet-test-prompt-ids=1-2-3", "-duet-test-verbose", "input.txt"});
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_max_tokens), 12);
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_prompt_ids), "1-2-3");
  EXPECT_TRUE(absl::GetFlag(FLAGS_duet_test_verbose));
  EXPECT_EQ(positional, (std::vector<std::string>{"prog", "input.txt"}));
}

TEST(ParseFlagsTest, UnderscoreNamesStillWork) {
  ResetFlags();
  Parse({"prog", "--duet_test_max_tokens=5", "--duet_test_prompt_ids=a-b"});
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_max_tokens), 5);
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_prompt_ids), "a-b");
}

TEST(ParseFlagsTest, ValueInSeparateArgument) {
  ResetFlags();
  Parse({"prog", "--duet-test-max-tokens", "7", "--duet-test-prompt-ids",
         "x-y-z"});
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_max_tokens), 7);
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_prompt_ids), "x-y-z");
}

// flags.h: "Only the flag name is rewritten, never its value". A value in the
// argument after its flag that starts with '-' must stay as typed.
TEST(ParseFlagsTest, DashValueInSeparateArgumentIsNotRewritten) {
  ResetFlags();
  Parse({"prog", "--duet-test-prompt-ids", "-1-2"});
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_prompt_ids), "-1-2");
}

TEST(ParseFlagsTest, NothingAfterDoubleDashIsRewritten) {
  ResetFlags();
  const std::vector<std::string> positional =
      Parse({"prog", "--duet-test-max-tokens=3", "first", "--",
             "--duet-test-verbose", "--some-other-thing=a-b", "-x-y"});
  EXPECT_EQ(absl::GetFlag(FLAGS_duet_test_max_tokens), 3);
  EXPECT_FALSE(absl::GetFlag(FLAGS_duet_test_verbose));
  EXPECT_EQ(positional,
            (std::vector<std::string>{"prog", "first", "--duet-test-verbose",
                                      "--some-other-thing=a-b", "-x-y"}));
}

TEST(ParseFlagsTest, ProgramNameUntouched) {
  ResetFlags();
  const std::vector<std::string> positional = Parse({"-weird-name"});
  EXPECT_EQ(positional, (std::vector<std::string>{"-weird-name"}));
}

}  // namespace
}  // namespace duet
