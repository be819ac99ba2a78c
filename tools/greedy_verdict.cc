#include "tools/greedy_verdict.h"

#include <cstddef>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace duet::tools {
namespace {

using Json = nlohmann::json;

absl::Status Invalid(const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("tie-aware scores: ", msg));
}

absl::StatusOr<PromptScores> ParseCase(const Json& c, size_t index,
                                       const std::vector<int32_t>& want) {
  const std::string where = absl::StrCat("case ", index, ": ");
  PromptScores out;
  out.prompt = c.at("prompt").get<std::vector<int32_t>>();
  out.greedy = c.at("greedy").get<std::vector<int32_t>>();
  out.all_valid = c.at("all_valid").get<bool>();
  if (c.at("prompt_len").get<int64_t>() !=
      static_cast<int64_t>(out.prompt.size())) {
    return Invalid(where + "prompt_len is not the prompt's length");
  }
  if (out.prompt != want) {
    return Invalid(absl::StrCat(where, "prompt (", out.prompt.size(),
                                " tokens) is not the golden's prompt (",
                                want.size(), " tokens)"));
  }
  const Json& steps = c.at("steps");
  if (!steps.is_array() || steps.size() != out.greedy.size()) {
    return Invalid(where + "needs one step per greedy token");
  }
  bool all_valid = true;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Json& s = steps[i];
    StepScore step;
    step.token = s.at("token").get<int32_t>();
    step.hf_argmax = s.at("hf_argmax").get<int32_t>();
    step.hf_max_logit = s.at("hf_max_logit").get<double>();
    step.hf_token_logit = s.at("hf_token_logit").get<double>();
    step.tie = s.at("tie").get<bool>();
    step.valid = s.at("valid").get<bool>();
    const std::string at = absl::StrCat(where, "step ", i, ": ");
    if (step.token != out.greedy[i]) {
      return Invalid(at + "token is not the scored continuation's");
    }
    if (step.tie && step.token == step.hf_argmax) {
      return Invalid(at + "a tie on the argmax itself");
    }
    if (step.valid != (step.token == step.hf_argmax || step.tie)) {
      return Invalid(at + "valid != (token == hf_argmax || tie)");
    }
    all_valid = all_valid && step.valid;
    out.steps.push_back(step);
  }
  if (all_valid != out.all_valid) {
    return Invalid(where + "all_valid is not the AND of the steps");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<PromptScores>> ParseTieAwareScores(
    std::string_view json_text,
    absl::Span<const std::vector<int32_t>> golden_prompts) {
  const Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("not JSON");
  std::vector<PromptScores> out;
  try {
    const Json& cases = j.at("cases");
    if (!cases.is_array()) return Invalid("\"cases\" is not an array");
    if (cases.size() != golden_prompts.size()) {
      return Invalid(absl::StrCat(cases.size(), " cases but the golden has ",
                                  golden_prompts.size()));
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      auto c = ParseCase(cases[i], i, golden_prompts[i]);
      if (!c.ok()) return c.status();
      out.push_back(std::move(*c));
    }
  } catch (const Json::exception& e) {
    return Invalid(e.what());
  }
  return out;
}

absl::StatusOr<GreedyVerdict> JudgeGreedy(absl::Span<const int32_t> golden,
                                          absl::Span<const int32_t> duet,
                                          int32_t n,
                                          const PromptScores* scores) {
  if (n < 0 || static_cast<int32_t>(duet.size()) < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("duet's continuation has ", duet.size(),
                     " tokens, fewer than the ", n, " to judge"));
  }
  GreedyVerdict v;
  while (v.identical_prefix < n &&
         v.identical_prefix < static_cast<int32_t>(golden.size()) &&
         duet[v.identical_prefix] == golden[v.identical_prefix]) {
    ++v.identical_prefix;
  }
  if (v.identical_prefix >= n) {
    v.kind = GreedyVerdictKind::kIdentical;
    return v;
  }
  if (scores == nullptr) {
    v.kind = GreedyVerdictKind::kInvalid;
    v.invalid_step = v.identical_prefix;
    return v;
  }
  if (static_cast<int32_t>(scores->steps.size()) < n ||
      static_cast<int32_t>(scores->greedy.size()) < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tie-aware scores cover ", scores->steps.size(),
                     " steps, fewer than the ", n, " to judge"));
  }
  for (int32_t i = 0; i < n; ++i) {
    if (scores->greedy[i] != duet[i] || scores->steps[i].token != duet[i]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "tie-aware scores were made for another continuation (step ", i,
          ": scored token ", scores->greedy[i], ", duet now ", duet[i],
          "); rerun with --continuations_out and rescore"));
    }
  }
  for (int32_t i = v.identical_prefix; i < n; ++i) {
    const StepScore& s = scores->steps[i];
    if (!s.valid) {
      v.kind = GreedyVerdictKind::kInvalid;
      v.invalid_step = i;
      v.has_scores = true;
      v.hf_argmax = s.hf_argmax;
      v.token = s.token;
      v.hf_max_logit = s.hf_max_logit;
      v.hf_token_logit = s.hf_token_logit;
      v.tie_steps.clear();
      return v;
    }
    if (s.token != s.hf_argmax) v.tie_steps.push_back(i);
  }
  v.kind = GreedyVerdictKind::kTieValid;
  return v;
}

std::string DescribeVerdict(const GreedyVerdict& v) {
  switch (v.kind) {
    case GreedyVerdictKind::kIdentical:
      return "identical";
    case GreedyVerdictKind::kTieValid:
      if (v.tie_steps.empty()) {
        // Diverged from the golden, yet every later token is transformers'
        // teacher-forced argmax (its incremental and teacher-forced numerics
        // differ slightly).
        return absl::StrCat("tie-valid (identical for ", v.identical_prefix,
                            ", then HF's teacher-forced argmax, no ties)");
      }
      return absl::StrCat("tie-valid (identical for ", v.identical_prefix,
                          ", ties taken at steps ",
                          absl::StrJoin(v.tie_steps, ","), ")");
    case GreedyVerdictKind::kInvalid:
      if (!v.has_scores) {
        return absl::StrCat("invalid at step ", v.invalid_step,
                            " (differs from the golden, no scores)");
      }
      return absl::StrFormat(
          "invalid at step %d: HF top id %d logit %.6g vs our id %d "
          "logit %.6g (HF's logits)",
          v.invalid_step, v.hf_argmax, v.hf_max_logit, v.token,
          v.hf_token_logit);
  }
  return "?";
}

}  // namespace duet::tools
