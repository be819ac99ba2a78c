// Token sampling, defined once for every backend: penalties, greedy,
// temperature, min-p, top-k, top-p, seeded, and log-probabilities. The CPU
// reference (SampleRow) and the CUDA kernels share the arithmetic below,
// which is written so that host and device give bit-identical tokens: the
// same request samples the same tokens on any backend, in any batch, on any
// machine.
//
// The procedure for one row of fp32 logits (vLLM's order, vllm/v1/sample):
//  0. Penalties, on the logits of the tokens the request has seen (its
//     SeenToken list): repetition (HF/vLLM: a seen token's positive logit
//     is divided by it, a negative one multiplied; seen = in the prompt or
//     generated), then frequency (minus penalty x times generated), then
//     presence (minus penalty once if generated) (OpenAI). Penalize() below
//     is the one definition (a correctly rounded fma, a division or a
//     multiplication and a subtraction: identical under IEEE 754 anywhere).
//  1. Greedy (temperature 0 or top_k 1), or a row whose maximum is not
//     finite: the lowest index among the maxima of the non-NaN logits (0 if
//     every logit is NaN).
//  2. Otherwise each token gets a weight w = float(exp((logit - max) / T))
//     in (0, 1] (ExpNonPositive: IEEE fma/mul only, so no libm differs);
//     min-p sets w = 0 where w < min_p (w is exactly p / p_max, so this is
//     vLLM's "keep p >= min_p x max p", after temperature as there); then
//     an integer mass q = floor(w * 2^42). All sums are integer sums of q:
//     exact and independent of summation order. Tokens with w < 2^-42 have
//     q = 0 and are never drawn (at most vocab * 2^-42 of the mass).
//  3. With neither top-k nor top-p cut, the CDF of q is inverted in token-id
//     order at target = floor(u * total), u = SamplerUniform(seed, step).
//  4. Otherwise tokens are ordered by w descending, ties by id ascending (a
//     total order); top-k keeps the first k; top-p then keeps the shortest
//     prefix whose mass reaches need = ceil(top_p * mass of the top-k);
//     the CDF of that prefix is inverted in that order.
//  5. Logprobs (num_logprobs >= 0) come from log_softmax(penalized logits /
//     T), T = 1 for greedy rows: the distribution after penalties and
//     temperature, before min-p / top-k / top-p (so every token, the drawn
//     one included, has a finite logprob). vLLM's default
//     (--logprobs-mode raw_logprobs) is the model's raw distribution before
//     any of these; its processed_logprobs is after the cuts too. Top
//     logprobs: the num_logprobs largest penalized logits, ties by lower id,
//     NaN logits never. Computed in double; backends agree to ~1e-6, not
//     bit for bit (libm's and CUDA's exp/log differ in the last place).
#ifndef DUET_KERNELS_SAMPLING_H_
#define DUET_KERNELS_SAMPLING_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>

#include "common/random.h"

#if defined(__CUDACC__)
#define DUET_HD __host__ __device__
#else
#define DUET_HD
#endif

namespace duet::kernels {

inline constexpr int kMaxTopLogprobs = 20;  // OpenAI's top_logprobs bound

// One row's sampling request. `step` is the index of the token being drawn
// within its request (draw i of a request uses SamplerUniform(seed, i)).
// Plain data: the CUDA backend copies an array of them to the device.
struct SampleSpec {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = no limit
  float top_p = 1.0f;        // in (0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;
  float min_p = 0.0f;               // in [0, 1]; 0 = off
  float presence_penalty = 0.0f;    // finite; 0 = off
  float frequency_penalty = 0.0f;   // finite; 0 = off
  float repetition_penalty = 1.0f;  // finite, > 0; 1 = off
  // -1: no logprobs; 0..kMaxTopLogprobs: the drawn token's logprob and this
  // many top logprobs.
  int32_t num_logprobs = -1;
};

// A token a row's penalties look at: generated `output_count` times so far
// (0 if only in the prompt), `in_prompt` 1 if the prompt holds it. A row's
// list holds each id at most once.
struct SeenToken {
  int32_t id = 0;
  int32_t output_count = 0;
  int32_t in_prompt = 0;
};

// What a row with num_logprobs >= 0 returns besides its token.
struct TokenLogprobs {
  float logprob = 0.0f;                   // of the drawn token
  int32_t num_top = 0;                    // min(num_logprobs, non-NaN logits)
  int32_t top_ids[kMaxTopLogprobs] = {};  // most likely first
  float top_logprobs[kMaxTopLogprobs] = {};
};

// Everything Backend::Sample reads besides the logits: one spec per row and
// the rows' seen tokens, row r's being seen[seen_offsets[r],
// seen_offsets[r + 1]) (seen_offsets empty: no row has any).
struct SampleBatch {
  std::span<const SampleSpec> specs;
  std::span<const SeenToken> seen;
  std::span<const int32_t> seen_offsets;
};

namespace sampling {

inline constexpr int kMassBits = 42;
inline constexpr double kMassScale = 4398046511104.0;  // 2^42

// True when the row is drawn by argmax.
DUET_HD inline bool IsGreedy(const SampleSpec& s) {
  return s.temperature == 0.0f || s.top_k == 1;
}

DUET_HD inline bool HasPenalties(const SampleSpec& s) {
  return s.presence_penalty != 0.0f || s.frequency_penalty != 0.0f ||
         s.repetition_penalty != 1.0f;
}

// The penalized logit of a seen token (step 0 of the procedure). The
// frequency term is one fma (correctly rounded on host and device alike).
DUET_HD inline float Penalize(float logit, const SampleSpec& s,
                              int32_t output_count, bool in_prompt) {
  float l = logit;
  if (s.repetition_penalty != 1.0f && (in_prompt || output_count > 0)) {
    l = l > 0.0f ? l / s.repetition_penalty : l * s.repetition_penalty;
  }
  if (output_count > 0) {
    l = std::fma(-s.frequency_penalty, static_cast<float>(output_count), l);
    l = l - s.presence_penalty;
  }
  return l;
}

// Min-p on a weight (w = p / p_max): tokens under the bar get no mass.
DUET_HD inline float MinPWeight(float weight, float min_p) {
  return weight < min_p ? 0.0f : weight;
}

// The temperature logprobs use: the row's, or 1 for greedy rows (T = 0).
DUET_HD inline double LogprobTemperature(const SampleSpec& s) {
  return s.temperature > 0.0f ? static_cast<double>(s.temperature) : 1.0;
}

// Uniform double in [0, 1) for (seed, step).
DUET_HD inline double Uniform(uint64_t seed, uint64_t step) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ step);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// exp(x) for x <= 0, within ~1 ulp, 0 below -80 (so float(result) is never
// subnormal). Hand-written rather than libm/CUDA exp because those differ in
// the last bit between host and device; here every rounding step is an
// explicit fma, multiply or exact scaling, identical under IEEE 754 on both.
DUET_HD inline double ExpNonPositive(double x) {
  if (!(x >= -80.0)) return 0.0;  // also NaN
  constexpr double kInvLn2 = 1.4426950408889634074;
  // ln 2 split so that n * kLn2Hi is exact for |n| < 2^20 (fdlibm).
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double n = std::rint(x * kInvLn2);
  double r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  // |r| <= 0.35: Taylor series to degree 13 (truncation error < 1e-17).
  constexpr double c[] = {1.0 / 6227020800.0, 1.0 / 479001600.0,
                          1.0 / 39916800.0,   1.0 / 3628800.0,
                          1.0 / 362880.0,     1.0 / 40320.0,
                          1.0 / 5040.0,       1.0 / 720.0,
                          1.0 / 120.0,        1.0 / 24.0,
                          1.0 / 6.0,          0.5,
                          1.0,                1.0};
  double p = c[0];
  for (int i = 1; i < 14; ++i) p = std::fma(p, r, c[i]);
  return std::ldexp(p, static_cast<int>(n));
}

// The sampling weight of a logit, in (0, 1] (0 below e^-80).
DUET_HD inline float Weight(float logit, float max_logit, float temperature) {
  const double x =
      (static_cast<double>(logit) - static_cast<double>(max_logit)) /
      static_cast<double>(temperature);
  return static_cast<float>(ExpNonPositive(x));
}

DUET_HD inline uint64_t Mass(float weight) {
  return static_cast<uint64_t>(static_cast<double>(weight) * kMassScale);
}

// Sort key of a non-negative weight: larger key = earlier in the order.
DUET_HD inline uint32_t WeightBits(float weight) {
  uint32_t bits;
  std::memcpy(&bits, &weight, sizeof(bits));
  return bits;  // non-negative floats order like their bit patterns
}

DUET_HD inline float WeightFromBits(uint32_t bits) {
  float w;
  std::memcpy(&w, &bits, sizeof(w));
  return w;
}

// floor(u * total) clamped below total (total > 0).
DUET_HD inline uint64_t Target(double u, uint64_t total) {
  const uint64_t t = static_cast<uint64_t>(u * static_cast<double>(total));
  return t < total ? t : total - 1;
}

// ceil(top_p * total) clamped to [1, total] (total > 0).
DUET_HD inline uint64_t TopPNeed(float top_p, uint64_t total) {
  const double v =
      std::ceil(static_cast<double>(top_p) * static_cast<double>(total));
  if (!(v >= 1.0)) return 1;
  if (v >= static_cast<double>(total)) return total;
  const uint64_t need = static_cast<uint64_t>(v);
  return need < total ? need : total;
}

}  // namespace sampling

// The reference implementation of steps 1-4 for one row (no penalties,
// no logprobs).
int32_t SampleRow(std::span<const float> logits, const SampleSpec& spec);

// Step 0: penalizes `logits` in place for `seen` (ids must be in range).
void ApplyPenalties(std::span<float> logits, const SampleSpec& spec,
                    std::span<const SeenToken> seen);

// Step 5 for a row already penalized: the logprob of `token` and the
// spec.num_logprobs (>= 0) most likely tokens.
void ComputeLogprobs(std::span<const float> logits, const SampleSpec& spec,
                     int32_t token, TokenLogprobs* out);

// The whole procedure for one row: penalizes `logits` in place, draws, and
// fills `*logprobs` when spec.num_logprobs >= 0 (it may be null otherwise).
int32_t SampleRow(std::span<float> logits, const SampleSpec& spec,
                  std::span<const SeenToken> seen, TokenLogprobs* logprobs);

}  // namespace duet::kernels

#endif  // DUET_KERNELS_SAMPLING_H_
