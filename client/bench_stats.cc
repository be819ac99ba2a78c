#include "client/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/random.h"

namespace duet::client {
namespace {

// Stream ids under DeriveSeed. Request i uses a stream of its own (derived
// from kRequestStream), so request i is the same whatever num_requests is.
constexpr uint64_t kRequestStream = 1;

}  // namespace

int64_t BenchRng::UniformInt(int64_t lo, int64_t hi) {
  const uint64_t span =
      static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) + 1;
  if (span == 0) return static_cast<int64_t>(Next());  // The full 64-bit range.
  // Reject the 2^64 mod span lowest values so every residue is equally
  // likely.
  const uint64_t threshold = (0 - span) % span;
  for (;;) {
    const uint64_t x = Next();
    if (x >= threshold) {
      return static_cast<int64_t>(static_cast<uint64_t>(lo) + x % span);
    }
  }
}

double BenchRng::Uniform01() {
  return static_cast<double>(Next() >> 11) * 0x1.0p-53;
}

double BenchRng::Exponential(double rate) {
  // 1 - u is in (0, 1], so the log is finite.
  return -std::log1p(-Uniform01()) / rate;
}

uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  return SplitMix64(SplitMix64(seed) ^
                    SplitMix64(stream + 0x5851f42d4c957f2dULL));
}

std::vector<BenchRequestSpec> MakeBenchRequests(
    const WorkloadOptions& options) {
  std::vector<BenchRequestSpec> requests;
  requests.reserve(std::max(options.num_requests, 0));
  const uint64_t base = DeriveSeed(options.seed, kRequestStream);
  for (int i = 0; i < options.num_requests; ++i) {
    BenchRng rng(DeriveSeed(base, static_cast<uint64_t>(i)));
    BenchRequestSpec spec;
    spec.index = i;
    const int input_len = static_cast<int>(
        rng.UniformInt(options.input_len_min, options.input_len_max));
    spec.output_len = static_cast<int>(
        rng.UniformInt(options.output_len_min, options.output_len_max));
    spec.sampling_seed = rng.Next();
    spec.prompt_token_ids.resize(input_len);
    for (int32_t& id : spec.prompt_token_ids) {
      id = static_cast<int32_t>(rng.UniformInt(0, options.vocab_limit - 1));
    }
    requests.push_back(std::move(spec));
  }
  return requests;
}

std::vector<double> PoissonArrivalOffsets(int n, double rate_per_s,
                                          uint64_t seed) {
  std::vector<double> offsets(std::max(n, 0), 0.0);
  if (std::isinf(rate_per_s)) return offsets;
  BenchRng rng(seed);
  for (int i = 1; i < n; ++i) {
    offsets[i] = offsets[i - 1] + rng.Exponential(rate_per_s);
  }
  return offsets;
}

double Percentile(const std::vector<double>& sorted, double percent) {
  const double rank = percent / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lower = static_cast<size_t>(std::floor(rank));
  const size_t upper = std::min(lower + 1, sorted.size() - 1);
  const double fraction = rank - static_cast<double>(lower);
  return sorted[lower] + fraction * (sorted[upper] - sorted[lower]);
}

Distribution Summarize(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = values.size();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) /
           static_cast<double>(values.size());
  d.min = values.front();
  d.max = values.back();
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  return d;
}

}  // namespace duet::client
