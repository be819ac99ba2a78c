#include "client/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/random.h"

namespace duet::client {

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

double BenchRng::Normal() {
  const double u1 = 1.0 - Uniform01();  // (0, 1]: the log is finite.
  const double u2 = Uniform01();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double BenchRng::Gamma(double shape, double scale) {
  if (shape < 1) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia-Tsang's boost).
    const double u = 1.0 - Uniform01();
    return Gamma(shape + 1, scale) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = Normal();
      v = 1.0 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const double u = 1.0 - Uniform01();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) {
      return d * v * scale;
    }
  }
}

uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  return SplitMix64(SplitMix64(seed) ^
                    SplitMix64(stream + 0x5851f42d4c957f2dULL));
}

std::vector<double> ArrivalOffsets(int n, double rate_per_s, double burstiness,
                                   uint64_t seed) {
  std::vector<double> offsets(std::max(n, 0), 0.0);
  if (std::isinf(rate_per_s)) return offsets;
  BenchRng rng(seed);
  const double scale = 1.0 / (rate_per_s * burstiness);
  for (int i = 1; i < n; ++i) {
    // Exponential draws for burstiness 1 keep the Poisson schedules of
    // earlier duet-bench versions (same seed, same times).
    const double gap = burstiness == 1.0 ? rng.Exponential(rate_per_s)
                                         : rng.Gamma(burstiness, scale);
    offsets[i] = offsets[i - 1] + gap;
  }
  return offsets;
}

std::vector<double> PoissonArrivalOffsets(int n, double rate_per_s,
                                          uint64_t seed) {
  return ArrivalOffsets(n, rate_per_s, 1.0, seed);
}

absl::StatusOr<std::pair<int, int>> RangeRatioBounds(int len,
                                                     double range_ratio,
                                                     absl::string_view flag) {
  if (len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " must be > 0, got ", len));
  }
  if (!(range_ratio >= 0 && range_ratio < 1)) {  // NaN fails too.
    return absl::InvalidArgumentError(
        absl::StrCat("--range-ratio must be in [0, 1) (lengths are uniform in "
                     "[len*(1-r), len*(1+r)]), got ",
                     range_ratio));
  }
  const int lo = static_cast<int>(len * (1 - range_ratio));
  const int hi = static_cast<int>(len * (1 + range_ratio));
  return std::make_pair(std::max(lo, 1), std::max(hi, 1));
}

absl::StatusOr<GoodputSlos> ParseGoodput(absl::string_view text) {
  GoodputSlos slos;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(" ,"), absl::SkipWhitespace())) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--goodput: bad SLO '", item, "': ", why,
          " (write METRIC:MS pairs, e.g. --goodput ttft:500 tpot:50; metrics "
          "ttft, tpot, e2el)"));
    };
    const size_t colon = item.find(':');
    if (colon == absl::string_view::npos) return bad("no ':'");
    const std::string metric = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(item.substr(0, colon)));
    double ms = 0;
    if (!absl::SimpleAtod(item.substr(colon + 1), &ms) || !std::isfinite(ms) ||
        ms <= 0) {
      return bad("the value must be a number of ms > 0");
    }
    std::optional<double>* slot = metric == "ttft"   ? &slos.ttft_ms
                                  : metric == "tpot" ? &slos.tpot_ms
                                  : metric == "e2el" ? &slos.e2el_ms
                                                     : nullptr;
    if (slot == nullptr) return bad("unknown metric");
    if (slot->has_value()) return bad("metric given twice");
    *slot = ms;
  }
  return slos;
}

std::string GoodputToString(const GoodputSlos& slos) {
  std::vector<std::string> parts;
  if (slos.ttft_ms) parts.push_back(absl::StrCat("ttft:", *slos.ttft_ms));
  if (slos.tpot_ms) parts.push_back(absl::StrCat("tpot:", *slos.tpot_ms));
  if (slos.e2el_ms) parts.push_back(absl::StrCat("e2el:", *slos.e2el_ms));
  return absl::StrJoin(parts, " ");
}

bool MeetsSlos(const GoodputSlos& slos, double ttft_ms, double tpot_ms,
               double e2el_ms) {
  return (!slos.ttft_ms || ttft_ms <= *slos.ttft_ms) &&
         (!slos.tpot_ms || tpot_ms <= *slos.tpot_ms) &&
         (!slos.e2el_ms || e2el_ms <= *slos.e2el_ms);
}

double Percentile(const std::vector<double>& sorted, double percent) {
  const double rank = percent / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lower = static_cast<size_t>(std::floor(rank));
  const size_t upper = std::min(lower + 1, sorted.size() - 1);
  const double fraction = rank - static_cast<double>(lower);
  return sorted[lower] + fraction * (sorted[upper] - sorted[lower]);
}

Distribution Summarize(std::vector<double> values,
                       const std::vector<double>& extra_percentiles) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  d.count = values.size();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  double sum_sq = 0;
  for (double v : values) sum_sq += (v - d.mean) * (v - d.mean);
  d.stddev = std::sqrt(sum_sq / n);
  d.min = values.front();
  d.max = values.back();
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  for (double p : extra_percentiles) {
    d.extra.emplace_back(p, Percentile(values, p));
  }
  return d;
}

absl::StatusOr<std::vector<double>> ParseNumberList(absl::string_view text,
                                                    absl::string_view flag,
                                                    bool allow_inf) {
  std::vector<double> out;
  for (absl::string_view item :
       absl::StrSplit(text, absl::ByAnyChar(" ,"), absl::SkipWhitespace())) {
    double v = 0;
    const bool inf = absl::AsciiStrToLower(item) == "inf";
    if (inf && allow_inf) {
      out.push_back(std::numeric_limits<double>::infinity());
      continue;
    }
    if (inf || !absl::SimpleAtod(item, &v) || !std::isfinite(v) || v <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": '", item, "' is not a number > 0",
          allow_inf ? " or inf" : "", " (write a comma-separated list)"));
    }
    out.push_back(v);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " needs at least one value"));
  }
  return out;
}

std::string PercentileName(double percent) {
  if (percent == std::floor(percent)) {
    return absl::StrCat(static_cast<int64_t>(percent));
  }
  return absl::StrFormat("%g", percent);
}

}  // namespace duet::client
