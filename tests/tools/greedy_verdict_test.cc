// The greedy verdict of duet-hf-compare: identical, tie-valid, invalid, and
// the scores file's consistency checks.
#include "tools/greedy_verdict.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::tools {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// One scored step as scripts/hf_score_continuations.py writes it.
Json Step(int32_t token, int32_t argmax, bool tie) {
  return {{"token", token},
          {"hf_argmax", argmax},
          {"hf_max_logit", 2.15625},
          {"hf_token_logit", tie ? 2.15625 : 1.5},
          {"tie", tie},
          {"valid", token == argmax || tie}};
}

Json Case(const std::vector<int32_t>& prompt, const std::vector<Json>& steps) {
  std::vector<int32_t> greedy;
  bool all_valid = true;
  for (const Json& s : steps) {
    greedy.push_back(s["token"].get<int32_t>());
    all_valid = all_valid && s["valid"].get<bool>();
  }
  return {{"prompt_len", prompt.size()},
          {"prompt", prompt},
          {"greedy", greedy},
          {"steps", steps},
          {"all_valid", all_valid}};
}

const std::vector<int32_t> kPrompt = {5, 6, 7};
const std::vector<int32_t> kGolden = {10, 11, 12, 13};

// Scores for continuation `duet` where the steps in `ties` are ties, the
// steps in `bad` invalid, and every other step transformers' argmax.
PromptScores Scores(const std::vector<int32_t>& duet,
                    const std::vector<int32_t>& ties,
                    const std::vector<int32_t>& bad) {
  std::vector<Json> steps;
  for (int32_t i = 0; i < static_cast<int32_t>(duet.size()); ++i) {
    const bool tie = std::find(ties.begin(), ties.end(), i) != ties.end();
    const bool invalid = std::find(bad.begin(), bad.end(), i) != bad.end();
    steps.push_back(Step(duet[i], tie || invalid ? 99 : duet[i], tie));
  }
  const Json file = {{"cases", {Case(kPrompt, steps)}}};
  const std::vector<std::vector<int32_t>> prompts = {kPrompt};
  auto parsed = ParseTieAwareScores(file.dump(), prompts);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? (*parsed)[0] : PromptScores{};
}

TEST(GreedyVerdictTest, IdenticalWithoutScores) {
  auto v = JudgeGreedy(kGolden, kGolden, 4, nullptr);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kIdentical);
  EXPECT_EQ(v->identical_prefix, 4);
  EXPECT_EQ(DescribeVerdict(*v), "identical");
}

TEST(GreedyVerdictTest, OnlyTheFirstNTokensCount) {
  const std::vector<int32_t> duet = {10, 11, 40, 41};
  auto v = JudgeGreedy(kGolden, duet, 2, nullptr);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kIdentical);
}

TEST(GreedyVerdictTest, MismatchWithoutScoresIsInvalid) {
  const std::vector<int32_t> duet = {10, 11, 40, 41};
  auto v = JudgeGreedy(kGolden, duet, 4, nullptr);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kInvalid);
  EXPECT_EQ(v->identical_prefix, 2);
  EXPECT_EQ(v->invalid_step, 2);
  EXPECT_FALSE(v->has_scores);
  EXPECT_THAT(DescribeVerdict(*v), HasSubstr("invalid at step 2"));
}

TEST(GreedyVerdictTest, IdenticalWinsOverScores) {
  // Identical to the golden needs no scores, even ones that call a step
  // invalid (teacher-forced numerics differ from incremental ones).
  const PromptScores s = Scores(kGolden, {}, {1});
  auto v = JudgeGreedy(kGolden, kGolden, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kIdentical);
}

TEST(GreedyVerdictTest, TieThenArgmaxIsTieValid) {
  // Step 1 took a tied token, then followed transformers' argmax.
  const std::vector<int32_t> duet = {10, 40, 41, 42};
  const PromptScores s = Scores(duet, {1}, {});
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kTieValid);
  EXPECT_EQ(v->identical_prefix, 1);
  EXPECT_THAT(v->tie_steps, ElementsAre(1));
  EXPECT_EQ(DescribeVerdict(*v),
            "tie-valid (identical for 1, ties taken at steps 1)");
}

TEST(GreedyVerdictTest, SeveralTiesAreListed) {
  const std::vector<int32_t> duet = {40, 41, 42, 43};
  const PromptScores s = Scores(duet, {0, 3}, {});
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kTieValid);
  EXPECT_THAT(v->tie_steps, ElementsAre(0, 3));
  EXPECT_THAT(DescribeVerdict(*v), HasSubstr("ties taken at steps 0,3"));
}

TEST(GreedyVerdictTest, InvalidAfterTie) {
  const std::vector<int32_t> duet = {10, 40, 41, 42};
  const PromptScores s = Scores(duet, {1}, {2});
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kInvalid);
  EXPECT_EQ(v->invalid_step, 2);
  EXPECT_TRUE(v->has_scores);
  EXPECT_EQ(v->hf_argmax, 99);
  EXPECT_EQ(v->token, 41);
  EXPECT_EQ(v->hf_max_logit, 2.15625);
  EXPECT_EQ(v->hf_token_logit, 1.5);
  EXPECT_TRUE(v->tie_steps.empty());
  EXPECT_THAT(DescribeVerdict(*v),
              HasSubstr("invalid at step 2: HF top id 99 logit 2.15625 vs "
                        "our id 41 logit 1.5"));
}

TEST(GreedyVerdictTest, InvalidAtDivergenceWithoutTie) {
  // A plain wrong token (not tied) where duet left the golden: a real bug.
  const std::vector<int32_t> duet = {10, 11, 40, 41};
  const PromptScores s = Scores(duet, {}, {2});
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kInvalid);
  EXPECT_EQ(v->invalid_step, 2);
}

TEST(GreedyVerdictTest, InvalidStepBeyondNIsIgnored) {
  const std::vector<int32_t> duet = {10, 40, 41, 42};
  const PromptScores s = Scores(duet, {1}, {3});
  auto v = JudgeGreedy(kGolden, duet, 3, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kTieValid);
}

TEST(GreedyVerdictTest, DivergedButTeacherForcedArgmaxIsTieValidNoTies) {
  const std::vector<int32_t> duet = {10, 40, 41, 42};
  const PromptScores s = Scores(duet, {}, {});
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->kind, GreedyVerdictKind::kTieValid);
  EXPECT_TRUE(v->tie_steps.empty());
  EXPECT_THAT(DescribeVerdict(*v), HasSubstr("no ties"));
}

TEST(GreedyVerdictTest, ScoresOfAnotherContinuationAreAnError) {
  const PromptScores s = Scores({10, 40, 41, 42}, {1}, {});
  const std::vector<int32_t> duet = {10, 40, 77, 42};
  auto v = JudgeGreedy(kGolden, duet, 4, &s);
  EXPECT_FALSE(v.ok());
  EXPECT_THAT(v.status().message(), HasSubstr("another continuation"));
}

TEST(GreedyVerdictTest, TooFewScoredStepsIsAnError) {
  const PromptScores s = Scores({10, 40}, {1}, {});
  const std::vector<int32_t> duet = {10, 40, 41, 42};
  EXPECT_FALSE(JudgeGreedy(kGolden, duet, 4, &s).ok());
}

TEST(GreedyVerdictTest, TooShortContinuationIsAnError) {
  const std::vector<int32_t> duet = {10, 11};
  EXPECT_FALSE(JudgeGreedy(kGolden, duet, 4, nullptr).ok());
}

TEST(ParseTieAwareScoresTest, MismatchedPromptCountIsAnError) {
  const Json file = {{"cases", {Case(kPrompt, {Step(1, 1, false)})}}};
  const std::vector<std::vector<int32_t>> prompts = {kPrompt, kPrompt};
  auto parsed = ParseTieAwareScores(file.dump(), prompts);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(),
              HasSubstr("1 cases but the golden has 2"));
}

TEST(ParseTieAwareScoresTest, DifferentPromptIsAnError) {
  const Json file = {{"cases", {Case({5, 6, 8}, {Step(1, 1, false)})}}};
  const std::vector<std::vector<int32_t>> prompts = {kPrompt};
  auto parsed = ParseTieAwareScores(file.dump(), prompts);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("not the golden's prompt"));
}

TEST(ParseTieAwareScoresTest, NotJsonOrMissingFieldsIsAnError) {
  const std::vector<std::vector<int32_t>> prompts = {kPrompt};
  EXPECT_FALSE(ParseTieAwareScores("{cases", prompts).ok());
  EXPECT_FALSE(ParseTieAwareScores("{}", prompts).ok());
  EXPECT_FALSE(
      ParseTieAwareScores(R"({"cases":[{"prompt":[5,6,7]}]})", prompts).ok());
}

TEST(ParseTieAwareScoresTest, InconsistentStepsAreErrors) {
  const std::vector<std::vector<int32_t>> prompts = {kPrompt};
  // valid without being the argmax or a tie.
  Json bad_valid = Step(3, 4, false);
  bad_valid["valid"] = true;
  // a "tie" on the argmax itself.
  Json tie_on_argmax = Step(3, 3, false);
  tie_on_argmax["tie"] = true;
  for (const Json& step : {bad_valid, tie_on_argmax}) {
    const Json file = {{"cases", {Case(kPrompt, {step})}}};
    EXPECT_FALSE(ParseTieAwareScores(file.dump(), prompts).ok()) << step;
  }
  // all_valid that is not the AND of the steps.
  Json c = Case(kPrompt, {Step(3, 4, false)});
  c["all_valid"] = true;
  EXPECT_FALSE(ParseTieAwareScores(Json{{"cases", {c}}}.dump(), prompts).ok());
  // a step token that is not the scored continuation's.
  c = Case(kPrompt, {Step(3, 3, false)});
  c["greedy"] = {4};
  EXPECT_FALSE(ParseTieAwareScores(Json{{"cases", {c}}}.dump(), prompts).ok());
}

TEST(ParseTieAwareScoresTest, ReadsEveryField) {
  const Json file = {
      {"cases", {Case(kPrompt, {Step(3, 3, false), Step(8, 2, true)})}}};
  const std::vector<std::vector<int32_t>> prompts = {kPrompt};
  auto parsed = ParseTieAwareScores(file.dump(), prompts);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 1u);
  const PromptScores& s = (*parsed)[0];
  EXPECT_EQ(s.prompt, kPrompt);
  EXPECT_THAT(s.greedy, ElementsAre(3, 8));
  EXPECT_TRUE(s.all_valid);
  ASSERT_EQ(s.steps.size(), 2u);
  EXPECT_EQ(s.steps[1].token, 8);
  EXPECT_EQ(s.steps[1].hf_argmax, 2);
  EXPECT_EQ(s.steps[1].hf_max_logit, 2.15625);
  EXPECT_EQ(s.steps[1].hf_token_logit, 2.15625);
  EXPECT_TRUE(s.steps[1].tie);
  EXPECT_TRUE(s.steps[1].valid);
}

}  // namespace
}  // namespace duet::tools
