// Pure, deterministic pieces of duet-bench: the seeded workload (prompt ids,
// lengths, arrival times) and the statistics. No gRPC, no threads, so tests
// check them on known data.
#ifndef DUET_CLIENT_BENCH_STATS_H_
#define DUET_CLIENT_BENCH_STATS_H_

#include <cstdint>
#include <random>
#include <vector>

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

 private:
  std::mt19937_64 engine_;
};

// Independent stream `stream` derived from `seed` (SplitMix64 of both), so
// e.g. prompts and arrival times do not shift when one of them draws more.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream);

// What requests a run sends. Lengths are drawn uniformly from [min, max]
// (inclusive); min == max gives a fixed length.
struct WorkloadOptions {
  int num_requests = 100;
  int input_len_min = 128;
  int input_len_max = 128;
  int output_len_min = 128;
  int output_len_max = 128;
  // Prompt ids are uniform in [0, vocab_limit).
  int vocab_limit = 32000;
  uint64_t seed = 0;
};

// One request of the workload.
struct BenchRequestSpec {
  int index = 0;
  std::vector<int32_t> prompt_token_ids;
  // Exact number of tokens to generate (sent as max_tokens with ignore_eos).
  int output_len = 0;
  // SamplingParams.seed, so sampled runs replay too.
  uint64_t sampling_seed = 0;
};

// The whole workload; the same options give the same requests.
std::vector<BenchRequestSpec> MakeBenchRequests(const WorkloadOptions& options);

// Send times of a Poisson process at `rate_per_s`, in seconds after the
// start: the first request goes at 0, each later one an exponential gap
// (mean 1 / rate) after the previous. An infinite rate sends all at 0.
std::vector<double> PoissonArrivalOffsets(int n, double rate_per_s,
                                          uint64_t seed);

// Summary of a sample. Percentiles interpolate linearly between the two
// closest ranks (numpy's default "linear" method): for sorted x[0..n-1],
// pXX = x[i] + f * (x[i+1] - x[i]) with i + f = XX / 100 * (n - 1).
struct Distribution {
  size_t count = 0;  // When 0 every other field is 0 (and null in JSON).
  double mean = 0;
  double min = 0;
  double max = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};

// `percent` in [0, 100]; `sorted` ascending and non-empty.
double Percentile(const std::vector<double>& sorted, double percent);

Distribution Summarize(std::vector<double> values);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_STATS_H_
