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
                     float temperature, Out* out) {
  for (int32_t i = 0; i < n; ++i) {
    out[i] = Key(sampling::Weight(logits[i], max_logit, temperature), i);
  }
}
__attribute__((target("fma"))) void FillKeysFma(const float* logits,
                                                int32_t n, float max_logit,
                                                float temperature,
                                                uint64_t* out) {
  FillKeys(logits, n, max_logit, temperature, out);
}
void FillKeysPlain(const float* logits, int32_t n, float max_logit,
                   float temperature, uint64_t* out) {
  FillKeys(logits, n, max_logit, temperature, out);
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
                                          s.temperature, c.data());
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

}  // namespace duet::kernels
