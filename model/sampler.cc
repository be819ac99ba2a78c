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
  return kernels::SampleSpec{p.temperature, p.top_k, p.top_p, p.seed, step};
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& p,
                    uint64_t step) {
  return kernels::SampleRow(logits, ToSampleSpec(p, step));
}

}  // namespace duet::model
