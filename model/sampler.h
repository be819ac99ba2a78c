// Token sampling from fp32 logits: penalties (presence, frequency,
// repetition), greedy, temperature, min-p, top-k, top-p, seeded, and
// logprobs.
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

#include "absl/container/flat_hash_map.h"
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
  // OpenAI: logit -= presence_penalty if the token was generated, and
  // -= frequency_penalty x times generated. In [-2, 2]; 0 = off.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // vLLM / HF: a token seen in the prompt or the output has its logit
  // divided by this when positive, multiplied when negative. > 0; 1 = off.
  float repetition_penalty = 1.0f;
  // Keep tokens whose probability is >= min_p x the largest (after
  // temperature). In [0, 1]; 0 = off.
  float min_p = 0.0f;
  // Return each token's logprob, and the top_logprobs (0..20, needs
  // logprobs) most likely tokens' (kernels/sampling.h step 5: after
  // penalties and temperature).
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

inline constexpr float kMaxAbsPenalty = 2.0f;  // OpenAI's range

// True when the request's draws read its seen tokens.
bool HasPenalties(const SamplingParams& params);

// The tokens a request's penalties look at (kernels::SeenToken: distinct
// ids with their output counts and whether the prompt holds them), kept up
// to date as tokens are generated: O(1) per token, and a step copies the
// list (distinct prompt + output tokens) instead of rescanning the
// sequence. Empty when the params have no penalty; prompt tokens are kept
// only for repetition_penalty.
class SeenTokens {
 public:
  SeenTokens() = default;
  SeenTokens(const SamplingParams& params, std::span<const int32_t> prompt,
             std::span<const int32_t> generated);
  // A newly generated token.
  void Add(int32_t token);
  std::span<const kernels::SeenToken> tokens() const { return entries_; }

 private:
  kernels::SeenToken& Entry(int32_t id);

  bool active_ = false;
  std::vector<kernels::SeenToken> entries_;
  absl::flat_hash_map<int32_t, size_t> index_;  // id -> entries_ position
};

// InvalidArgument with the field name and the allowed range when a value is
// out of range (temperature < 0 or not finite, top_k < 0, top_p outside
// (0, 1], max_tokens <= 0, a stop token outside [0, vocab_size),
// presence/frequency_penalty outside [-2, 2], repetition_penalty not a
// finite number > 0, min_p outside [0, 1], top_logprobs outside [0, 20] or
// set without logprobs).
absl::Status ValidateSamplingParams(const SamplingParams& params,
                                    int32_t vocab_size);

// Uniform double in [0, 1) for (seed, step).
double SamplerUniform(uint64_t seed, uint64_t step);

// The backend-level description of draw `step` of a request (its index
// among the request's generated tokens). Penalties need the request's
// SeenTokens besides.
kernels::SampleSpec ToSampleSpec(const SamplingParams& params, uint64_t step);

// Picks the next token from `logits` on the host by the procedure of
// kernels/sampling.h (greedy = lowest index among the maxima; otherwise
// temperature, min-p, top-k, top-p over integer masses, inverted at
// SamplerUniform(seed, step)), without penalties. Backends sample on their
// device by the same procedure with bit-identical results.
int32_t SampleToken(std::span<const float> logits, const SamplingParams& params,
                    uint64_t step);

}  // namespace duet::model

#endif  // DUET_MODEL_SAMPLER_H_
