// The deterministic half of duet-bench: random streams, workload generation,
// Poisson arrivals and percentile statistics, on known data.
#include "client/bench_stats.h"

#include <cmath>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::client {
namespace {

TEST(BenchRngTest, EngineIsTheStandardMt19937_64) {
  // The C++ standard fixes the 10000th output of a default-seeded
  // mt19937_64; this pins the cross-platform replay promise.
  BenchRng rng(5489u);
  uint64_t x = 0;
  for (int i = 0; i < 10000; ++i) x = rng.Next();
  EXPECT_EQ(x, 9981545732273789042ULL);
}

TEST(BenchRngTest, UniformIntStaysInRangeAndHitsEveryValue) {
  BenchRng rng(7);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = rng.UniformInt(-3, 4);
    ASSERT_GE(v, -3);
    ASSERT_LE(v, 4);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 8u);
  EXPECT_EQ(rng.UniformInt(5, 5), 5);
}

TEST(BenchRngTest, Uniform01IsInTheHalfOpenUnitInterval) {
  BenchRng rng(1);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng.Uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

TEST(PercentileTest, LinearInterpolationMatchesNumpy) {
  // numpy.percentile([1..10], [0, 50, 90, 99, 100]) = 1, 5.5, 9.1, 9.91, 10.
  std::vector<double> v = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 5.5);
  EXPECT_NEAR(Percentile(v, 90), 9.1, 1e-12);
  EXPECT_NEAR(Percentile(v, 99), 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 10);
  // numpy.percentile([15, 20, 35, 40, 50], 40) = 29.
  EXPECT_DOUBLE_EQ(Percentile({15, 20, 35, 40, 50}, 40), 29);
  EXPECT_DOUBLE_EQ(Percentile({42}, 99), 42);
}

TEST(SummarizeTest, SortsAndSummarizes) {
  const Distribution d = Summarize({10, 1, 4, 7, 3, 2, 9, 8, 5, 6});
  EXPECT_EQ(d.count, 10u);
  EXPECT_DOUBLE_EQ(d.mean, 5.5);
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 10);
  EXPECT_DOUBLE_EQ(d.p50, 5.5);
  EXPECT_NEAR(d.p90, 9.1, 1e-12);
  EXPECT_NEAR(d.p99, 9.91, 1e-12);
}

TEST(SummarizeTest, EmptySampleHasCountZero) {
  const Distribution d = Summarize({});
  EXPECT_EQ(d.count, 0u);
  EXPECT_EQ(d.mean, 0);
  EXPECT_EQ(d.p99, 0);
}

TEST(PoissonTest, SeededRunHasTheRequestedMeanRate) {
  constexpr int kN = 200001;
  constexpr double kRate = 50;
  const std::vector<double> t = PoissonArrivalOffsets(kN, kRate, 123);
  ASSERT_EQ(t.size(), static_cast<size_t>(kN));
  EXPECT_EQ(t[0], 0);
  double sum = 0, sum_sq = 0;
  for (int i = 1; i < kN; ++i) {
    const double gap = t[i] - t[i - 1];
    ASSERT_GE(gap, 0);
    sum += gap;
    sum_sq += gap * gap;
  }
  const double mean = sum / (kN - 1);
  const double stddev = std::sqrt(sum_sq / (kN - 1) - mean * mean);
  // Standard error of the mean is 0.22% here; 1% is a 4.5-sigma band.
  EXPECT_NEAR(mean, 1 / kRate, 0.01 / kRate);
  EXPECT_NEAR((kN - 1) / t.back(), kRate, 0.01 * kRate);
  // Exponential gaps: standard deviation equals the mean.
  EXPECT_NEAR(stddev / mean, 1.0, 0.02);
}

TEST(PoissonTest, SameSeedSameTimesAndInfiniteRateIsABurst) {
  EXPECT_EQ(PoissonArrivalOffsets(100, 10, 5), PoissonArrivalOffsets(100, 10, 5));
  EXPECT_NE(PoissonArrivalOffsets(100, 10, 5), PoissonArrivalOffsets(100, 10, 6));
  EXPECT_EQ(PoissonArrivalOffsets(4, INFINITY, 5), std::vector<double>(4, 0.0));
  EXPECT_TRUE(PoissonArrivalOffsets(0, 10, 5).empty());
}

WorkloadOptions Workload() {
  WorkloadOptions w;
  w.num_requests = 50;
  w.input_len_min = 4;
  w.input_len_max = 40;
  w.output_len_min = 2;
  w.output_len_max = 9;
  w.vocab_limit = 100;
  w.seed = 42;
  return w;
}

TEST(WorkloadTest, SameOptionsGiveTheSameRequests) {
  const auto a = MakeBenchRequests(Workload());
  const auto b = MakeBenchRequests(Workload());
  ASSERT_EQ(a.size(), 50u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, static_cast<int>(i));
    EXPECT_EQ(a[i].prompt_token_ids, b[i].prompt_token_ids);
    EXPECT_EQ(a[i].output_len, b[i].output_len);
    EXPECT_EQ(a[i].sampling_seed, b[i].sampling_seed);
  }
}

TEST(WorkloadTest, OtherSeedGivesOtherPrompts) {
  WorkloadOptions other = Workload();
  other.seed = 43;
  const auto a = MakeBenchRequests(Workload());
  const auto b = MakeBenchRequests(other);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    same += a[i].prompt_token_ids == b[i].prompt_token_ids;
  }
  EXPECT_EQ(same, 0);
}

TEST(WorkloadTest, RequestIDoesNotDependOnHowManyAreSent) {
  WorkloadOptions fewer = Workload();
  fewer.num_requests = 10;
  const auto a = MakeBenchRequests(Workload());
  const auto b = MakeBenchRequests(fewer);
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(a[i].prompt_token_ids, b[i].prompt_token_ids);
  }
}

TEST(WorkloadTest, LengthsAndIdsStayInRangeAndVary) {
  std::set<int> input_lens, output_lens;
  for (const BenchRequestSpec& r : MakeBenchRequests(Workload())) {
    const int in = static_cast<int>(r.prompt_token_ids.size());
    EXPECT_GE(in, 4);
    EXPECT_LE(in, 40);
    EXPECT_GE(r.output_len, 2);
    EXPECT_LE(r.output_len, 9);
    for (int32_t id : r.prompt_token_ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 100);
    }
    input_lens.insert(in);
    output_lens.insert(r.output_len);
  }
  EXPECT_GT(input_lens.size(), 10u);
  EXPECT_EQ(output_lens.size(), 8u);
}

TEST(WorkloadTest, EqualBoundsGiveFixedLengths) {
  WorkloadOptions w = Workload();
  w.input_len_min = w.input_len_max = 16;
  w.output_len_min = w.output_len_max = 5;
  for (const BenchRequestSpec& r : MakeBenchRequests(w)) {
    EXPECT_EQ(r.prompt_token_ids.size(), 16u);
    EXPECT_EQ(r.output_len, 5);
  }
}

}  // namespace
}  // namespace duet::client
