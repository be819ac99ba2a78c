// Pure, deterministic pieces of duet-bench: the seeded random streams,
// arrival times, length ranges, goodput SLOs and the statistics. No gRPC, no
// threads, so tests check them on known data.
#ifndef DUET_CLIENT_BENCH_STATS_H_
#define DUET_CLIENT_BENCH_STATS_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::client {

// Random numbers whose sequence is fixed by the seed on every platform and
// compiler: std::mt19937_64's output is specified by the standard, while
// std::uniform_int_distribution and absl::BitGen are not, so the ranges are
// mapped here by hand. A seeded bench run replays the same workload anywhere.
class BenchRng {
 public:
  explicit BenchRng(uint64_t seed) : engine_(seed) {}
  uint64_t Next() { return engine_(); }
  // Uniform in [lo, hi], both inclusive; lo <= hi. Rejection sampling, so
  // no modulo bias.
  int64_t UniformInt(int64_t lo, int64_t hi);
  // Uniform in [0, 1) with 53 random bits.
  double Uniform01();
  // Exponentially distributed with the given rate (mean 1 / rate); > 0.
  double Exponential(double rate);
  // Standard normal (Box-Muller; one of the pair is discarded so a draw
  // consumes a fixed number of engine outputs).
  double Normal();
  // Gamma(shape, scale), mean shape * scale, both > 0 (Marsaglia-Tsang; for
  // shape < 1 the shape + 1 draw is scaled by U^(1/shape)).
  double Gamma(double shape, double scale);

 private:
  std::mt19937_64 engine_;
};

// Independent stream `stream` derived from `seed` (SplitMix64 of both), so
// e.g. prompts and arrival times do not shift when one of them draws more.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream);

// Send times in seconds after the start, as vLLM's `bench serve` draws them:
// gaps are Gamma(shape = burstiness, scale = 1 / (rate * burstiness)), so
// their mean is 1 / rate and their coefficient of variation
// 1 / sqrt(burstiness). burstiness 1 is a Poisson process (exponential
// gaps, drawn as such), < 1 burstier, > 1 more regular. The first request
// goes at 0. An infinite rate sends all at 0.
std::vector<double> ArrivalOffsets(int n, double rate_per_s, double burstiness,
                                   uint64_t seed);

// ArrivalOffsets with burstiness 1.
std::vector<double> PoissonArrivalOffsets(int n, double rate_per_s,
                                          uint64_t seed);

// Inclusive length range of vLLM's random dataset for `len` and
// `range_ratio` r in [0, 1): [int(len * (1 - r)), int(len * (1 + r))]
// (truncated, as vLLM does), the lower end raised to 1. INVALID_ARGUMENT
// naming `flag` for len <= 0 and naming --range-ratio for r outside [0, 1).
absl::StatusOr<std::pair<int, int>> RangeRatioBounds(int len,
                                                     double range_ratio,
                                                     absl::string_view flag);

// vLLM's --goodput: service-level objectives in ms; a completed request is
// "good" when it meets every one that is set.
struct GoodputSlos {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;

  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};

// "ttft:500 tpot:50" (spaces or commas between pairs; any subset of ttft,
// tpot, e2el, each once; values in ms, > 0). "" is no SLO.
absl::StatusOr<GoodputSlos> ParseGoodput(absl::string_view text);

// "ttft:500 tpot:50" (what ParseGoodput reads back); "" when empty.
std::string GoodputToString(const GoodputSlos& slos);

// vLLM's rule: every SLO given is met (metric <= SLO). `tpot_ms` is 0 for a
// request with fewer than 2 tokens, as in vLLM.
bool MeetsSlos(const GoodputSlos& slos, double ttft_ms, double tpot_ms,
               double e2el_ms);

// Summary of a sample. Percentiles interpolate linearly between the two
// closest ranks (numpy's default "linear" method): for sorted x[0..n-1],
// pXX = x[i] + f * (x[i+1] - x[i]) with i + f = XX / 100 * (n - 1).
struct Distribution {
  size_t count = 0;  // When 0 every other field is 0 (and null in JSON).
  double mean = 0;
  // Population standard deviation (numpy.std's default, as vLLM reports).
  double stddev = 0;
  double min = 0;
  double max = 0;
  double p50 = 0;  // The median.
  double p90 = 0;
  double p99 = 0;
  // (percent, value) for each percentile asked of Summarize, in that order.
  std::vector<std::pair<double, double>> extra;
};

// `percent` in [0, 100]; `sorted` ascending and non-empty.
double Percentile(const std::vector<double>& sorted, double percent);

// `extra_percentiles` in [0, 100] fill Distribution::extra.
Distribution Summarize(std::vector<double> values,
                       const std::vector<double>& extra_percentiles = {});

// "1, 2.5,inf" -> {1, 2.5, inf}. Every element must be a number > 0 (or
// "inf" when `allow_inf`); INVALID_ARGUMENT names `flag` and the element.
absl::StatusOr<std::vector<double>> ParseNumberList(absl::string_view text,
                                                    absl::string_view flag,
                                                    bool allow_inf);

// vLLM's key for a percentile: 99 -> "99", 99.9 -> "99.9".
std::string PercentileName(double percent);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_STATS_H_
