// Token sampling from fp32 logits: greedy, temperature, top-k, top-p, seeded.
//
// Reproducible by construction: the random number for step i of a request is
// a pure function of (seed, i) (SplitMix64), not of a generator's history, so
// the same request gives the same tokens whatever batch it runs in, on any
// machine; kernels/sampling.h defines the arithmetic every backend shares.
#ifndef DUET_MODEL_SAMPLER_H_
#define DUET_MODEL_SAMPLER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "kernels/sampling.h"

namespace duet::model {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = no limit
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;
  int32_t max_tokens = 16;   // > 0
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

// InvalidArgument with the field name and the allowed range when a value is
// out of range (temperature < 0 or not finite, top_k < 0, top_p outside
// (0, 1], max_tokens <= 0, a stop token outside [0, vocab_size)).
absl::Status ValidateSamplingParams(const SamplingParams& params,
                                    int32_t vocab_size);

// Uniform double in [0, 1) for (seed, step).
double SamplerUniform(uint64_t seed, uint64_t step);

// The backend-level description of draw `step` of a request (its index
// among the request's generated tokens).
kernels::SampleSpec ToSampleSpec(const SamplingParams& params, uint64_t step);

// Picks the next token from `logits` on the host by the procedure of
// kernels/sampling.h (greedy = lowest index among the maxima; otherwise
// temperature, top-k, top-p over integer masses, inverted at
// SamplerUniform(seed, step)). Backends sample on their device by the same
// procedure with bit-identical results.
int32_t SampleToken(std::span<const float> logits, const SamplingParams& params,
                    uint64_t step);

}  // namespace duet::model

#endif  // DUET_MODEL_SAMPLER_H_
