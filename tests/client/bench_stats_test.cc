// The deterministic half of duet-bench: random streams, workload generation,
// Poisson and gamma arrivals, length ranges, goodput SLOs and percentile
// statistics, on known data.
#include "client/bench_stats.h"

#include <cmath>
#include <set>
#include <tuple>
#include <utility>

#include "client/bench_dataset.h"
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

TEST(SummarizeTest, PopulationStdAndExtraPercentilesLikeNumpy) {
  // numpy.std([2, 4, 4, 4, 5, 5, 7, 9]) = 2 (ddof 0, as vLLM reports);
  // numpy.percentile(same, [25, 99.9]) = 4, 8.986.
  const Distribution d = Summarize({2, 4, 4, 4, 5, 5, 7, 9}, {25, 99.9});
  EXPECT_DOUBLE_EQ(d.stddev, 2);
  ASSERT_EQ(d.extra.size(), 2u);
  EXPECT_EQ(d.extra[0].first, 25);
  EXPECT_DOUBLE_EQ(d.extra[0].second, 4);
  EXPECT_NEAR(d.extra[1].second, 8.986, 1e-9);
  EXPECT_EQ(PercentileName(99), "99");
  EXPECT_EQ(PercentileName(99.9), "99.9");
  EXPECT_DOUBLE_EQ(Summarize({3}).stddev, 0);
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
  EXPECT_EQ(PoissonArrivalOffsets(100, 10, 5),
            PoissonArrivalOffsets(100, 10, 5));
  EXPECT_NE(PoissonArrivalOffsets(100, 10, 5),
            PoissonArrivalOffsets(100, 10, 6));
  EXPECT_EQ(PoissonArrivalOffsets(4, INFINITY, 5), std::vector<double>(4, 0.0));
  EXPECT_TRUE(PoissonArrivalOffsets(0, 10, 5).empty());
}

// Mean and coefficient of variation of the gaps of a seeded schedule.
std::pair<double, double> GapMeanAndCv(const std::vector<double>& t) {
  double sum = 0, sum_sq = 0;
  for (size_t i = 1; i < t.size(); ++i) {
    const double gap = t[i] - t[i - 1];
    EXPECT_GE(gap, 0);  // Shape < 1 draws gaps below the offsets' ulp.
    sum += gap;
    sum_sq += gap * gap;
  }
  const double n = static_cast<double>(t.size() - 1);
  const double mean = sum / n;
  return {mean, std::sqrt(sum_sq / n - mean * mean) / mean};
}

TEST(GammaArrivalsTest, MeanIsOneOverRateAndCvOneOverSqrtBurstiness) {
  // vLLM draws gaps from Gamma(shape = burstiness, scale = 1 / (rate *
  // burstiness)): mean 1 / rate, CV 1 / sqrt(burstiness). 100k gaps put
  // the mean's standard error at <= 0.45% (CV 1.4), so 2% is > 4 sigma.
  constexpr int kN = 100001;
  constexpr double kRate = 20;
  for (double burstiness : {0.5, 1.0, 2.0, 8.0, 0.25}) {
    const std::vector<double> t =
        ArrivalOffsets(kN, kRate, burstiness, DeriveSeed(9, 2));
    const auto [mean, cv] = GapMeanAndCv(t);
    EXPECT_NEAR(mean * kRate, 1.0, 0.02) << burstiness;
    EXPECT_NEAR(cv * std::sqrt(burstiness), 1.0, 0.03) << burstiness;
  }
}

TEST(GammaArrivalsTest, BurstinessOneIsThePoissonSchedule) {
  // Same times as before burstiness existed, so seeded runs replay.
  EXPECT_EQ(ArrivalOffsets(500, 7, 1.0, 11), PoissonArrivalOffsets(500, 7, 11));
  EXPECT_EQ(ArrivalOffsets(500, 7, 0.5, 11), ArrivalOffsets(500, 7, 0.5, 11));
  EXPECT_NE(ArrivalOffsets(500, 7, 0.5, 11), ArrivalOffsets(500, 7, 2, 11));
  EXPECT_EQ(ArrivalOffsets(3, INFINITY, 0.5, 11), std::vector<double>(3, 0.0));
}

TEST(BenchRngTest, GammaMomentsForSmallAndLargeShapes) {
  // Gamma(k, s): mean k s, variance k s^2 (shape < 1 takes the boost path).
  for (double shape : {0.3, 1.0, 4.5}) {
    BenchRng rng(17);
    double sum = 0, sum_sq = 0;
    constexpr int kN = 200000;
    for (int i = 0; i < kN; ++i) {
      const double x = rng.Gamma(shape, 2.0);
      ASSERT_GT(x, 0);
      sum += x;
      sum_sq += x * x;
    }
    const double mean = sum / kN;
    EXPECT_NEAR(mean / (2.0 * shape), 1.0, 0.02) << shape;
    EXPECT_NEAR((sum_sq / kN - mean * mean) / (4.0 * shape), 1.0, 0.05)
        << shape;
  }
}

TEST(RangeRatioTest, VllmBoundsTruncatedAndAtLeastOne) {
  // vLLM: [int(len * (1 - r)), int(len * (1 + r))].
  EXPECT_EQ(*RangeRatioBounds(100, 0.25, "--input-len"),
            std::make_pair(75, 125));
  EXPECT_EQ(*RangeRatioBounds(10, 0.55, "--input-len"),
            std::make_pair(4, 15));  // 4.5 -> 4, 15.5 -> 15
  EXPECT_EQ(*RangeRatioBounds(128, 0, "--input-len"), std::make_pair(128, 128));
  EXPECT_EQ(*RangeRatioBounds(1, 0.9, "--output-len"), std::make_pair(1, 1));
  for (double bad : {1.0, -0.1, 1.5, static_cast<double>(NAN)}) {
    const auto s = RangeRatioBounds(100, bad, "--input-len").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()),
                ::testing::HasSubstr("--range-ratio"));
  }
  EXPECT_THAT(
      std::string(RangeRatioBounds(0, 0.5, "--output-len").status().message()),
      ::testing::HasSubstr("--output-len must be > 0"));
}

TEST(RangeRatioTest, RandomLengthsStayInsideAndReachBothEnds) {
  WorkloadOptions w;
  w.num_requests = 2000;
  std::tie(w.input_len_min, w.input_len_max) =
      *RangeRatioBounds(20, 0.5, "--input-len");
  std::tie(w.output_len_min, w.output_len_max) =
      *RangeRatioBounds(8, 0.25, "--output-len");
  std::set<int> in, out;
  for (const BenchRequestSpec& r : MakeBenchRequests(w)) {
    in.insert(static_cast<int>(r.prompt_token_ids.size()));
    out.insert(r.output_len);
    EXPECT_EQ(r.input_len, static_cast<int>(r.prompt_token_ids.size()));
  }
  EXPECT_EQ(*in.begin(), 10);
  EXPECT_EQ(*in.rbegin(), 30);
  EXPECT_EQ(in.size(), 21u);
  EXPECT_EQ(*out.begin(), 6);
  EXPECT_EQ(*out.rbegin(), 10);
}

TEST(GoodputTest, ParsesVllmSyntaxAndRejectsWhatItCannotUse) {
  auto slos = ParseGoodput("ttft:500 tpot:50,e2el:2000.5");
  ASSERT_TRUE(slos.ok()) << slos.status();
  EXPECT_EQ(slos->ttft_ms, 500);
  EXPECT_EQ(slos->tpot_ms, 50);
  EXPECT_EQ(slos->e2el_ms, 2000.5);
  EXPECT_EQ(GoodputToString(*slos), "ttft:500 tpot:50 e2el:2000.5");
  auto one = ParseGoodput("TPOT:20");
  ASSERT_TRUE(one.ok());
  EXPECT_FALSE(one->ttft_ms.has_value());
  EXPECT_TRUE(ParseGoodput("")->empty());
  for (const char* bad : {"ttft", "ttft:", "ttft:-1", "ttft:0", "ttft:abc",
                          "latency:5", "ttft:5 ttft:6", "ttft:inf"}) {
    const auto s = ParseGoodput(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("--goodput"));
  }
}

TEST(GoodputTest, AGoodRequestMeetsEverySloGiven) {
  GoodputSlos slos;
  EXPECT_TRUE(MeetsSlos(slos, 1e9, 1e9, 1e9));  // No SLO: nothing to miss.
  slos.ttft_ms = 100;
  slos.tpot_ms = 10;
  EXPECT_TRUE(MeetsSlos(slos, 100, 10, 1e9));  // Equal is good, as in vLLM.
  EXPECT_FALSE(MeetsSlos(slos, 100.5, 10, 0));
  EXPECT_FALSE(MeetsSlos(slos, 50, 10.5, 0));
  slos.e2el_ms = 300;
  EXPECT_FALSE(MeetsSlos(slos, 50, 5, 301));
  EXPECT_TRUE(MeetsSlos(slos, 50, 5, 300));
}

TEST(NumberListTest, RatesAndPercentiles) {
  EXPECT_EQ(*ParseNumberList("1, 2.5,4", "--sweep-rates", true),
            (std::vector<double>{1, 2.5, 4}));
  EXPECT_TRUE(std::isinf(ParseNumberList("inf", "--sweep-rates", true)->at(0)));
  for (const char* bad : {"", "1,x", "0", "-2", "inf"}) {
    const auto s = ParseNumberList(bad, "--metric-percentiles", false).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(s.message()),
                ::testing::HasSubstr("--metric-percentiles"));
  }
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
