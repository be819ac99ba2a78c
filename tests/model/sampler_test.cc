#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::model {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomLogits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(SamplerTest, GreedyPicksArgmaxLowestIndexOnTies) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  SamplingParams p;  // temperature 0
  EXPECT_EQ(SampleToken(logits, p, 0), 1);
  p.temperature = 1.0f;
  p.top_k = 1;  // top_k 1 is greedy too
  EXPECT_EQ(SampleToken(logits, p, 5), 1);
}

TEST(SamplerTest, SeededAndReproducible) {
  const auto logits = RandomLogits(1000, 1);
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::vector<int32_t> a, b, c;
  for (uint64_t step = 0; step < 50; ++step) {
    a.push_back(SampleToken(logits, p, step));
    b.push_back(SampleToken(logits, p, step));
  }
  p.seed = 43;
  for (uint64_t step = 0; step < 50; ++step) {
    c.push_back(SampleToken(logits, p, step));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(SamplerTest, UniformIsInUnitIntervalAndSpread) {
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    const double u = SamplerUniform(3, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(SamplerTest, TopKOnlyReturnsTopK) {
  const auto logits = RandomLogits(500, 2);
  std::vector<int32_t> order(500);
  for (int i = 0; i < 500; ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return logits[a] > logits[b]; });
  SamplingParams p;
  p.temperature = 5.0f;  // flat: without top-k many tokens would appear
  p.top_k = 3;
  for (uint64_t step = 0; step < 300; ++step) {
    const int32_t t = SampleToken(logits, p, step);
    EXPECT_TRUE(t == order[0] || t == order[1] || t == order[2]) << t;
  }
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (temperature 1).
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f),
                               std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3: only tokens 0 and 1
  std::map<int32_t, int> counts;
  for (uint64_t step = 0; step < 4000; ++step) {
    ++counts[SampleToken(logits, p, step)];
  }
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_EQ(counts.count(3), 0u);
  // Renormalized: 0.625 / 0.375.
  EXPECT_NEAR(counts[0] / 4000.0, 0.625, 0.03);
  EXPECT_NEAR(counts[1] / 4000.0, 0.375, 0.03);
}

TEST(SamplerTest, TemperatureOneMatchesSoftmax) {
  std::vector<float> logits = {1.0f, 2.0f, 0.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<int> counts(3);
  constexpr int kN = 20000;
  for (uint64_t step = 0; step < kN; ++step) {
    ++counts[SampleToken(logits, p, step)];
  }
  const double z = std::exp(1.0) + std::exp(2.0) + 1.0;
  EXPECT_NEAR(counts[0] / double{kN}, std::exp(1.0) / z, 0.015);
  EXPECT_NEAR(counts[1] / double{kN}, std::exp(2.0) / z, 0.015);
  EXPECT_NEAR(counts[2] / double{kN}, 1.0 / z, 0.015);
}

// The procedure of kernels/sampling.h written the slow, obvious way (full
// sort of the whole vocabulary, no early exits).
int32_t ReferenceSample(const std::vector<float>& logits,
                        const SamplingParams& p, uint64_t step) {
  namespace sm = kernels::sampling;
  const int32_t n = static_cast<int32_t>(logits.size());
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<float> w(n);
  for (int32_t i = 0; i < n; ++i) {
    w[i] = sm::Weight(logits[i], max_logit, p.temperature);
  }
  const double u = SamplerUniform(p.seed, step);
  std::vector<int32_t> ids(n);
  for (int32_t i = 0; i < n; ++i) ids[i] = i;
  if (p.top_k != 0 || p.top_p < 1.0f) {
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int32_t a, int32_t b) { return w[a] > w[b]; });
  }
  const int32_t k = p.top_k > 0 ? std::min(p.top_k, n) : n;
  ids.resize(k);
  uint64_t total = 0;
  for (int32_t id : ids) total += sm::Mass(w[id]);
  if (p.top_p < 1.0f) {
    const uint64_t need = sm::TopPNeed(p.top_p, total);
    uint64_t cum = 0;
    size_t keep = 0;
    while (cum < need) cum += sm::Mass(w[ids[keep++]]);
    ids.resize(keep);
    total = cum;
  }
  const uint64_t target = sm::Target(u, total);
  uint64_t cum = 0;
  for (int32_t id : ids) {
    cum += sm::Mass(w[id]);
    if (cum > target) return id;
  }
  ADD_FAILURE() << "no token drawn";
  return -1;
}

TEST(SamplerTest, MatchesTheFullSortReference) {
  for (uint32_t seed = 0; seed < 40; ++seed) {
    auto logits = RandomLogits(3000, seed);
    if (seed % 2 == 1) {
      // Many exact ties: the order must fall back to ids.
      for (float& x : logits) x = std::round(x * 4.0f) / 4.0f;
    }
    SamplingParams p;
    p.temperature = 0.3f + 0.1f * static_cast<float>(seed % 10);
    p.top_p = (seed % 4 == 0) ? 0.99f : 0.5f + 0.01f * static_cast<float>(seed);
    if (seed % 5 == 1) p.top_p = 1.0f;
    p.top_k = (seed % 3 == 0) ? static_cast<int32_t>(seed * 7 % 500) : 0;
    p.seed = seed;
    for (uint64_t step = 0; step < 20; ++step) {
      ASSERT_EQ(SampleToken(logits, p, step), ReferenceSample(logits, p, step))
          << "seed " << seed << " step " << step;
    }
  }
}

TEST(SamplerTest, ValidationNamesTheField) {
  struct Case {
    SamplingParams p;
    const char* phrase;
  };
  std::vector<Case> cases;
  SamplingParams p;
  p.temperature = -1;
  cases.push_back({p, "temperature"});
  p = {};
  p.temperature = NAN;
  cases.push_back({p, "temperature"});
  p = {};
  p.top_k = -2;
  cases.push_back({p, "top_k"});
  p = {};
  p.top_p = 0.0f;
  cases.push_back({p, "top_p"});
  p = {};
  p.top_p = 1.5f;
  cases.push_back({p, "top_p"});
  p = {};
  p.max_tokens = 0;
  cases.push_back({p, "max_tokens"});
  p = {};
  p.stop_token_ids = {5, 100};
  cases.push_back({p, "stop token"});
  p = {};
  p.presence_penalty = 2.01f;
  cases.push_back({p, "presence_penalty must be in [-2, 2]"});
  p = {};
  p.frequency_penalty = NAN;
  cases.push_back({p, "frequency_penalty must be in [-2, 2]"});
  p = {};
  p.repetition_penalty = 0.0f;
  cases.push_back({p, "repetition_penalty must be a finite number > 0"});
  p = {};
  p.repetition_penalty = INFINITY;
  cases.push_back({p, "repetition_penalty"});
  p = {};
  p.min_p = -0.1f;
  cases.push_back({p, "min_p must be in [0, 1]"});
  p = {};
  p.logprobs = true;
  p.top_logprobs = 21;
  cases.push_back({p, "top_logprobs must be in [0, 20]"});
  p = {};
  p.top_logprobs = 3;
  cases.push_back({p, "top_logprobs needs logprobs"});
  for (const Case& c : cases) {
    const absl::Status s = ValidateSamplingParams(c.p, 100);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.phrase;
    EXPECT_THAT(s.message(), HasSubstr(c.phrase));
  }
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams{}, 100).ok());
  SamplingParams edges;
  edges.presence_penalty = -2.0f;
  edges.frequency_penalty = 2.0f;
  edges.repetition_penalty = 1e-3f;
  edges.min_p = 1.0f;
  edges.logprobs = true;
  edges.top_logprobs = 20;
  EXPECT_TRUE(ValidateSamplingParams(edges, 100).ok());
}

TEST(SamplerTest, ToSampleSpecCarriesEveryField) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 3;
  p.top_p = 0.8f;
  p.seed = 11;
  p.min_p = 0.2f;
  p.presence_penalty = 0.3f;
  p.frequency_penalty = -0.4f;
  p.repetition_penalty = 1.5f;
  const kernels::SampleSpec s = ToSampleSpec(p, 7);
  EXPECT_EQ(s.step, 7u);
  EXPECT_EQ(s.min_p, 0.2f);
  EXPECT_EQ(s.presence_penalty, 0.3f);
  EXPECT_EQ(s.frequency_penalty, -0.4f);
  EXPECT_EQ(s.repetition_penalty, 1.5f);
  EXPECT_EQ(s.num_logprobs, -1);
  p.logprobs = true;
  EXPECT_EQ(ToSampleSpec(p, 0).num_logprobs, 0);
  p.top_logprobs = 4;
  EXPECT_EQ(ToSampleSpec(p, 0).num_logprobs, 4);
}

// SeenTokens against counts taken directly from the token lists.
TEST(SamplerTest, SeenTokensCountsOutputsAndMarksThePrompt) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 50; ++trial) {
    SamplingParams p;
    p.frequency_penalty = 0.5f;
    if (trial % 2 == 0) p.repetition_penalty = 1.2f;
    std::vector<int32_t> prompt, generated, later;
    for (int i = 0; i < 30; ++i)
      prompt.push_back(static_cast<int32_t>(rng() % 20));
    for (int i = 0; i < 10; ++i)
      generated.push_back(static_cast<int32_t>(rng() % 25));
    for (int i = 0; i < 10; ++i)
      later.push_back(static_cast<int32_t>(rng() % 25));
    SeenTokens seen(p, prompt, generated);
    for (int32_t t : later) seen.Add(t);
    std::map<int32_t, std::pair<int32_t, int32_t>> want;  // count, in prompt
    if (p.repetition_penalty != 1.0f) {
      for (int32_t t : prompt) want[t].second = 1;
    }
    for (int32_t t : generated) ++want[t].first;
    for (int32_t t : later) ++want[t].first;
    std::map<int32_t, std::pair<int32_t, int32_t>> got;
    for (const kernels::SeenToken& t : seen.tokens()) {
      EXPECT_FALSE(got.contains(t.id)) << "id " << t.id << " twice";
      got[t.id] = {t.output_count, t.in_prompt};
    }
    EXPECT_EQ(got, want) << "trial " << trial;
  }
  // No penalty: nothing kept.
  SeenTokens none(SamplingParams{}, std::vector<int32_t>{1, 2},
                  std::vector<int32_t>{3});
  none.Add(4);
  EXPECT_TRUE(none.tokens().empty());
}

}  // namespace
}  // namespace duet::model
