// duet-bench as a library: runs a seeded workload against a router and
// reports throughput, goodput and latency (TTFT, TPOT, ITL, E2EL) the way
// vLLM's `bench serve` does. duet-bench's main only parses flags and prints;
// tests drive RunBench directly.
//
// Concurrency model: one thread per in-flight request, each running a
// blocking DuetClient::Generate. The sync gRPC API reads on the calling
// thread, so a token's timestamp is taken by the thread that waits for it,
// right as the read returns, with no hand-off to a completion queue thread
// in between; hundreds of mostly-sleeping threads are cheap.
#ifndef DUET_CLIENT_BENCH_H_
#define DUET_CLIENT_BENCH_H_

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/bench_dataset.h"
#include "client/bench_stats.h"
#include "client/client.h"

namespace duet::client {

// The latency metrics, in vLLM's names and order.
inline const std::vector<std::string>& AllLatencyMetrics() {
  static const auto* metrics =
      new std::vector<std::string>{"ttft", "tpot", "itl", "e2el"};
  return *metrics;
}

struct BenchOptions {
  WorkloadOptions workload;
  // Requests/s: arrivals with Gamma-distributed gaps of mean 1 / rate (see
  // ArrivalOffsets; burstiness 1 is Poisson). inf sends all at once.
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1.0;
  // > 0: at most this many requests in flight; a request due while all are
  // busy is sent when one ends (with rate inf: a closed loop). 0: no cap.
  int max_concurrency = 0;
  // Deadline of each request.
  absl::Duration timeout = absl::Minutes(10);
  // SamplingParams.temperature (0 = greedy).
  float temperature = 0;
  // SamplingParams.ignore_eos: output lengths are exact (then
  // output_len_mismatches counts violations).
  bool ignore_eos = true;
  // --goodput; empty: request_goodput is not computed.
  GoodputSlos goodput;
  // --percentile-metrics: the metrics shown in the table and given the
  // extra percentiles (each of AllLatencyMetrics()).
  std::vector<std::string> percentile_metrics = AllLatencyMetrics();
  // --metric-percentiles beyond the p50 / p90 / p99 always reported.
  std::vector<double> metric_percentiles;
  // Request ids are <prefix><index>.
  std::string request_id_prefix = "bench-";
  // Where to draw the progress line (carriage-return updated every
  // progress_interval, a newline at the end); null: none.
  FILE* progress = nullptr;
  absl::Duration progress_interval = absl::Milliseconds(250);
};

// Send times are ArrivalOffsets(num_requests, request_rate, burstiness,
// DeriveSeed(workload.seed, kArrivalSeedStream)).
inline constexpr uint64_t kArrivalSeedStream = 2;
// A thread per in-flight request; beyond this the machine, not the server,
// would be what is measured.
inline constexpr int kMaxConcurrency = 4096;

// INVALID_ARGUMENT naming the first bad option's flag and what to fix (a
// usage error in the tool). Does not read dataset files (LoadBenchRequests
// does).
absl::Status ValidateBenchOptions(const BenchOptions& options);

// What happened to one request, client-side measurements in ms.
struct RequestRecord {
  int index = 0;
  // Prompt tokens: the router's count for text prompts when it answered
  // (GenerationFinished.usage), else the spec's.
  int input_len = 0;
  int output_len_requested = 0;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string error_message;
  // Tokens received (also for failed requests: what arrived before).
  int output_tokens = 0;
  // Send time after the run's start.
  double start_ms = 0;
  double ttft_ms = 0;
  double e2e_ms = 0;
  // Gaps between token-carrying messages.
  std::vector<double> itl_ms;
  v1::Timings server_timings;
  // Prompt tokens whose KV came from a prefix cache (the router's usage).
  int cached_prompt_tokens = 0;

  bool ok() const { return code == absl::StatusCode::kOk; }
  // (e2e - ttft) / (tokens - 1); 0 with fewer than 2 tokens (vLLM's rule
  // for goodput; such requests give no TPOT sample).
  double tpot_ms() const {
    return output_tokens >= 2 ? (e2e_ms - ttft_ms) / (output_tokens - 1) : 0;
  }
};

struct FailureSummary {
  int count = 0;
  std::string first_message;
};

// Server-reported timings, averaged over completed requests.
struct ServerTimingMeans {
  double queue_ms = 0;
  double prefill_ms = 0;
  double transfer_ms = 0;
  double ttft_ms = 0;
  double decode_ms = 0;
};

struct BenchReport {
  BenchOptions options;
  std::string router;
  // Local start time, vLLM's "%Y%m%d-%H%M%S"; set by RunBench.
  std::string date;
  int completed = 0;
  int failed = 0;
  // By absl::StatusCodeToString of the code, e.g. "RESOURCE_EXHAUSTED".
  std::map<std::string, FailureSummary> failures;
  // From the first send until the last request ended.
  double duration_s = 0;
  // Throughputs count completed requests only.
  double request_throughput_rps = 0;
  double output_throughput_tok_s = 0;
  double total_token_throughput_tok_s = 0;
  // Completed requests meeting every --goodput SLO, and their rate (both 0
  // without SLOs).
  int good_completed = 0;
  double request_goodput_rps = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  // With ignore_eos: completed requests whose token count differs from the
  // requested length (anything but 0 is a server bug). 0 without.
  int output_len_mismatches = 0;
  // Completed requests only. TPOT for requests with at least 2 tokens; ITL
  // pools every gap of every completed request.
  Distribution ttft_ms;
  Distribution tpot_ms;
  Distribution itl_ms;
  Distribution e2e_latency_ms;
  ServerTimingMeans server_timings_mean;
  std::vector<RequestRecord> requests;

  // "ttft", "tpot", "itl" or "e2el".
  const Distribution& metric(const std::string& name) const;
};

// Aggregates per-request records (pure; RunBench calls it).
BenchReport BuildReport(const BenchOptions& options, std::string router,
                        std::vector<RequestRecord> records, double duration_s);

// Connects (up to `connect_timeout`), loads the workload, then runs it to
// completion. Request failures are counted in the report, not returned; the
// status is an error only for invalid options or datasets (INVALID_ARGUMENT)
// or an unreachable router.
absl::StatusOr<BenchReport> RunBench(
    DuetClient& client, const BenchOptions& options,
    absl::Duration connect_timeout = absl::Seconds(10));

// The same with the requests given (a sweep loads them once).
absl::StatusOr<BenchReport> RunBench(
    DuetClient& client, const BenchOptions& options,
    const std::vector<BenchRequestSpec>& requests,
    absl::Duration connect_timeout = absl::Seconds(10));

// The progress line, without the leading carriage return:
// "[duet-bench] 12/100 done, 1 failed, 8 in flight, 3.2 s".
std::string FormatProgress(int completed, int failed, int in_flight, int total,
                           double elapsed_s);

// Aligned human-readable table (several lines, trailing newline).
std::string FormatReportTable(const BenchReport& report);

// The report as pretty JSON: vLLM's `bench serve --save-result` fields
// (duration, completed, request_throughput, request_goodput,
// mean/median/std/pNN_{ttft,tpot,itl,e2el}_ms, ...) next to duet's own
// (schema 1's, with units in their names); docs/BENCH.md lists them.
// Per-request records and vLLM's per-request arrays only when
// `include_requests`.
std::string ReportToJson(const BenchReport& report, bool include_requests);

// "rate" is "inf" for an infinite rate, else the number.
std::string RateText(double rate);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_H_
