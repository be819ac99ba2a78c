#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
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

struct Candidate {
  uint32_t bits;  // WeightBits of the weight
  int32_t id;
};

// Weight descending, id ascending.
bool Before(const Candidate& a, const Candidate& b) {
  return a.bits > b.bits || (a.bits == b.bits && a.id < b.id);
}

}  // namespace

int32_t SampleRow(std::span<const float> logits, const SampleSpec& s) {
  const int32_t best = Argmax(logits);
  if (logits.empty()) return 0;
  const float max_logit = logits[best];
  if (sampling::IsGreedy(s) || !std::isfinite(max_logit)) return best;
  const int32_t vocab = static_cast<int32_t>(logits.size());
  const double u = sampling::Uniform(s.seed, s.step);
  std::vector<Candidate> c(vocab);
  for (int32_t i = 0; i < vocab; ++i) {
    c[i] = {WeightBits(sampling::Weight(logits[i], max_logit, s.temperature)),
            i};
  }
  auto mass = [](const Candidate& x) {
    return Mass(sampling::WeightFromBits(x.bits));
  };
  const bool limit_k = s.top_k > 0 && s.top_k < vocab;
  if (!limit_k && s.top_p >= 1.0f) {
    uint64_t total = 0;
    for (const Candidate& x : c) total += mass(x);
    const uint64_t target = sampling::Target(u, total);
    uint64_t cumulative = 0;
    for (const Candidate& x : c) {
      cumulative += mass(x);
      if (cumulative > target) return x.id;
    }
    return best;  // unreachable: the maximum has mass 2^42 > target
  }
  const int32_t k = limit_k ? s.top_k : vocab;
  // Sort only as far as needed: top-k sorts its k; top-p alone doubles the
  // sorted prefix until it holds the needed mass (flat distributions still
  // end up sorting most of the vocabulary).
  int32_t sorted = 0;
  auto sort_to = [&](int32_t end) {
    if (end <= sorted) return;
    std::partial_sort(c.begin() + sorted, c.begin() + end, c.end(), Before);
    sorted = end;
  };
  uint64_t total = 0;
  if (limit_k) {
    sort_to(k);
    for (int32_t i = 0; i < k; ++i) total += mass(c[i]);
  } else {
    for (const Candidate& x : c) total += mass(x);
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
        cumulative += mass(c[i]);
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
    cumulative += mass(c[i]);
    if (cumulative > target) return c[i].id;
  }
  return c[0].id;  // unreachable: target < kept_total
}

}  // namespace duet::kernels
