#include "model/sampler.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace duet::model {

absl::Status ValidateSamplingParams(const SamplingParams& p,
                                    int32_t vocab_size) {
  if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "temperature must be a finite number >= 0 (0 = greedy), got ",
        p.temperature));
  }
  if (p.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k must be >= 0 (0 = no limit), got ", p.top_k));
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], got ", p.top_p));
  }
  if (p.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be > 0, got ", p.max_tokens));
  }
  auto penalty_ok = [](float v) {
    return v >= -kMaxAbsPenalty && v <= kMaxAbsPenalty;  // NaN fails
  };
  if (!penalty_ok(p.presence_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "presence_penalty must be in [-2, 2], got ", p.presence_penalty));
  }
  if (!penalty_ok(p.frequency_penalty)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frequency_penalty must be in [-2, 2], got ", p.frequency_penalty));
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty must be a finite number > 0 (1 = off), "
        "got ",
        p.repetition_penalty));
  }
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1], got ", p.min_p));
  }
  if (p.top_logprobs < 0 || p.top_logprobs > kernels::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs must be in [0, ", kernels::kMaxTopLogprobs,
                     "], got ", p.top_logprobs));
  }
  if (p.top_logprobs > 0 && !p.logprobs) {
    return absl::InvalidArgumentError("top_logprobs needs logprobs to be set");
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stop token id ", id, " is outside the vocabulary [0, ", vocab_size,
          ")"));
    }
  }
  return absl::OkStatus();
}

double SamplerUniform(uint64_t seed, uint64_t step) {
  return kernels::sampling::Uniform(seed, step);
}

kernels::SampleSpec ToSampleSpec(const SamplingParams& p, uint64_t step) {
  kernels::SampleSpec s{p.temperature, p.top_k, p.top_p, p.seed, step};
  s.min_p = p.min_p;
  s.presence_penalty = p.presence_penalty;
  s.frequency_penalty = p.frequency_penalty;
  s.repetition_penalty = p.repetition_penalty;
  s.num_logprobs = p.logprobs ? p.top_logprobs : -1;
  return s;
}

bool HasPenalties(const SamplingParams& p) {
  return p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f ||
         p.repetition_penalty != 1.0f;
}

SeenTokens::SeenTokens(const SamplingParams& params,
                       std::span<const int32_t> prompt,
                       std::span<const int32_t> generated)
    : active_(HasPenalties(params)) {
  if (!active_) return;
  if (params.repetition_penalty != 1.0f) {
    for (int32_t id : prompt) Entry(id).in_prompt = 1;
  }
  for (int32_t id : generated) Add(id);
}

kernels::SeenToken& SeenTokens::Entry(int32_t id) {
  auto [it, inserted] = index_.try_emplace(id, entries_.size());
  if (inserted) entries_.push_back(kernels::SeenToken{id, 0, 0});
  return entries_[it->second];
}

void SeenTokens::Add(int32_t token) {
  if (active_) ++Entry(token).output_count;
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& p,
                    uint64_t step) {
  return kernels::SampleRow(logits, ToSampleSpec(p, step));
}

}  // namespace duet::model
