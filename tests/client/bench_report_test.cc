// Aggregation of per-request records into the bench report, its JSON and
// its table, plus option validation; no server involved.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "client/bench.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace duet::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

BenchOptions ClosedLoop() {
  BenchOptions o;
  o.workload.num_requests = 4;
  o.workload.input_len_min = o.workload.input_len_max = 10;
  o.workload.output_len_min = o.workload.output_len_max = 5;
  o.max_concurrency = 2;  // With the default rate inf: a closed loop.
  return o;
}

RequestRecord Ok(int index, double ttft, double e2e, std::vector<double> itl) {
  RequestRecord r;
  r.index = index;
  r.input_len = 10;
  r.output_len_requested = 5;
  r.output_tokens = static_cast<int>(itl.size()) + 1;
  r.ttft_ms = ttft;
  r.e2e_ms = e2e;
  r.itl_ms = std::move(itl);
  r.server_timings.set_prefill_ms(2);
  r.server_timings.set_decode_ms(4);
  r.cached_prompt_tokens = index * 16;
  return r;
}

RequestRecord Failed(int index, absl::StatusCode code, std::string message) {
  RequestRecord r;
  r.index = index;
  r.input_len = 10;
  r.output_len_requested = 5;
  r.code = code;
  r.error_message = std::move(message);
  r.output_tokens = 1;  // Partial output of failed requests is not counted.
  return r;
}

BenchReport SampleReport() {
  std::vector<RequestRecord> records = {
      Ok(0, 10, 50, {10, 10, 10, 10}),
      Ok(1, 20, 40, {5, 5, 5, 5}),
      Failed(2, absl::StatusCode::kResourceExhausted, "no KV blocks"),
      Failed(3, absl::StatusCode::kResourceExhausted, "still full"),
  };
  records.push_back(Ok(4, 30, 30, {}));  // One token only: no TPOT sample.
  records.back().output_len_requested = 1;
  records.push_back(Ok(5, 5, 25, {20}));  // 2 of 5 tokens: a mismatch.
  records.push_back(Failed(6, absl::StatusCode::kUnavailable, "node died"));
  return BuildReport(ClosedLoop(), "127.0.0.1:1", std::move(records), 2.0);
}

TEST(BuildReportTest, CountsAndThroughputUseCompletedRequestsOnly) {
  const BenchReport r = SampleReport();
  EXPECT_EQ(r.completed, 4);
  EXPECT_EQ(r.failed, 3);
  ASSERT_EQ(r.failures.size(), 2u);
  EXPECT_EQ(r.failures.at("RESOURCE_EXHAUSTED").count, 2);
  EXPECT_EQ(r.failures.at("RESOURCE_EXHAUSTED").first_message, "no KV blocks");
  EXPECT_EQ(r.failures.at("UNAVAILABLE").count, 1);
  EXPECT_EQ(r.total_input_tokens, 40);
  EXPECT_EQ(r.total_output_tokens, 5 + 5 + 1 + 2);
  EXPECT_EQ(r.output_len_mismatches, 1);
  EXPECT_DOUBLE_EQ(r.request_throughput_rps, 2.0);
  EXPECT_DOUBLE_EQ(r.output_throughput_tok_s, 13 / 2.0);
  EXPECT_DOUBLE_EQ(r.total_token_throughput_tok_s, 53 / 2.0);
}

TEST(BuildReportTest, LatencyDistributions) {
  const BenchReport r = SampleReport();
  EXPECT_EQ(r.ttft_ms.count, 4u);
  EXPECT_DOUBLE_EQ(r.ttft_ms.mean, (10 + 20 + 30 + 5) / 4.0);
  EXPECT_DOUBLE_EQ(r.e2e_latency_ms.max, 50);
  // TPOT = (e2e - ttft) / (tokens - 1): 40/4, 20/4, 20/1.
  EXPECT_EQ(r.tpot_ms.count, 3u);
  EXPECT_DOUBLE_EQ(r.tpot_ms.min, 5);
  EXPECT_DOUBLE_EQ(r.tpot_ms.p50, 10);
  EXPECT_DOUBLE_EQ(r.tpot_ms.max, 20);
  // ITL pools every gap: 4 + 4 + 0 + 1.
  EXPECT_EQ(r.itl_ms.count, 9u);
  EXPECT_DOUBLE_EQ(r.itl_ms.p50, 10);
  EXPECT_DOUBLE_EQ(r.server_timings_mean.prefill_ms, 2);
  EXPECT_DOUBLE_EQ(r.server_timings_mean.decode_ms, 4);
}

TEST(ReportJsonTest, HasDocumentedFieldsWithUnits) {
  const auto j = nlohmann::json::parse(ReportToJson(SampleReport(), true));
  EXPECT_EQ(j["schema_version"], 2);
  EXPECT_EQ(j["config"]["arrival"], "closed_loop");
  EXPECT_EQ(j["config"]["concurrency"], 2);
  EXPECT_TRUE(j["config"]["request_rate_rps"].is_null());
  EXPECT_EQ(j["config"]["timeout_ms"], 600000);
  EXPECT_EQ(j["completed"], 4);
  EXPECT_EQ(j["failed"], 3);
  EXPECT_EQ(j["failures"]["RESOURCE_EXHAUSTED"]["count"], 2);
  EXPECT_EQ(j["failures"]["UNAVAILABLE"]["first_message"], "node died");
  EXPECT_DOUBLE_EQ(j["duration_s"].get<double>(), 2.0);
  for (const char* key : {"request_throughput_rps", "output_throughput_tok_s",
                          "total_token_throughput_tok_s", "total_input_tokens",
                          "total_output_tokens", "output_len_mismatches"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["percentile_method"], "linear_interpolation");
  for (const char* dist : {"ttft_ms", "tpot_ms", "itl_ms", "e2e_latency_ms"}) {
    for (const char* stat :
         {"count", "mean", "p50", "p90", "p99", "min", "max"}) {
      EXPECT_TRUE(j[dist].contains(stat)) << dist << "." << stat;
    }
  }
  EXPECT_DOUBLE_EQ(j["tpot_ms"]["p50"].get<double>(), 10);
  EXPECT_DOUBLE_EQ(j["server_timings_mean_ms"]["prefill_ms"].get<double>(), 2);
  ASSERT_EQ(j["requests"].size(), 7u);
  EXPECT_EQ(j["requests"][2]["status"], "RESOURCE_EXHAUSTED");
  // Per request: the server's own timings and the prefix-cache hit, so a
  // run can split hits from misses (scripts/prefix_cache_bench.sh).
  EXPECT_EQ(j["requests"][1]["cached_prompt_tokens"], 16);
  EXPECT_DOUBLE_EQ(
      j["requests"][1]["server_timings_ms"]["prefill_ms"].get<double>(), 2);
  EXPECT_DOUBLE_EQ(
      j["requests"][1]["server_timings_ms"]["decode_ms"].get<double>(), 4);
  EXPECT_DOUBLE_EQ(
      j["requests"][1]["server_timings_ms"]["queue_ms"].get<double>(), 0);
  EXPECT_FALSE(nlohmann::json::parse(ReportToJson(SampleReport(), false))
                   .contains("requests"));
}

TEST(ReportJsonTest, EmptyDistributionsAreNullAndPoissonConfigShown) {
  BenchOptions o = ClosedLoop();
  o.max_concurrency = 0;
  o.request_rate = 12.5;
  const BenchReport r = BuildReport(
      o, "x:1", {Failed(0, absl::StatusCode::kDeadlineExceeded, "late")}, 1.0);
  const auto j = nlohmann::json::parse(ReportToJson(r, false));
  EXPECT_EQ(j["config"]["arrival"], "poisson");
  EXPECT_DOUBLE_EQ(j["config"]["request_rate_rps"].get<double>(), 12.5);
  EXPECT_TRUE(j["config"]["concurrency"].is_null());
  EXPECT_EQ(j["ttft_ms"]["count"], 0);
  EXPECT_TRUE(j["ttft_ms"]["p99"].is_null());
  EXPECT_EQ(j["failures"]["DEADLINE_EXCEEDED"]["count"], 1);
}

TEST(ReportTableTest, ShowsCountsCodesAndLatencyRows) {
  const std::string table = FormatReportTable(SampleReport());
  EXPECT_THAT(table, HasSubstr("closed loop, concurrency 2"));
  EXPECT_THAT(table, HasSubstr("RESOURCE_EXHAUSTED x2, UNAVAILABLE x1"));
  EXPECT_THAT(table, HasSubstr("Request throughput (req/s)"));
  for (const char* row : {"TTFT", "TPOT", "ITL", "E2E latency"}) {
    EXPECT_THAT(table, HasSubstr(row));
  }
}

// The message of ValidateBenchOptions for `o` (INVALID_ARGUMENT expected).
std::string Invalid(const BenchOptions& o) {
  const absl::Status s = ValidateBenchOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  return std::string(s.message());
}

TEST(ValidateBenchOptionsTest, EveryBadOptionNamesItsFlag) {
  EXPECT_TRUE(ValidateBenchOptions(ClosedLoop()).ok());
  BenchOptions capped_rate = ClosedLoop();  // A rate with a cap is fine.
  capped_rate.request_rate = 5;
  EXPECT_TRUE(ValidateBenchOptions(capped_rate).ok());
  BenchOptions burst = ClosedLoop();  // rate inf, no cap: all at once.
  burst.max_concurrency = 0;
  EXPECT_TRUE(ValidateBenchOptions(burst).ok());

  BenchOptions o = ClosedLoop();
  o.request_rate = 0;
  EXPECT_THAT(Invalid(o), HasSubstr("--request-rate must be > 0"));
  o.request_rate = NAN;
  EXPECT_THAT(Invalid(o), HasSubstr("--request-rate"));
  for (double b :
       {0.0, -1.0, static_cast<double>(INFINITY), static_cast<double>(NAN)}) {
    o = ClosedLoop();
    o.request_rate = 5;
    o.burstiness = b;
    EXPECT_THAT(Invalid(o),
                HasSubstr("--burstiness must be a finite number > 0"))
        << b;
  }
  o = ClosedLoop();
  o.max_concurrency = -1;
  EXPECT_THAT(Invalid(o), HasSubstr("--max-concurrency"));
  o.max_concurrency = kMaxConcurrency + 1;
  EXPECT_THAT(Invalid(o), HasSubstr("--max-concurrency"));
  o = ClosedLoop();
  o.workload.input_len_max = 3;
  EXPECT_THAT(Invalid(o), HasSubstr("input length range"));
  o = ClosedLoop();
  o.workload.num_requests = 0;
  EXPECT_THAT(Invalid(o), HasSubstr("--num-prompts"));
  o = ClosedLoop();
  o.workload.vocab_limit = 0;
  EXPECT_THAT(Invalid(o), HasSubstr("--vocab-limit"));
  o = ClosedLoop();
  o.workload.dataset = DatasetKind::kPrefixRepetition;
  o.workload.prefix_len = 0;
  EXPECT_THAT(Invalid(o), HasSubstr("--prefix-len must be > 0"));
  o.workload.prefix_len = 4;
  o.workload.num_prefixes = 0;
  EXPECT_THAT(Invalid(o), HasSubstr("--num-prefixes must be > 0"));
  o = ClosedLoop();
  o.workload.dataset = DatasetKind::kShareGpt;
  EXPECT_THAT(Invalid(o), HasSubstr("sharegpt needs --dataset-path"));
  o.workload.dataset = DatasetKind::kRandom;
  o.workload.dataset_path = "x.json";
  EXPECT_THAT(Invalid(o), HasSubstr("--dataset-path is read only by"));
  o = ClosedLoop();
  o.percentile_metrics = {"ttft", "latency"};
  EXPECT_THAT(Invalid(o), HasSubstr("--percentile-metrics: unknown metric"));
  o = ClosedLoop();
  o.metric_percentiles = {50, 101};
  EXPECT_THAT(Invalid(o), HasSubstr("--metric-percentiles: 101"));
}

TEST(GoodputReportTest, CountsRequestsMeetingEverySlo) {
  BenchOptions o = ClosedLoop();
  o.goodput.ttft_ms = 15;
  o.goodput.tpot_ms = 8;
  // SampleReport's completed requests: (ttft, tpot) = (10, 10), (20, 5),
  // (30, 0: one token), (5, 20). None meets both SLOs; relax TPOT to 10
  // and request 0 does (equality counts, as in vLLM).
  std::vector<RequestRecord> records = SampleReport().requests;
  EXPECT_EQ(BuildReport(o, "x", records, 2.0).good_completed, 0);
  o.goodput.tpot_ms = 10;
  BenchReport r = BuildReport(o, "x", records, 2.0);
  EXPECT_EQ(r.good_completed, 1);
  EXPECT_DOUBLE_EQ(r.request_goodput_rps, 0.5);
  // TTFT alone: 10 and 5 are <= 15 (failed requests never count).
  o.goodput.tpot_ms.reset();
  r = BuildReport(o, "x", records, 2.0);
  EXPECT_EQ(r.good_completed, 2);
  // A one-token request has TPOT 0, so only TTFT / E2EL can fail it.
  o.goodput = {};
  o.goodput.tpot_ms = 0.001;
  EXPECT_EQ(BuildReport(o, "x", records, 2.0).good_completed, 1);
  const auto j = nlohmann::json::parse(
      ReportToJson(BuildReport(o, "x", records, 4.0), false));
  EXPECT_DOUBLE_EQ(j["request_goodput"].get<double>(), 0.25);
  EXPECT_EQ(j["goodput"]["tpot"], 0.001);
  EXPECT_THAT(FormatReportTable(BuildReport(o, "x", records, 4.0)),
              HasSubstr("Request goodput (req/s)"));
}

TEST(ReportJsonTest, VllmFieldNames) {
  BenchOptions o = ClosedLoop();
  o.metric_percentiles = {50, 99.9};
  o.percentile_metrics = {"ttft", "itl"};
  const BenchReport r = BuildReport(o, "x", SampleReport().requests, 2.0);
  const auto j = nlohmann::json::parse(ReportToJson(r, true));
  EXPECT_EQ(j["backend"], "duet");
  EXPECT_EQ(j["num_prompts"], 4);
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_EQ(j["max_concurrency"], 2);
  EXPECT_DOUBLE_EQ(j["burstiness"].get<double>(), 1.0);
  EXPECT_TRUE(j["request_goodput"].is_null());  // No --goodput.
  EXPECT_DOUBLE_EQ(j["duration"].get<double>(), 2.0);
  EXPECT_EQ(j["completed"], 4);
  EXPECT_EQ(j["total_input_tokens"], 40);
  EXPECT_EQ(j["total_output_tokens"], 13);
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j["output_throughput"].get<double>(), 6.5);
  EXPECT_DOUBLE_EQ(j["total_token_throughput"].get<double>(), 26.5);
  for (const char* m : {"ttft", "tpot", "itl", "e2el"}) {
    for (const char* stat : {"mean", "median", "std", "p90", "p99"}) {
      EXPECT_TRUE(j[absl::StrCat(stat, "_", m, "_ms")].is_number())
          << stat << " " << m;
    }
  }
  // TTFT 10, 20, 30, 5: mean 16.25, median 15, std sqrt(92.1875).
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 16.25);
  EXPECT_DOUBLE_EQ(j["median_ttft_ms"].get<double>(), 15);
  EXPECT_DOUBLE_EQ(j["std_ttft_ms"].get<double>(), std::sqrt(92.1875));
  EXPECT_DOUBLE_EQ(j["p50_ttft_ms"].get<double>(), 15);
  EXPECT_TRUE(j.contains("p99.9_itl_ms"));
  EXPECT_FALSE(j.contains("p99.9_tpot_ms"));  // Not in --percentile-metrics.
  // Per-request arrays in seconds, as vLLM writes them.
  ASSERT_EQ(j["ttfts"].size(), 7u);
  EXPECT_DOUBLE_EQ(j["ttfts"][1].get<double>(), 0.020);
  EXPECT_DOUBLE_EQ(j["itls"][0][0].get<double>(), 0.010);
  EXPECT_EQ(j["output_lens"][5], 2);
  EXPECT_EQ(j["errors"][0], "");
  EXPECT_EQ(j["errors"][2], "RESOURCE_EXHAUSTED: no KV blocks");
  const std::string table = FormatReportTable(r);
  EXPECT_THAT(table, HasSubstr("TTFT"));
  EXPECT_THAT(table, Not(HasSubstr("TPOT")));
}

}  // namespace
}  // namespace duet::client
