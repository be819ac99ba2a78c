// duet-bench as a library: runs a seeded workload against a router and
// reports throughput and latency (TTFT, TPOT, ITL, E2E). duet-bench's main
// only parses flags and prints; tests drive RunBench directly.
//
// Concurrency model: one thread per in-flight request, each running a
// blocking DuetClient::Generate. The sync gRPC API reads on the calling
// thread, so a token's timestamp is taken by the thread that waits for it,
// right as the read returns, with no hand-off to a completion queue thread
// in between; hundreds of mostly-sleeping threads are cheap.
#ifndef DUET_CLIENT_BENCH_H_
#define DUET_CLIENT_BENCH_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/bench_stats.h"
#include "client/client.h"

namespace duet::client {

struct BenchOptions {
  WorkloadOptions workload;
  // Exactly one of the two arrival modes:
  // open loop, Poisson arrivals at this many requests/s (inf = all at once);
  double request_rate = 0;
  // closed loop, this many requests in flight, each next one sent as soon as
  // one finishes.
  int concurrency = 0;
  // Deadline of each request.
  absl::Duration timeout = absl::Minutes(10);
  // SamplingParams.temperature (0 = greedy); lengths do not depend on it
  // because every request sets ignore_eos.
  float temperature = 0;
  // Request ids are <prefix><index>.
  std::string request_id_prefix = "bench-";
};

// Open-loop send times are PoissonArrivalOffsets(num_requests, request_rate,
// DeriveSeed(workload.seed, kArrivalSeedStream)); requests use stream 1.
inline constexpr uint64_t kArrivalSeedStream = 2;

// INVALID_ARGUMENT naming the first bad option (a usage error in the tool).
absl::Status ValidateBenchOptions(const BenchOptions& options);

// What happened to one request, client-side measurements in ms.
struct RequestRecord {
  int index = 0;
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

  bool ok() const { return code == absl::StatusCode::kOk; }
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
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  // Completed requests whose token count differs from the requested length
  // (ignore_eos makes lengths exact, so anything but 0 is a server bug).
  int output_len_mismatches = 0;
  // Completed requests only. TPOT per request = (e2e - ttft) / (tokens - 1),
  // for requests with at least 2 tokens; ITL pools every gap of every
  // completed request.
  Distribution ttft_ms;
  Distribution tpot_ms;
  Distribution itl_ms;
  Distribution e2e_latency_ms;
  ServerTimingMeans server_timings_mean;
  std::vector<RequestRecord> requests;
};

// Aggregates per-request records (pure; RunBench calls it).
BenchReport BuildReport(const BenchOptions& options, std::string router,
                        std::vector<RequestRecord> records, double duration_s);

// Connects (up to `connect_timeout`), then runs the workload to completion.
// Request failures are counted in the report, not returned; the status is
// an error only for invalid options or an unreachable router.
absl::StatusOr<BenchReport> RunBench(
    DuetClient& client, const BenchOptions& options,
    absl::Duration connect_timeout = absl::Seconds(10));

// Aligned human-readable table (several lines, trailing newline).
std::string FormatReportTable(const BenchReport& report);

// The report as pretty JSON; field names carry their units (README.md lists
// them). Per-request records only when `include_requests`.
std::string ReportToJson(const BenchReport& report, bool include_requests);

}  // namespace duet::client

#endif  // DUET_CLIENT_BENCH_H_
