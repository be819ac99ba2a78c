// The sampling procedure of kernels/sampling.h written the slow, obvious
// way, for the CPU and CUDA sampling tests: penalties from the request's
// token lists (not a SeenToken list), a full stable sort, log-softmax in
// long double. Only the rounding of each penalty step and the integer
// masses are shared with the code under test (they define the tokens).
#ifndef DUET_TESTS_KERNELS_SAMPLING_REFERENCE_H_
#define DUET_TESTS_KERNELS_SAMPLING_REFERENCE_H_

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "kernels/sampling.h"

namespace duet::kernels::testing {

struct RefHistory {
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
};

inline std::vector<float> RefPenalize(std::vector<float> logits,
                                      const SampleSpec& s,
                                      const RefHistory& h) {
  std::map<int32_t, int32_t> count;
  std::map<int32_t, bool> in_prompt;
  for (int32_t t : h.output) ++count[t];
  for (int32_t t : h.prompt) in_prompt[t] = true;
  for (size_t v = 0; v < logits.size(); ++v) {
    const int32_t id = static_cast<int32_t>(v);
    const int32_t c = count.contains(id) ? count[id] : 0;
    const bool p = in_prompt.contains(id);
    float l = logits[v];
    if ((c > 0 || p) && s.repetition_penalty != 1.0f) {
      l = l > 0.0f ? l / s.repetition_penalty : l * s.repetition_penalty;
    }
    if (c > 0) {
      l = std::fma(-s.frequency_penalty, static_cast<float>(c), l);
      l -= s.presence_penalty;
    }
    logits[v] = l;
  }
  return logits;
}

// The request's SeenToken list, in a shuffled order (order must not
// matter). Prompt tokens only count for repetition_penalty.
inline std::vector<SeenToken> RefSeen(const RefHistory& h, const SampleSpec& s,
                                      std::mt19937& rng) {
  std::map<int32_t, SeenToken> seen;
  if (s.repetition_penalty != 1.0f) {
    for (int32_t t : h.prompt) seen[t] = SeenToken{t, 0, 1};
  }
  for (int32_t t : h.output) {
    seen.try_emplace(t, SeenToken{t, 0, 0});
    ++seen[t].output_count;
  }
  std::vector<SeenToken> out;
  for (const auto& [id, t] : seen) out.push_back(t);
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

// Steps 1-4 on already penalized logits (finite).
inline int32_t RefSample(const std::vector<float>& logits,
                         const SampleSpec& s) {
  namespace sm = sampling;
  const int32_t n = static_cast<int32_t>(logits.size());
  const int32_t best = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  if (s.temperature == 0.0f || s.top_k == 1) return best;
  std::vector<float> w(n);
  for (int32_t i = 0; i < n; ++i) {
    w[i] = sm::Weight(logits[i], logits[best], s.temperature);
    if (w[i] < s.min_p) w[i] = 0.0f;
  }
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = i;
  if (s.top_k != 0 || s.top_p < 1.0f) {
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int32_t a, int32_t b) { return w[a] > w[b]; });
  }
  ids.resize(s.top_k > 0 ? std::min(s.top_k, n) : n);
  uint64_t total = 0;
  for (int32_t id : ids) total += sm::Mass(w[id]);
  if (s.top_p < 1.0f) {
    const uint64_t need = sm::TopPNeed(s.top_p, total);
    uint64_t cum = 0;
    size_t keep = 0;
    while (cum < need) cum += sm::Mass(w[ids[keep++]]);
    ids.resize(keep);
    total = cum;
  }
  const uint64_t target = sm::Target(sm::Uniform(s.seed, s.step), total);
  uint64_t cum = 0;
  for (int32_t id : ids) {
    cum += sm::Mass(w[id]);
    if (cum > target) return id;
  }
  return -1;
}

// Step 5: log_softmax(logits / T) (T = 1 when greedy), in long double.
inline TokenLogprobs RefLogprobs(const std::vector<float>& logits,
                                 const SampleSpec& s, int32_t token) {
  const long double t = s.temperature > 0.0f ? s.temperature : 1.0L;
  const long double m = *std::max_element(logits.begin(), logits.end());
  long double sum = 0;
  for (float l : logits) sum += std::exp((l - m) / t);
  const long double lse = std::log(sum);
  auto lp = [&](float l) { return static_cast<float>((l - m) / t - lse); };
  TokenLogprobs out;
  out.logprob = lp(logits[static_cast<size_t>(token)]);
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  out.num_top =
      std::min<int32_t>(s.num_logprobs, static_cast<int32_t>(ids.size()));
  for (int32_t j = 0; j < out.num_top; ++j) {
    out.top_ids[j] = ids[static_cast<size_t>(j)];
    out.top_logprobs[j] = lp(logits[static_cast<size_t>(ids[j])]);
  }
  return out;
}

// A random spec exercising `variant` % 8 of the features (every one has
// seed, step and a random history's penalties or logprobs somewhere).
inline SampleSpec RandomFullSpec(std::mt19937& rng, int variant, int vocab) {
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  SampleSpec s;
  s.seed = rng();
  s.step = rng() % 1000;
  switch (variant % 8) {
    case 0:  // greedy after penalties
      s.repetition_penalty = 1.3f;
      s.frequency_penalty = 0.4f;
      s.num_logprobs = 5;
      break;
    case 1:  // penalties, no cut
      s.temperature = 0.8f;
      s.presence_penalty = 1.5f * unit(rng) - 0.5f;
      s.frequency_penalty = 2.0f * unit(rng) - 1.0f;
      break;
    case 2:  // min-p, no cut, logprobs
      s.temperature = 1.1f;
      s.min_p = 0.02f + 0.3f * unit(rng);
      s.num_logprobs = static_cast<int32_t>(rng() % 21);
      break;
    case 3:  // everything
      s.temperature = 0.7f;
      s.top_k = 1 + static_cast<int32_t>(rng() % 60);
      s.top_p = 0.9f;
      s.min_p = 0.05f;
      s.repetition_penalty = 0.5f + unit(rng);
      s.presence_penalty = 0.6f;
      s.frequency_penalty = -0.3f;
      s.num_logprobs = 20;
      break;
    case 4:  // repetition only, top-p
      s.temperature = 1.4f;
      s.top_p = 0.8f;
      s.repetition_penalty = 1.8f;
      s.num_logprobs = 0;
      break;
    case 5:  // min-p with top-k
      s.temperature = 0.9f;
      s.top_k = std::max(2, vocab / 3);
      s.min_p = 0.1f;
      s.presence_penalty = -1.0f;
      break;
    case 6:  // hot, penalties, logprobs at T = 2
      s.temperature = 2.0f;
      s.frequency_penalty = 1.2f;
      s.repetition_penalty = 1.1f;
      s.num_logprobs = 3;
      break;
    case 7:  // min_p 1: only the maxima can be drawn
      s.temperature = 1.0f;
      s.min_p = 1.0f;
      s.num_logprobs = 1;
      break;
  }
  return s;
}

inline RefHistory RandomHistory(std::mt19937& rng, int vocab) {
  RefHistory h;
  const int np = 1 + static_cast<int>(rng() % 40);
  const int no = static_cast<int>(rng() % 30);
  // Skewed toward low ids so tokens repeat.
  for (int i = 0; i < np; ++i) {
    h.prompt.push_back(static_cast<int32_t>(rng() % (1 + vocab / 4)));
  }
  for (int i = 0; i < no; ++i) {
    h.output.push_back(static_cast<int32_t>(rng() % (1 + vocab / 8)));
  }
  return h;
}

}  // namespace duet::kernels::testing

#endif  // DUET_TESTS_KERNELS_SAMPLING_REFERENCE_H_
