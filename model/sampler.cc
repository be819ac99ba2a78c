#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace duet::model {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

int32_t Argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

}  // namespace

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
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ step);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& p,
                    uint64_t step) {
  if (p.temperature == 0.0f || p.top_k == 1) return Argmax(logits);
  const int32_t vocab = static_cast<int32_t>(logits.size());
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  // Descending logit, ties by ascending id: a total order, so results do not
  // depend on the sort implementation.
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  const int32_t k = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
  ids.resize(k);

  const double max_logit = logits[ids[0]];
  std::vector<double> probs(k);
  double total = 0.0;
  for (int32_t i = 0; i < k; ++i) {
    probs[i] = std::exp((logits[ids[i]] - max_logit) / p.temperature);
    total += probs[i];
  }
  // Top-p over the sorted candidates: keep the smallest prefix reaching p.
  int32_t keep = k;
  if (p.top_p < 1.0f) {
    double cumulative = 0.0;
    for (int32_t i = 0; i < k; ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept_total = 0.0;
  for (int32_t i = 0; i < keep; ++i) kept_total += probs[i];
  const double target = SamplerUniform(p.seed, step) * kept_total;
  double cumulative = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    cumulative += probs[i];
    if (target < cumulative) return ids[i];
  }
  return ids[keep - 1];  // rounding guard: target ~= kept_total
}

}  // namespace duet::model
