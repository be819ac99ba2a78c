#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace duet::kernels {
namespace {

using sampling::Mass;
using sampling::WeightBits;

int32_t Argmax(std::span<const float> logits) {
  int32_t best = -1;
  for (int32_t i = 0; i < static_cast<int32_t>(logits.size()); ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

// A token in the sampling order as one integer: weight bits above, id
// below (inverted), so larger key = earlier (weight desc, id asc).
uint64_t Key(float weight, int32_t id) {
  return (uint64_t{WeightBits(weight)} << 32) |
         (0xffffffffu - static_cast<uint32_t>(id));
}
int32_t KeyId(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}
uint64_t KeyMass(uint64_t key) {
  return Mass(sampling::WeightFromBits(static_cast<uint32_t>(key >> 32)));
}

// The keys of a row. ExpNonPositive is a chain of fma calls; on CPUs with
// FMA the target clone inlines them as instructions (same IEEE result as
// the libm call, ~6x faster over a 152k vocabulary).
template <typename Out>
inline void FillKeys(const float* logits, int32_t n, float max_logit,
                     float temperature, float min_p, Out* out) {
  for (int32_t i = 0; i < n; ++i) {
    out[i] =
        Key(sampling::MinPWeight(
                sampling::Weight(logits[i], max_logit, temperature), min_p),
            i);
  }
}
__attribute__((target("fma"))) void FillKeysFma(const float* logits, int32_t n,
                                                float max_logit,
                                                float temperature, float min_p,
                                                uint64_t* out) {
  FillKeys(logits, n, max_logit, temperature, min_p, out);
}
void FillKeysPlain(const float* logits, int32_t n, float max_logit,
                   float temperature, float min_p, uint64_t* out) {
  FillKeys(logits, n, max_logit, temperature, min_p, out);
}

}  // namespace

int32_t SampleRow(std::span<const float> logits, const SampleSpec& s) {
  const int32_t best = Argmax(logits);
  if (logits.empty()) return 0;
  const float max_logit = logits[best];
  if (sampling::IsGreedy(s) || !std::isfinite(max_logit)) return best;
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const double u = sampling::Uniform(s.seed, s.step);
  std::vector<uint64_t> c(vocab);
  static const bool has_fma = __builtin_cpu_supports("fma");
  (has_fma ? FillKeysFma : FillKeysPlain)(logits.data(), vocab, max_logit,
                                          s.temperature, s.min_p, c.data());
  const bool limit_k = s.top_k > 0 && s.top_k < vocab;
  if (!limit_k && s.top_p >= 1.0f) {
    uint64_t total = 0;
    for (uint64_t key : c) total += KeyMass(key);
    const uint64_t target = sampling::Target(u, total);
    uint64_t cumulative = 0;
    for (uint64_t key : c) {
      cumulative += KeyMass(key);
      if (cumulative > target) return KeyId(key);
    }
    return best;  // unreachable: the maximum has mass 2^42 > target
  }
  const int32_t k = limit_k ? s.top_k : vocab;
  // Sort only as far as needed: select the next stretch (nth_element, linear)
  // and sort just it, doubling the stretch; top-k sorts its k at once.
  int32_t sorted = 0;
  auto sort_to = [&](int32_t end) {
    if (end <= sorted) return;
    if (end < vocab) {
      std::nth_element(c.begin() + sorted, c.begin() + end, c.end(),
                       std::greater<>());
    }
    std::sort(c.begin() + sorted, c.begin() + end, std::greater<>());
    sorted = end;
  };
  uint64_t total = 0;
  if (limit_k) {
    sort_to(k);
    for (int32_t i = 0; i < k; ++i) total += KeyMass(c[i]);
  } else {
    for (uint64_t key : c) total += KeyMass(key);
  }
  int32_t keep = k;
  uint64_t kept_total = total;
  if (s.top_p < 1.0f) {
    const uint64_t need = sampling::TopPNeed(s.top_p, total);
    uint64_t cumulative = 0;
    int32_t i = 0;
    for (int32_t chunk = 256; i < k; chunk *= 2) {
      sort_to(std::min(k, i + chunk));
      for (; i < sorted; ++i) {
        cumulative += KeyMass(c[i]);
        if (cumulative >= need) break;
      }
      if (i < sorted) break;
    }
    keep = std::min(k, i + 1);
    kept_total = cumulative;
  }
  const uint64_t target = sampling::Target(u, kept_total);
  uint64_t cumulative = 0;
  for (int32_t i = 0; i < keep; ++i) {
    cumulative += KeyMass(c[i]);
    if (cumulative > target) return KeyId(c[i]);
  }
  return KeyId(c[0]);  // unreachable: target < kept_total
}

void ApplyPenalties(std::span<float> logits, const SampleSpec& s,
                    std::span<const SeenToken> seen) {
  if (!sampling::HasPenalties(s)) return;
  for (const SeenToken& t : seen) {
    float& l = logits[static_cast<size_t>(t.id)];
    l = sampling::Penalize(l, s, t.output_count, t.in_prompt != 0);
  }
}

void ComputeLogprobs(std::span<const float> logits, const SampleSpec& s,
                     int32_t token, TokenLogprobs* out) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const double t = sampling::LogprobTemperature(s);
  float max_logit = -INFINITY;
  for (float l : logits) {
    if (l > max_logit) max_logit = l;  // NaN never wins
  }
  // x_i = (l_i - max) / T; a non-finite maximum has no softmax: its tokens
  // get 0 and every other token -inf (the CUDA kernel does the same).
  const bool finite = std::isfinite(max_logit);
  auto x = [&](float l) -> double {
    if (!finite) return l == max_logit ? 0.0 : -INFINITY;
    return (static_cast<double>(l) - max_logit) / t;
  };
  double sum = 0.0;
  for (float l : logits) {
    if (!std::isnan(l)) sum += std::exp(x(l));
  }
  const double lse = std::log(sum);
  auto logprob = [&](float l) -> float {
    return std::isnan(l) ? NAN : static_cast<float>(x(l) - lse);
  };
  out->logprob = logprob(logits[static_cast<size_t>(token)]);
  const int32_t k = std::min(s.num_logprobs, kMaxTopLogprobs);
  // (logit desc, id asc) over the non-NaN logits; a bounded insertion list.
  int32_t n = 0;
  for (int32_t i = 0; i < vocab && k > 0; ++i) {
    const float l = logits[static_cast<size_t>(i)];
    if (std::isnan(l)) continue;
    if (n == k && !(l > logits[static_cast<size_t>(out->top_ids[k - 1])])) {
      continue;
    }
    int32_t j = n < k ? n++ : k - 1;
    while (j > 0 && l > logits[static_cast<size_t>(out->top_ids[j - 1])]) {
      out->top_ids[j] = out->top_ids[j - 1];
      --j;
    }
    out->top_ids[j] = i;
  }
  out->num_top = n;
  for (int32_t j = 0; j < n; ++j) {
    out->top_logprobs[j] =
        logprob(logits[static_cast<size_t>(out->top_ids[j])]);
  }
}

int32_t SampleRow(std::span<float> logits, const SampleSpec& spec,
                  std::span<const SeenToken> seen, TokenLogprobs* logprobs) {
  ApplyPenalties(logits, spec, seen);
  const int32_t token = SampleRow(std::span<const float>(logits), spec);
  if (spec.num_logprobs >= 0 && logprobs != nullptr) {
    ComputeLogprobs(logits, spec, token, logprobs);
  }
  return token;
}

}  // namespace duet::kernels
