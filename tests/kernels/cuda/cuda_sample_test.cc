// CudaBackend::Sample against the CPU reference SampleRow: the procedure of
// kernels/sampling.h is integer arithmetic over weights computed with IEEE
// fma/mul only, so the drawn tokens must be identical, not just close.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/sampling.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/kernels/sampling_reference.h"

namespace duet::kernels::testing {
namespace {

struct Case {
  int rows;
  int vocab;
  float sigma;  // logit spread: small = flat distribution, large = peaked
  bool ties;    // logits rounded to 1/4: many exact ties
};

SampleSpec SpecFor(std::mt19937& rng, int r, int vocab) {
  SampleSpec s;
  s.seed = rng();
  s.step = rng() % 1000;
  switch (r % 8) {
    case 0: break;  // greedy
    case 1: s.temperature = 0.7f; break;  // no cut: id-order CDF
    case 2: s.temperature = 1.0f; s.top_k = 1 + static_cast<int>(rng() % 50); break;
    case 3: s.temperature = 1.3f; s.top_p = 0.9f; break;
    case 4: s.temperature = 0.5f; s.top_k = 200; s.top_p = 0.8f; break;
    case 5: s.temperature = 2.0f; s.top_p = 0.999f; break;
    case 6: s.temperature = 1.0f; s.top_k = vocab; s.top_p = 0.5f; break;
    case 7: s.temperature = 1e-3f; s.top_p = 0.95f; break;
  }
  return s;
}

TEST(CudaSampleTest, MatchesCpuReferenceExactly) {
  DUET_SKIP_WITHOUT_CUDA();
  auto cuda = MakeCudaBackend(0);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  const Case cases[] = {{1, 7, 1.0f, false},     {3, 100, 3.0f, true},
                        {8, 3000, 2.0f, false},  {17, 3000, 0.3f, true},
                        {16, 151936, 2.0f, false}, {5, 151936, 0.2f, false},
                        {40, 32000, 4.0f, true},   {130, 4096, 1.0f, false},
                        {257, 1000, 2.0f, false}};
  std::mt19937 rng(11);
  int checked = 0;
  for (const Case& c : cases) {
    std::normal_distribution<float> dist(0.0f, c.sigma);
    std::vector<float> logits(static_cast<size_t>(c.rows) * c.vocab);
    for (float& x : logits) {
      x = dist(rng);
      if (c.ties) x = std::round(x * 4.0f) / 4.0f;
    }
    std::vector<SampleSpec> specs;
    for (int r = 0; r < c.rows; ++r) specs.push_back(SpecFor(rng, r, c.vocab));
    Tensor dev = MustUpload(**cuda, logits, {c.rows, c.vocab}, DType::kF32);
    std::vector<int32_t> got(c.rows, -1);
    const absl::Status s = (*cuda)->Sample(dev.view(), specs, got);
    ASSERT_TRUE(s.ok()) << s;
    for (int r = 0; r < c.rows; ++r) {
      const int32_t want = SampleRow(
          {logits.data() + static_cast<size_t>(r) * c.vocab,
           static_cast<size_t>(c.vocab)},
          specs[r]);
      ASSERT_EQ(got[r], want)
          << "rows " << c.rows << " vocab " << c.vocab << " row " << r
          << " temperature " << specs[r].temperature << " top_k "
          << specs[r].top_k << " top_p " << specs[r].top_p;
      ++checked;
    }
  }
  std::printf("[sample] %d rows identical to the CPU reference\n", checked);
}

TEST(CudaSampleTest, NonFiniteRowsAndBadArguments) {
  DUET_SKIP_WITHOUT_CUDA();
  auto cuda = MakeCudaBackend(0);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  const float inf = INFINITY;
  std::vector<float> logits = {kNaN, 2.0f, 5.0f, 5.0f,   // greedy: 2
                               kNaN, kNaN, kNaN, kNaN,   // all NaN: 0
                               -inf, -inf, -inf, -inf,   // all -inf: 0
                               1.0f, inf,  0.0f, 3.0f};  // +inf max: 1
  std::vector<SampleSpec> specs(4, SampleSpec{1.0f, 0, 0.9f, 5, 1});
  specs[0] = SampleSpec{};
  Tensor dev = MustUpload(**cuda, logits, {4, 4}, DType::kF32);
  std::vector<int32_t> got(4, -1);
  ASSERT_TRUE((*cuda)->Sample(dev.view(), specs, got).ok());
  EXPECT_EQ(got, (std::vector<int32_t>{2, 0, 0, 1}));
  std::vector<int32_t> too_few(3);
  EXPECT_EQ((*cuda)->Sample(dev.view(), specs, too_few).code(),
            absl::StatusCode::kInvalidArgument);
  specs[1].temperature = -1.0f;
  EXPECT_EQ((*cuda)->Sample(dev.view(), specs, got).code(),
            absl::StatusCode::kInvalidArgument);
}

// Penalties (sparse, per seen token), min-p and logprobs: tokens and top
// ids identical to the CPU reference SampleRow and to the straightforward
// reference of sampling_reference.h; logprobs within 1e-5 (CUDA's exp/log
// differ from libm's in the last place).
TEST(CudaSampleTest, PenaltiesMinPAndLogprobsMatchCpuReference) {
  DUET_SKIP_WITHOUT_CUDA();
  auto cuda = MakeCudaBackend(0);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  struct Shape {
    int rows, vocab;
    float sigma;
  };
  const Shape shapes[] = {{8, 300, 2.0f},
                          {24, 3000, 1.0f},
                          {9, 151936, 2.5f},
                          {130, 2048, 3.0f},
                          {16, 32000, 0.5f}};
  std::mt19937 rng(31);
  int checked = 0, with_logprobs = 0;
  for (const Shape& c : shapes) {
    std::normal_distribution<float> dist(0.5f, c.sigma);
    std::vector<float> logits(static_cast<size_t>(c.rows) * c.vocab);
    for (float& x : logits) x = dist(rng);
    std::vector<SampleSpec> specs;
    std::vector<RefHistory> histories;
    std::vector<SeenToken> seen;
    std::vector<int32_t> offsets = {0};
    for (int r = 0; r < c.rows; ++r) {
      specs.push_back(RandomFullSpec(rng, r, c.vocab));
      histories.push_back(RandomHistory(rng, c.vocab));
      const auto row_seen = RefSeen(histories.back(), specs.back(), rng);
      seen.insert(seen.end(), row_seen.begin(), row_seen.end());
      offsets.push_back(static_cast<int32_t>(seen.size()));
    }
    Tensor dev = MustUpload(**cuda, logits, {c.rows, c.vocab}, DType::kF32);
    std::vector<int32_t> got(c.rows, -1);
    std::vector<TokenLogprobs> got_lp(c.rows);
    const absl::Status s =
        (*cuda)->Sample(dev.view(), {specs, seen, offsets}, got, got_lp);
    ASSERT_TRUE(s.ok()) << s;
    for (int r = 0; r < c.rows; ++r) {
      std::vector<float> row(
          logits.begin() + static_cast<size_t>(r) * c.vocab,
          logits.begin() + static_cast<size_t>(r + 1) * c.vocab);
      const std::vector<float> penalized =
          RefPenalize(row, specs[r], histories[r]);
      TokenLogprobs want;
      const int32_t token =
          SampleRow(row, specs[r],
                    std::span<const SeenToken>(seen).subspan(
                        offsets[r], offsets[r + 1] - offsets[r]),
                    &want);
      ASSERT_EQ(got[r], token) << "vocab " << c.vocab << " row " << r;
      ASSERT_EQ(got[r], RefSample(penalized, specs[r])) << "row " << r;
      ++checked;
      if (specs[r].num_logprobs < 0) continue;
      ++with_logprobs;
      EXPECT_NEAR(got_lp[r].logprob, want.logprob, 1e-5) << "row " << r;
      ASSERT_EQ(got_lp[r].num_top, want.num_top) << "row " << r;
      for (int j = 0; j < want.num_top; ++j) {
        EXPECT_EQ(got_lp[r].top_ids[j], want.top_ids[j]) << "row " << r;
        EXPECT_NEAR(got_lp[r].top_logprobs[j], want.top_logprobs[j], 1e-5);
      }
    }
  }
  std::printf(
      "[sample] %d rows with penalties/min-p identical, %d with "
      "logprobs within 1e-5\n",
      checked, with_logprobs);
}

TEST(CudaSampleTest, FullBatchIsDeterministicAndChecksSeenTokens) {
  DUET_SKIP_WITHOUT_CUDA();
  auto cuda = MakeCudaBackend(0);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  std::mt19937 rng(4);
  constexpr int kRows = 12, kVocab = 5000;
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> logits(kRows * kVocab);
  for (float& x : logits) x = dist(rng);
  std::vector<SampleSpec> specs;
  std::vector<SeenToken> seen;
  std::vector<int32_t> offsets = {0};
  for (int r = 0; r < kRows; ++r) {
    specs.push_back(RandomFullSpec(rng, r, kVocab));
    const auto row_seen =
        RefSeen(RandomHistory(rng, kVocab), specs.back(), rng);
    seen.insert(seen.end(), row_seen.begin(), row_seen.end());
    offsets.push_back(static_cast<int32_t>(seen.size()));
  }
  auto run = [&]() {
    Tensor dev = MustUpload(**cuda, logits, {kRows, kVocab}, DType::kF32);
    std::vector<int32_t> got(kRows, -1);
    std::vector<TokenLogprobs> lp(kRows);
    EXPECT_TRUE(
        (*cuda)->Sample(dev.view(), {specs, seen, offsets}, got, lp).ok());
    return got;
  };
  EXPECT_EQ(run(), run());
  Tensor dev = MustUpload(**cuda, logits, {kRows, kVocab}, DType::kF32);
  std::vector<int32_t> got(kRows);
  std::vector<TokenLogprobs> lp(kRows);
  seen[0].id = kVocab;
  EXPECT_EQ((*cuda)->Sample(dev.view(), {specs, seen, offsets}, got, lp).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kernels::testing
