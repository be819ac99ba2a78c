// kernels/sampling.h: the shared arithmetic (exp, masses, targets), the
// CPU backend's Sample op, and penalties / min-p / logprobs against the
// straightforward reference of tests/kernels/sampling_reference.h.
#include "kernels/sampling.h"

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/sampling_reference.h"

namespace duet::kernels {
namespace {

using sampling::ExpNonPositive;

TEST(SamplingMathTest, ExpNonPositiveIsWithinTwoUlpOfLibm) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> dist(-80.0, 0.0);
  std::vector<double> xs = {0.0, -0.0, -1e-300, -1e-17, -0.5, -0.3465735902,
                            -0.3465735903, -1.0, -10.0, -79.999999};
  for (int i = 0; i < 200000; ++i) xs.push_back(dist(rng));
  for (double x : xs) {
    const double want = std::exp(x);
    const double got = ExpNonPositive(x);
    ASSERT_LE(std::fabs(got - want), 2.0 * std::nextafter(want, 1e300) -
                                         2.0 * want)
        << "x = " << x;
  }
}

TEST(SamplingMathTest, ExpNonPositiveEdges) {
  EXPECT_EQ(ExpNonPositive(0.0), 1.0);
  EXPECT_EQ(ExpNonPositive(-80.5), 0.0);
  EXPECT_EQ(ExpNonPositive(-INFINITY), 0.0);
  EXPECT_EQ(ExpNonPositive(NAN), 0.0);
  // Never subnormal as a float.
  EXPECT_GE(static_cast<float>(ExpNonPositive(-80.0)), 1.17549435e-38f);
}

TEST(SamplingMathTest, WeightsAndMasses) {
  EXPECT_EQ(sampling::Weight(3.0f, 3.0f, 0.7f), 1.0f);
  EXPECT_EQ(sampling::Mass(1.0f), uint64_t{1} << 42);
  EXPECT_EQ(sampling::Mass(0.0f), 0u);
  EXPECT_EQ(sampling::Mass(0.5f), uint64_t{1} << 41);
  // Weight is monotone in the logit.
  float last = 0.0f;
  for (float l = -100.0f; l <= 0.0f; l += 0.01f) {
    const float w = sampling::Weight(l, 0.0f, 1.3f);
    ASSERT_GE(w, last);
    last = w;
  }
}

TEST(SamplingMathTest, TargetAndNeedStayInRange) {
  const uint64_t big = (uint64_t{1} << 60) + 12345;
  EXPECT_EQ(sampling::Target(0.0, 5), 0u);
  EXPECT_EQ(sampling::Target(0.9999999999999999, 5), 4u);
  EXPECT_LT(sampling::Target(0.9999999999999999, big), big);
  EXPECT_EQ(sampling::TopPNeed(1.0f, big), big);
  EXPECT_EQ(sampling::TopPNeed(1e-30f, 10), 1u);
  EXPECT_EQ(sampling::TopPNeed(0.5f, 10), 5u);
  EXPECT_EQ(sampling::TopPNeed(0.51f, 10), 6u);
}

TEST(SamplingTest, GreedyIgnoresNaNAndPrefersTheLowestIndex) {
  const SampleSpec greedy;
  EXPECT_EQ(SampleRow(std::vector<float>{NAN, 2.0f, 5.0f, 5.0f}, greedy), 2);
  EXPECT_EQ(SampleRow(std::vector<float>{NAN, NAN}, greedy), 0);
  EXPECT_EQ(SampleRow(std::vector<float>{-INFINITY, -INFINITY}, greedy), 0);
  SampleSpec hot{1.0f, 0, 1.0f, 3, 0};
  // A non-finite maximum cannot be softmaxed: argmax.
  EXPECT_EQ(SampleRow(std::vector<float>{1.0f, INFINITY, 0.0f}, hot), 1);
}

TEST(SamplingTest, CpuBackendSampleMatchesSampleRowAndChecksArguments) {
  auto be = MakeCpuBackend();
  constexpr int kRows = 6;
  constexpr int kVocab = 777;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> host(kRows * kVocab);
  for (float& x : host) x = dist(rng);
  auto logits = be->Upload(host.data(), DType::kF32, DType::kF32,
                           {kRows, kVocab});
  ASSERT_TRUE(logits.ok());
  std::vector<SampleSpec> specs = {{0.0f, 0, 1.0f, 1, 0},
                                   {0.8f, 0, 1.0f, 2, 5},
                                   {1.2f, 40, 1.0f, 3, 9},
                                   {0.6f, 0, 0.7f, 4, 1},
                                   {1.0f, 100, 0.9f, 5, 2},
                                   {2.0f, 1, 0.5f, 6, 3}};
  std::vector<int32_t> tokens(kRows, -1);
  ASSERT_TRUE(be->Sample(logits->view(), specs, tokens).ok());
  for (int r = 0; r < kRows; ++r) {
    EXPECT_EQ(tokens[r],
              SampleRow({host.data() + r * kVocab, kVocab}, specs[r]))
        << "row " << r;
  }
  std::vector<int32_t> short_tokens(kRows - 1);
  EXPECT_EQ(be->Sample(logits->view(), specs, short_tokens).code(),
            absl::StatusCode::kInvalidArgument);
  specs[3].top_p = 0.0f;
  const absl::Status bad = be->Sample(logits->view(), specs, tokens);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("row 3"), std::string::npos) << bad;
}

using testing::RandomFullSpec;
using testing::RandomHistory;
using testing::RefHistory;
using testing::RefLogprobs;
using testing::RefPenalize;
using testing::RefSample;
using testing::RefSeen;

std::vector<float> RandomLogits(std::mt19937& rng, int n, float sigma) {
  std::normal_distribution<float> dist(0.5f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(SamplingPenaltyTest, FollowOpenAiAndRepetitionDefinitions) {
  // Token 0: prompt only; 1: generated twice; 2: unseen; 3: prompt and
  // generated once; 4: generated once, negative logit.
  std::vector<float> logits = {2.0f, 3.0f, 0.5f, -1.0f, -2.0f};
  SampleSpec s;
  s.repetition_penalty = 2.0f;
  s.frequency_penalty = 0.5f;
  s.presence_penalty = 0.25f;
  const std::vector<SeenToken> seen = {
      {0, 0, 1}, {1, 2, 0}, {3, 1, 1}, {4, 1, 0}};
  ApplyPenalties(logits, s, seen);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);                  // 2 / 2
  EXPECT_FLOAT_EQ(logits[1], 1.5f - 1.0f - 0.25f);   // 3/2 - 0.5*2 - 0.25
  EXPECT_FLOAT_EQ(logits[2], 0.5f);                  // untouched
  EXPECT_FLOAT_EQ(logits[3], -2.0f - 0.5f - 0.25f);  // -1*2 - 0.5 - 0.25
  EXPECT_FLOAT_EQ(logits[4], -4.0f - 0.5f - 0.25f);
  // Without penalties the list is ignored.
  std::vector<float> same = {2.0f, 3.0f};
  ApplyPenalties(same, SampleSpec{}, std::vector<SeenToken>{{0, 5, 1}});
  EXPECT_EQ(same, (std::vector<float>{2.0f, 3.0f}));
}

TEST(SamplingPenaltyTest, GreedyIsTheArgmaxAfterPenalties) {
  std::vector<float> logits = {1.0f, 5.0f, 4.5f, 0.0f};
  SampleSpec s;  // greedy
  s.frequency_penalty = 1.0f;
  const std::vector<SeenToken> seen = {{1, 1, 0}};
  std::vector<float> row = logits;
  EXPECT_EQ(SampleRow(row, s, seen, nullptr), 2);  // 5 - 1 < 4.5
  row = logits;
  EXPECT_EQ(SampleRow(row, s, {}, nullptr), 1);
}

TEST(SamplingFullTest, MatchesTheReferenceOnRandomRows) {
  std::mt19937 rng(21);
  int logprob_rows = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int vocab =
        trial % 5 == 0 ? 4000 : 50 + static_cast<int>(rng() % 700);
    const std::vector<float> logits =
        RandomLogits(rng, vocab, trial % 3 == 0 ? 0.4f : 3.0f);
    const SampleSpec s = RandomFullSpec(rng, trial, vocab);
    const RefHistory h = RandomHistory(rng, vocab);
    const std::vector<float> penalized = RefPenalize(logits, s, h);
    std::vector<float> row = logits;
    TokenLogprobs got;
    const int32_t token = SampleRow(row, s, RefSeen(h, s, rng), &got);
    ASSERT_EQ(row, penalized) << "trial " << trial;
    ASSERT_EQ(token, RefSample(penalized, s)) << "trial " << trial;
    if (s.min_p > 0.0f && s.temperature > 0.0f) {
      // The drawn token clears the bar: p >= min_p * max p.
      const float max_l = *std::max_element(penalized.begin(), penalized.end());
      EXPECT_GE(std::exp((penalized[token] - max_l) / s.temperature),
                s.min_p * (1.0 - 1e-6));
    }
    if (s.num_logprobs < 0) continue;
    ++logprob_rows;
    const TokenLogprobs want = RefLogprobs(penalized, s, token);
    EXPECT_NEAR(got.logprob, want.logprob, 1e-5) << "trial " << trial;
    ASSERT_EQ(got.num_top, want.num_top) << "trial " << trial;
    for (int j = 0; j < want.num_top; ++j) {
      EXPECT_EQ(got.top_ids[j], want.top_ids[j]) << "trial " << trial;
      EXPECT_NEAR(got.top_logprobs[j], want.top_logprobs[j], 1e-5);
    }
    // Probabilities: a distribution.
    EXPECT_LE(got.logprob, 0.0f);
  }
  EXPECT_GT(logprob_rows, 100);
}

TEST(SamplingFullTest, MinPOneDrawsOnlyTheMaximaAndMinPNarrows) {
  std::mt19937 rng(5);
  const std::vector<float> logits = RandomLogits(rng, 300, 1.0f);
  const int32_t best = static_cast<int32_t>(
      std::max_element(logits.begin(), logits.end()) - logits.begin());
  SampleSpec s{1.0f, 0, 1.0f, 9, 0};
  s.min_p = 1.0f;
  for (uint64_t step = 0; step < 50; ++step) {
    s.step = step;
    EXPECT_EQ(SampleRow(std::span<const float>(logits), s), best);
  }
  // A looser bar draws more distinct tokens, all above it.
  std::set<int32_t> loose, tight;
  for (uint64_t step = 0; step < 400; ++step) {
    s.step = step;
    s.min_p = 0.05f;
    loose.insert(SampleRow(std::span<const float>(logits), s));
    s.min_p = 0.5f;
    tight.insert(SampleRow(std::span<const float>(logits), s));
  }
  EXPECT_GT(loose.size(), tight.size());
  for (int32_t t : tight) {
    EXPECT_GE(std::exp(logits[t] - logits[best]), 0.5 * (1 - 1e-6));
  }
}

TEST(SamplingFullTest, SameSeedSameTokens) {
  std::mt19937 rng(8);
  const std::vector<float> logits = RandomLogits(rng, 1000, 1.5f);
  const RefHistory h = RandomHistory(rng, 1000);
  SampleSpec s = RandomFullSpec(rng, 3, 1000);
  auto run = [&](uint64_t seed) {
    std::vector<int32_t> out;
    std::mt19937 shuffle(seed);  // a different list order every run
    for (uint64_t step = 0; step < 64; ++step) {
      s.seed = seed;
      s.step = step;
      std::vector<float> row = logits;
      TokenLogprobs lp;
      out.push_back(SampleRow(row, s, RefSeen(h, s, shuffle), &lp));
    }
    return out;
  };
  EXPECT_EQ(run(77), run(77));
  EXPECT_NE(run(77), run(78));
}

TEST(SamplingFullTest, CpuBackendBatchMatchesRowsAndChecksArguments) {
  auto be = MakeCpuBackend();
  std::mt19937 rng(13);
  constexpr int kRows = 8;
  constexpr int kVocab = 513;
  std::vector<float> host = RandomLogits(rng, kRows * kVocab, 2.0f);
  auto logits =
      be->Upload(host.data(), DType::kF32, DType::kF32, {kRows, kVocab});
  ASSERT_TRUE(logits.ok());
  std::vector<SampleSpec> specs;
  std::vector<SeenToken> seen;
  std::vector<int32_t> offsets = {0};
  std::vector<std::vector<SeenToken>> row_seen;
  for (int r = 0; r < kRows; ++r) {
    specs.push_back(RandomFullSpec(rng, r, kVocab));
    row_seen.push_back(RefSeen(RandomHistory(rng, kVocab), specs.back(), rng));
    seen.insert(seen.end(), row_seen.back().begin(), row_seen.back().end());
    offsets.push_back(static_cast<int32_t>(seen.size()));
  }
  std::vector<int32_t> tokens(kRows, -1);
  std::vector<TokenLogprobs> lps(kRows);
  ASSERT_TRUE(
      be->Sample(logits->view(), {specs, seen, offsets}, tokens, lps).ok());
  for (int r = 0; r < kRows; ++r) {
    std::vector<float> row(host.begin() + r * kVocab,
                           host.begin() + (r + 1) * kVocab);
    TokenLogprobs want;
    EXPECT_EQ(tokens[r], SampleRow(row, specs[r], row_seen[r], &want));
    if (specs[r].num_logprobs >= 0) {
      EXPECT_EQ(lps[r].logprob, want.logprob);
      EXPECT_EQ(lps[r].num_top, want.num_top);
    }
  }
  auto code = [&](const SampleBatch& b, std::span<TokenLogprobs> out) {
    return be->Sample(logits->view(), b, tokens, out).code();
  };
  EXPECT_EQ(code({specs, seen, offsets}, {}),  // rows ask, no slots
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad_offsets = offsets;
  bad_offsets.back() += 1;
  EXPECT_EQ(code({specs, seen, bad_offsets}, lps),
            absl::StatusCode::kInvalidArgument);
  std::vector<SeenToken> bad_seen = seen;
  bad_seen[0].id = kVocab;
  EXPECT_EQ(code({specs, bad_seen, offsets}, lps),
            absl::StatusCode::kInvalidArgument);
  std::vector<SampleSpec> bad = specs;
  bad[2].num_logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ(code({bad, seen, offsets}, lps),
            absl::StatusCode::kInvalidArgument);
  bad = specs;
  bad[1].repetition_penalty = 0.0f;
  EXPECT_EQ(code({bad, seen, offsets}, lps),
            absl::StatusCode::kInvalidArgument);
  bad = specs;
  bad[1].min_p = 1.5f;
  EXPECT_EQ(code({bad, seen, offsets}, lps),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kernels
