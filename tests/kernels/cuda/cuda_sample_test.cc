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

}  // namespace
}  // namespace duet::kernels::testing
