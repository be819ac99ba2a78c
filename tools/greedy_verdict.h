// The greedy-continuation verdict of duet-hf-compare, apart from the model:
// is duet's greedy continuation of one prompt the one transformers produced
// (identical), or, when a scores file from scripts/hf_score_continuations.py
// is given, a valid greedy path of transformers that only took a different
// one of tokens tied in transformers' output dtype (tie-valid)?
#ifndef DUET_TOOLS_GREEDY_VERDICT_H_
#define DUET_TOOLS_GREEDY_VERDICT_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace duet::tools {

// Transformers' teacher-forced view of one step of duet's continuation.
struct StepScore {
  int32_t token = 0;      // duet's token at this step
  int32_t hf_argmax = 0;  // transformers' argmax (lowest id among ties)
  double hf_max_logit = 0;
  double hf_token_logit = 0;  // transformers' logit of duet's token
  bool tie = false;           // token != hf_argmax but tied (the script's rule)
  bool valid = false;         // token == hf_argmax || tie
};

// One case of the scores file, in the golden's prompt order.
struct PromptScores {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;   // the continuation that was scored
  std::vector<StepScore> steps;  // steps[i] scores greedy[i]
  bool all_valid = false;
};

// Parses the JSON written by scripts/hf_score_continuations.py. Errors when
// it is not such JSON, when its case count differs from golden_prompts', when
// case i's prompt is not golden_prompts[i], or when a step is inconsistent
// (valid != (token == hf_argmax || tie), a tie on the argmax itself, a step
// token that is not greedy[i], all_valid not the AND of the steps).
absl::StatusOr<std::vector<PromptScores>> ParseTieAwareScores(
    std::string_view json_text,
    absl::Span<const std::vector<int32_t>> golden_prompts);

enum class GreedyVerdictKind { kIdentical, kTieValid, kInvalid };

struct GreedyVerdict {
  GreedyVerdictKind kind = GreedyVerdictKind::kInvalid;
  // Leading tokens equal to the golden's (== n when identical).
  int32_t identical_prefix = 0;
  // kTieValid: the steps at which duet took a tied token other than
  // transformers' argmax.
  std::vector<int32_t> tie_steps;
  // kInvalid: the first step that is neither identical nor valid. When
  // has_scores, the transformers logits of that step (from the scores file).
  int32_t invalid_step = -1;
  bool has_scores = false;
  int32_t hf_argmax = 0;
  int32_t token = 0;
  double hf_max_logit = 0;
  double hf_token_logit = 0;
};

// Judges the first n tokens of duet's continuation `duet` against the
// golden's `golden` (transformers' incremental greedy continuation).
// Identical when both agree on n tokens. Otherwise, with scores == nullptr,
// invalid at the first mismatch. With scores: the steps before the first
// mismatch are transformers' own choices (identical to the golden); every
// later step must be valid in the scores, else invalid at the first one that
// is not. Errors when duet has fewer than n tokens, or when the scores do not
// cover n steps or scored a different continuation than `duet` (scores from
// another run).
absl::StatusOr<GreedyVerdict> JudgeGreedy(absl::Span<const int32_t> golden,
                                          absl::Span<const int32_t> duet,
                                          int32_t n,
                                          const PromptScores* scores);

// One line for the per-prompt report, e.g. "identical",
// "tie-valid (ties taken at steps 3,9)", "invalid at step 4: HF top id 17
// logit 2.1562 vs our id 40 logit 2.1250".
std::string DescribeVerdict(const GreedyVerdict& verdict);

}  // namespace duet::tools

#endif  // DUET_TOOLS_GREEDY_VERDICT_H_
