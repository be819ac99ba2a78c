// Aggregation of per-request records into the bench report, its JSON and
// its table, plus option validation; no server involved.
#include <cmath>

#include "client/bench.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace duet::client {
namespace {

using ::testing::HasSubstr;

BenchOptions ClosedLoop() {
  BenchOptions o;
  o.workload.num_requests = 4;
  o.workload.input_len_min = o.workload.input_len_max = 10;
  o.workload.output_len_min = o.workload.output_len_max = 5;
  o.concurrency = 2;
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
  EXPECT_EQ(j["schema_version"], 1);
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
    for (const char* stat : {"count", "mean", "p50", "p90", "p99", "min", "max"}) {
      EXPECT_TRUE(j[dist].contains(stat)) << dist << "." << stat;
    }
  }
  EXPECT_DOUBLE_EQ(j["tpot_ms"]["p50"].get<double>(), 10);
  EXPECT_DOUBLE_EQ(j["server_timings_mean_ms"]["prefill_ms"].get<double>(), 2);
  ASSERT_EQ(j["requests"].size(), 7u);
  EXPECT_EQ(j["requests"][2]["status"], "RESOURCE_EXHAUSTED");
  EXPECT_FALSE(nlohmann::json::parse(ReportToJson(SampleReport(), false))
                   .contains("requests"));
}

TEST(ReportJsonTest, EmptyDistributionsAreNullAndPoissonConfigShown) {
  BenchOptions o = ClosedLoop();
  o.concurrency = 0;
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

TEST(ValidateBenchOptionsTest, RejectsBadCombinations) {
  EXPECT_TRUE(ValidateBenchOptions(ClosedLoop()).ok());
  BenchOptions both = ClosedLoop();
  both.request_rate = 5;
  EXPECT_EQ(ValidateBenchOptions(both).code(), absl::StatusCode::kInvalidArgument);
  BenchOptions neither = ClosedLoop();
  neither.concurrency = 0;
  EXPECT_FALSE(ValidateBenchOptions(neither).ok());
  BenchOptions nan_rate = neither;
  nan_rate.request_rate = NAN;
  EXPECT_FALSE(ValidateBenchOptions(nan_rate).ok());
  BenchOptions burst = neither;
  burst.request_rate = INFINITY;
  EXPECT_TRUE(ValidateBenchOptions(burst).ok());
  BenchOptions inverted = ClosedLoop();
  inverted.workload.input_len_max = 3;
  EXPECT_THAT(std::string(ValidateBenchOptions(inverted).message()),
              HasSubstr("input length range"));
  BenchOptions no_requests = ClosedLoop();
  no_requests.workload.num_requests = 0;
  EXPECT_FALSE(ValidateBenchOptions(no_requests).ok());
  BenchOptions no_vocab = ClosedLoop();
  no_vocab.workload.vocab_limit = 0;
  EXPECT_FALSE(ValidateBenchOptions(no_vocab).ok());
}

}  // namespace
}  // namespace duet::client
