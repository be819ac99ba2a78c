#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/random.h"
#include "absl/strings/str_cat.h"

namespace duet::model {
namespace {

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
  const double u = SamplerUniform(p.seed, step);
  const float max_logit = logits[Argmax(logits)];
  auto weight = [&](int32_t id) {
    return std::exp((static_cast<double>(logits[id]) - max_logit) /
                    p.temperature);
  };
  const bool limit_k = p.top_k > 0 && p.top_k < vocab;
  if (!limit_k && p.top_p >= 1.0f) {
    // Nothing to cut: invert the CDF in id order (no sort needed).
    std::vector<double> w(vocab);
    double total = 0.0;
    for (int32_t i = 0; i < vocab; ++i) total += (w[i] = weight(i));
    const double target = u * total;
    double cumulative = 0.0;
    for (int32_t i = 0; i < vocab; ++i) {
      cumulative += w[i];
      if (target < cumulative) return i;
    }
    return vocab - 1;
  }
  // Candidates in descending logit order, ties by ascending id: a total
  // order, so the result never depends on the sort implementation.
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  double total = 0.0;
  for (int32_t i = 0; i < vocab; ++i) total += weight(i);
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  const int32_t k_max = limit_k ? p.top_k : vocab;
  if (limit_k) {
    // Top-k renormalizes over the k candidates before top-p applies.
    std::partial_sort(ids.begin(), ids.begin() + k_max, ids.end(), by_logit);
    total = 0.0;
    for (int32_t i = 0; i < k_max; ++i) total += weight(ids[i]);
  }
  // Top-p: the smallest prefix whose mass reaches p. Sort only as far as
  // needed, doubling the sorted prefix, instead of sorting the vocabulary.
  int32_t keep = k_max;
  if (p.top_p < 1.0f) {
    int32_t sorted = limit_k ? k_max : 0;
    double cumulative = 0.0;
    int32_t i = 0;
    for (int32_t chunk = 64; keep == k_max && i < k_max; chunk *= 2) {
      const int32_t end = std::min(k_max, i + chunk);
      if (end > sorted) {
        std::partial_sort(ids.begin() + i, ids.begin() + end,
                          ids.begin() + (limit_k ? k_max : vocab), by_logit);
        sorted = end;
      }
      for (; i < end; ++i) {
        cumulative += weight(ids[i]) / total;
        if (cumulative >= p.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
  }
  double kept_total = 0.0;
  for (int32_t i = 0; i < keep; ++i) kept_total += weight(ids[i]);
  const double target = u * kept_total;
  double cumulative = 0.0;
  for (int32_t i = 0; i < keep; ++i) {
    cumulative += weight(ids[i]);
    if (target < cumulative) return ids[i];
  }
  return ids[keep - 1];  // rounding guard: target ~= kept_total
}

}  // namespace duet::model
