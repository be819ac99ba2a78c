// kernels/sampling.h: the shared arithmetic (exp, masses, targets) and the
// CPU backend's Sample op.
#include "kernels/sampling.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

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

}  // namespace
}  // namespace duet::kernels
