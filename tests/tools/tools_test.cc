// The command-line tools as a user runs them: real processes, real files.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

using ::testing::HasSubstr;

struct ProcessResult {
  int exit_code;
  std::string output;  // stdout + stderr
};

ProcessResult Execute(const std::string& command) {
  ProcessResult run{-1, ""};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    run.output.append(buf.data(), n);
  }
  const int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string ModelDir() {
  return absl::StrCat(::testing::TempDir(), "/duet_tools_tiny_", getpid());
}

TEST(ToolsTest, MakeModelThenRunGeneratesWithTimings) {
  ProcessResult make = Execute(absl::StrCat(DUET_MAKE_MODEL_BIN,
                                  " --preset tiny --out ", ModelDir()));
  ASSERT_EQ(make.exit_code, 0) << make.output;
  EXPECT_THAT(make.output, HasSubstr("wrote tiny checkpoint"));
  ProcessResult run = Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                                 " --prompt-ids 1,2,3 --max-tokens 4"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("generated (4 tokens"));
  EXPECT_THAT(run.output, HasSubstr("prefill: "));
  EXPECT_THAT(run.output, HasSubstr("decode step 3: "));
  // Dashes and underscores in flag names are the same flag.
  ProcessResult underscores = Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                                         " --prompt_ids=1,2,3 --max_tokens=4"));
  ASSERT_EQ(underscores.exit_code, 0) << underscores.output;
  const auto line = [](const std::string& out) {
    const size_t at = out.find("generated");
    return out.substr(at, out.find('\n', at) - at);
  };
  EXPECT_EQ(line(run.output), line(underscores.output));
}

TEST(ToolsTest, BadArgumentsExitTwoWithAOneLineReason) {
  ProcessResult no_out = Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny"));
  EXPECT_EQ(no_out.exit_code, 2);
  EXPECT_THAT(no_out.output, HasSubstr("--out is required"));
  ProcessResult bad_preset = Execute(absl::StrCat(DUET_MAKE_MODEL_BIN,
                                        " --preset huge --out /tmp/x"));
  EXPECT_EQ(bad_preset.exit_code, 2);
  EXPECT_THAT(bad_preset.output, HasSubstr("unknown --preset 'huge'"));
  ProcessResult bad_ids = Execute(absl::StrCat(DUET_RUN_BIN,
                                     " --model /tmp --prompt-ids 1,x"));
  EXPECT_EQ(bad_ids.exit_code, 2);
  EXPECT_THAT(bad_ids.output, HasSubstr("comma-separated integers"));
}

TEST(ToolsTest, HelpListsTheToolsOwnFlags) {
  ProcessResult help = Execute(absl::StrCat(DUET_RUN_BIN, " --help"));
  EXPECT_EQ(help.exit_code, 0) << help.output;
  EXPECT_THAT(help.output, HasSubstr("--prompt-ids"));
  EXPECT_THAT(help.output, HasSubstr("--backend"));
  EXPECT_THAT(help.output, ::testing::Not(HasSubstr("No flags matched")));
}

TEST(ToolsTest, RunReportsModelAndRequestErrors) {
  ProcessResult missing = Execute(absl::StrCat(DUET_RUN_BIN,
                                     " --model /nonexistent --prompt-ids 1"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent/config.json"));
  ASSERT_EQ(Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny --out ",
                                 ModelDir()))
                .exit_code,
            0);
  ProcessResult bad_token = Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                                       " --prompt-ids 1,999999999"));
  EXPECT_EQ(bad_token.exit_code, 1);
  EXPECT_THAT(bad_token.output, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_token.output, HasSubstr("outside the vocabulary"));
  ProcessResult bad_top_p = Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                                       " --prompt-ids 1 --top-p 1.5"));
  EXPECT_EQ(bad_top_p.exit_code, 1);
  EXPECT_THAT(bad_top_p.output, HasSubstr("top_p"));
}

}  // namespace
