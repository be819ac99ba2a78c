// duet-bench --sweep-rates: the same workload at several request rates,
// summarized as one CSV row per rate and plotted (goodput and latency
// percentiles against rate) by scripts/plot_bench_sweep.py.
#ifndef DUET_CLIENT_BENCH_SWEEP_H_
#define DUET_CLIENT_BENCH_SWEEP_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/bench.h"

namespace duet::client {

// The CSV's columns, in order: rate (req/s, "inf"), burstiness,
// max_concurrency (0 = none), completed, failed, duration_s,
// request_throughput, request_goodput (empty without --goodput),
// output_throughput, total_token_throughput, then for each of ttft, tpot,
// itl, e2el: <metric>_p50_ms, _p90_ms, _p99_ms (empty without samples).
std::vector<std::string> SweepCsvHeader();

// Header line plus one line per report, in the given order.
std::string SweepCsv(const std::vector<BenchReport>& reports);

// `stem` + "_rate" + RateText(rate) + ".json": the per-rate JSON of a sweep
// (stem "out/run" and rate 2.5 give "out/run_rate2.5.json").
std::string SweepJsonPath(const std::string& stem, double rate);

// Runs `python3 script csv png` (the plot needs Debian's
// python3-matplotlib). FAILED_PRECONDITION naming the command when it does
// not exit 0.
absl::Status PlotSweep(const std::string& script, const std::string& csv_path,
                       const std::string& png_path);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_SWEEP_H_
