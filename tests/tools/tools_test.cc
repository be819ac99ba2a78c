// The command-line tools as a user runs them: real processes, real files.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scratch.h"

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
  return absl::StrCat(::duet::testing::ScratchModelsDir(), "/duet_tools_tiny_",
                      getpid());
}

TEST(ToolsTest, MakeModelThenRunGeneratesWithTimings) {
  ProcessResult make = Execute(
      absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny --out ", ModelDir()));
  ASSERT_EQ(make.exit_code, 0) << make.output;
  EXPECT_THAT(make.output, HasSubstr("wrote tiny checkpoint"));
  ProcessResult run =
      Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                           " --prompt-ids 1,2,3 --max-tokens 4"));
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, HasSubstr("generated (4 tokens"));
  EXPECT_THAT(run.output, HasSubstr("prefill: "));
  EXPECT_THAT(run.output, HasSubstr("decode step 3: "));
  // Dashes and underscores in flag names are the same flag.
  ProcessResult underscores =
      Execute(absl::StrCat(DUET_RUN_BIN, " --model ", ModelDir(),
                           " --prompt_ids=1,2,3 --max_tokens=4"));
  ASSERT_EQ(underscores.exit_code, 0) << underscores.output;
  const auto line = [](const std::string& out) {
    const size_t at = out.find("generated");
    return out.substr(at, out.find('\n', at) - at);
  };
  EXPECT_EQ(line(run.output), line(underscores.output));
}

// duet-run --tensor-parallel-size 2 on the CPU backend (ranks as threads)
// generates what TP=1 does, greedy and sampled; a size that does not divide
// the KV heads is a usage error naming both numbers.
TEST(ToolsTest, RunTensorParallelMatchesOneRank) {
  const std::string dir = ModelDir() + "_tp";
  ASSERT_EQ(
      Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny --out ", dir))
          .exit_code,
      0);
  const auto line = [](const std::string& out) {
    const size_t at = out.find("generated");
    return at == std::string::npos ? out
                                   : out.substr(at, out.find('\n', at) - at);
  };
  for (const std::string sampling :
       {" --max-tokens 12", " --max-tokens 12 --temperature 0.8 --seed 5"}) {
    const std::string base =
        absl::StrCat(DUET_RUN_BIN, " --backend cpu --model ", dir,
                     " --prompt-ids 9,8,7,6,5,4,3,2,1,10,11,12,13,14,15,16,17"
                     " --prefill-chunk 8",
                     sampling);
    ProcessResult one = Execute(base);
    ProcessResult two = Execute(base + " --tensor-parallel-size 2");
    ASSERT_EQ(one.exit_code, 0) << one.output;
    ASSERT_EQ(two.exit_code, 0) << two.output;
    EXPECT_THAT(two.output, HasSubstr("tensor-parallel size 2"));
    EXPECT_EQ(line(one.output), line(two.output)) << sampling;
  }
  ProcessResult four =
      Execute(absl::StrCat(DUET_RUN_BIN, " --backend cpu --model ", dir,
                           " --prompt-ids 1,2 --tensor-parallel-size 4"));
  EXPECT_EQ(four.exit_code, 2) << four.output;
  EXPECT_THAT(four.output,
              HasSubstr("tensor-parallel size 4 does not divide the model's KV "
                        "heads (2)"));
  ProcessResult zero =
      Execute(absl::StrCat(DUET_RUN_BIN, " --backend cpu --model ", dir,
                           " --prompt-ids 1,2 --tensor-parallel-size 0"));
  EXPECT_EQ(zero.exit_code, 2) << zero.output;
  EXPECT_THAT(zero.output, HasSubstr("--tensor-parallel-size must be >= 1"));
}

TEST(ToolsTest, BadArgumentsExitTwoWithAOneLineReason) {
  ProcessResult no_out =
      Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny"));
  EXPECT_EQ(no_out.exit_code, 2);
  EXPECT_THAT(no_out.output, HasSubstr("--out is required"));
  ProcessResult bad_preset =
      Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset huge --out /tmp/x"));
  EXPECT_EQ(bad_preset.exit_code, 2);
  EXPECT_THAT(bad_preset.output, HasSubstr("unknown --preset 'huge'"));
  ProcessResult bad_ids =
      Execute(absl::StrCat(DUET_RUN_BIN, " --model /tmp --prompt-ids 1,x"));
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
  ProcessResult missing = Execute(
      absl::StrCat(DUET_RUN_BIN, " --model /nonexistent --prompt-ids 1"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.output, HasSubstr("/nonexistent/config.json"));
  ASSERT_EQ(Execute(absl::StrCat(DUET_MAKE_MODEL_BIN, " --preset tiny --out ",
                                 ModelDir()))
                .exit_code,
            0);
  ProcessResult bad_token = Execute(absl::StrCat(
      DUET_RUN_BIN, " --model ", ModelDir(), " --prompt-ids 1,999999999"));
  EXPECT_EQ(bad_token.exit_code, 1);
  EXPECT_THAT(bad_token.output, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_THAT(bad_token.output, HasSubstr("outside the vocabulary"));
  ProcessResult bad_top_p = Execute(absl::StrCat(
      DUET_RUN_BIN, " --model ", ModelDir(), " --prompt-ids 1 --top-p 1.5"));
  EXPECT_EQ(bad_top_p.exit_code, 1);
  EXPECT_THAT(bad_top_p.output, HasSubstr("top_p"));
}

}  // namespace
