// duet-bench: load generator for a duet router. Sends a seeded random
// workload, open loop (Poisson arrivals) or closed loop (fixed concurrency),
// and reports throughput and TTFT / TPOT / ITL / E2E latency as a table on
// stdout and, with --json-out, as JSON.
//
//   duet-bench --router host:port --num-requests 200 --input-len 128
//       --input-len-max 512 --output-len 64 --concurrency 32 --json-out r.json
//
// Exit codes: 0 the run finished and at least one request completed (failed
// requests are results, listed by status code); 1 the router was unreachable,
// no request completed, or the JSON could not be written; 2 usage error.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "client/bench.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "security/api_keys.h"
#include "security/tls.h"

ABSL_FLAG(std::string, router, "", "router address, host:port (required)");
ABSL_FLAG(int32_t, num_requests, 100, "requests to send (> 0)");
ABSL_FLAG(int32_t, input_len, 128,
          "prompt length in tokens; with --input-len-max, the minimum");
ABSL_FLAG(int32_t, input_len_max, 0,
          "if > 0, prompt lengths are uniform in [--input-len, this] "
          "(inclusive); 0 = every prompt has --input-len tokens");
ABSL_FLAG(int32_t, output_len, 128,
          "tokens to generate (exact: requests set ignore_eos); with "
          "--output-len-max, the minimum");
ABSL_FLAG(int32_t, output_len_max, 0,
          "if > 0, output lengths are uniform in [--output-len, this] "
          "(inclusive); 0 = fixed --output-len");
ABSL_FLAG(int32_t, vocab_limit, 32000,
          "prompt ids are uniform in [0, this); keep it <= the model's vocab");
ABSL_FLAG(uint64_t, seed, 0,
          "seeds prompts, lengths, arrival times and sampling seeds");
ABSL_FLAG(double, request_rate, 0,
          "open loop: Poisson arrivals at this many req/s (inf = all at "
          "once); exclusive with --concurrency");
ABSL_FLAG(int32_t, concurrency, 0,
          "closed loop: keep this many requests in flight; exclusive with "
          "--request-rate");
ABSL_FLAG(int64_t, timeout_ms, 600000, "deadline of each request in ms");
ABSL_FLAG(int64_t, connect_timeout_ms, 10000,
          "how long to wait for the router's connection before starting");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature, 0 = greedy");
ABSL_FLAG(std::string, json_out, "", "also write the report as JSON here");
ABSL_FLAG(bool, json_per_request, false,
          "include one record per request in the JSON");

namespace duet::client {
namespace {

int UsageError(const std::string& message) {
  std::fprintf(stderr, "duet-bench: %s\n", message.c_str());
  return kExitUsage;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks a duet router with a seeded random workload.\n"
      "Usage: duet-bench --router HOST:PORT (--concurrency C | --request-rate "
      "R) [--num-requests N] [--input-len L [--input-len-max M]] "
      "[--output-len L [--output-len-max M]] [--json-out FILE]\n"
      "Exit codes: 0 ok, 1 router unreachable / nothing completed / JSON "
      "not written, 2 usage error.");
  auto parsed = ParseArgs(argc, argv);
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  if (parsed->help) {
    std::fputs(HelpText("client/bench_main.cc").c_str(), stdout);
    return kExitOk;
  }
  const std::vector<std::string>& args = parsed->positional;
  if (!args.empty()) {
    return UsageError(
        absl::StrCat("unexpected argument '", args[0], "' (see --help)"));
  }
  const std::string router = absl::GetFlag(FLAGS_router);
  if (router.empty()) return UsageError("--router host:port is required");

  BenchOptions options;
  WorkloadOptions& w = options.workload;
  w.num_requests = absl::GetFlag(FLAGS_num_requests);
  w.input_len_min = absl::GetFlag(FLAGS_input_len);
  w.input_len_max = absl::GetFlag(FLAGS_input_len_max) > 0
                        ? absl::GetFlag(FLAGS_input_len_max)
                        : w.input_len_min;
  w.output_len_min = absl::GetFlag(FLAGS_output_len);
  w.output_len_max = absl::GetFlag(FLAGS_output_len_max) > 0
                         ? absl::GetFlag(FLAGS_output_len_max)
                         : w.output_len_min;
  w.vocab_limit = absl::GetFlag(FLAGS_vocab_limit);
  w.seed = absl::GetFlag(FLAGS_seed);
  options.request_rate = absl::GetFlag(FLAGS_request_rate);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.timeout = absl::Milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  options.temperature = absl::GetFlag(FLAGS_temperature);
  if (absl::Status s = ValidateBenchOptions(options); !s.ok()) {
    return UsageError(std::string(s.message()));
  }
  const int64_t connect_ms = absl::GetFlag(FLAGS_connect_timeout_ms);
  if (connect_ms <= 0) return UsageError("--connect-timeout-ms must be > 0");

  auto tls = duet::security::ReadTlsFlags(duet::security::Party::kClient);
  if (!tls.ok()) return UsageError(std::string(tls.status().message()));
  auto client = DuetClient::Create(
      router,
      {.tls_ca_pem = tls->ca, .api_key = duet::security::ClientApiKey()});
  if (!client.ok()) return UsageError(std::string(client.status().message()));
  auto report = RunBench(**client, options, absl::Milliseconds(connect_ms));
  if (!report.ok()) {
    std::fprintf(stderr, "duet-bench: %s\n",
                 report.status().ToString().c_str());
    return kExitRpcFailed;
  }
  std::fputs(FormatReportTable(*report).c_str(), stdout);
  std::fflush(stdout);

  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    std::ofstream file(json_out);
    file << ReportToJson(*report, absl::GetFlag(FLAGS_json_per_request));
    file.close();
    if (!file) {
      std::fprintf(stderr, "duet-bench: could not write %s\n",
                   json_out.c_str());
      return kExitRpcFailed;
    }
  }
  if (report->completed == 0) {
    std::fprintf(stderr, "duet-bench: no request completed\n");
    return kExitRpcFailed;
  }
  return kExitOk;
}

}  // namespace
}  // namespace duet::client

int main(int argc, char** argv) { return duet::client::Main(argc, argv); }
