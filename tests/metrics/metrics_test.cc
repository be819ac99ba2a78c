// The metrics library: the text exposition format (HELP/TYPE lines, label
// and help escaping, histogram _bucket/_sum/_count), bucket accounting at
// and between bounds, registration errors, concurrent updates, promtool's
// verdict on a rendered registry, and the /metrics + /health endpoint over
// loopback.
#include "metrics/metrics.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/metrics_server.h"
#include "tests/metrics/prom_test_util.h"

namespace duet::metrics {
namespace {

using ::testing::HasSubstr;

TEST(FormatTest, Values) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(123456789012.0), "123456789012");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.001), "0.001");
  EXPECT_EQ(FormatValue(HUGE_VAL), "+Inf");
  EXPECT_EQ(FormatValue(-HUGE_VAL), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  // Shortest form that reads back the same.
  EXPECT_EQ(std::stod(FormatValue(0.1 + 0.2)), 0.1 + 0.2);
}

TEST(FormatTest, Escaping) {
  EXPECT_EQ(EscapeHelp("a\\b\nc\"d"), "a\\\\b\\nc\"d");
  EXPECT_EQ(EscapeLabelValue("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
}

TEST(RegistryTest, RendersCountersGaugesAndCallbacks) {
  Registry r;
  auto c = r.AddCounter("duet:requests_total", "Requests.\nSecond line \\.",
                        {{"finished_reason", "stop"}});
  ASSERT_TRUE(c.ok()) << c.status();
  auto c2 = r.AddCounter("duet:requests_total", "Requests.\nSecond line \\.",
                         {{"finished_reason", "odd \"one\"\n"}});
  ASSERT_TRUE(c2.ok()) << c2.status();
  auto g = r.AddGauge("duet:running", "Running.");
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(r.AddCallback("duet:usage_perc", "Usage.", Type::kGauge, [] {
                 return 0.5;
               }).ok());
  (*c)->Inc();
  (*c)->Inc(2);
  (*c)->Inc(-5);  // ignored
  (*g)->Set(7);
  (*g)->Add(-2);
  EXPECT_EQ(r.Render(),
            "# HELP duet:requests_total Requests.\\nSecond line \\\\.\n"
            "# TYPE duet:requests_total counter\n"
            "duet:requests_total{finished_reason=\"stop\"} 3\n"
            "duet:requests_total{finished_reason=\"odd \\\"one\\\"\\n\"} 0\n"
            "# HELP duet:running Running.\n"
            "# TYPE duet:running gauge\n"
            "duet:running 5\n"
            "# HELP duet:usage_perc Usage.\n"
            "# TYPE duet:usage_perc gauge\n"
            "duet:usage_perc 0.5\n");
}

TEST(RegistryTest, HistogramBucketsAreCumulativeAndInclusive) {
  Registry r;
  auto h = r.AddHistogram("duet:latency_seconds", "Latency.", {0.1, 0.5, 1},
                          {{"path", "disagg"}});
  ASSERT_TRUE(h.ok()) << h.status();
  for (double v : {0.05, 0.1, 0.2, 0.5, 0.75, 3.0}) (*h)->Observe(v);
  const Histogram::Snapshot s = (*h)->Read();
  EXPECT_EQ(s.count, 6u);
  EXPECT_DOUBLE_EQ(s.sum, 4.6);
  // 0.1 and 0.5 land in their own bound's bucket (le is "<=").
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(r.Render(),
            "# HELP duet:latency_seconds Latency.\n"
            "# TYPE duet:latency_seconds histogram\n"
            "duet:latency_seconds_bucket{path=\"disagg\",le=\"0.1\"} 2\n"
            "duet:latency_seconds_bucket{path=\"disagg\",le=\"0.5\"} 4\n"
            "duet:latency_seconds_bucket{path=\"disagg\",le=\"1\"} 5\n"
            "duet:latency_seconds_bucket{path=\"disagg\",le=\"+Inf\"} 6\n"
            "duet:latency_seconds_sum{path=\"disagg\"} 4.6\n"
            "duet:latency_seconds_count{path=\"disagg\"} 6\n");
}

TEST(RegistryTest, RefusesBadNamesAndConflicts) {
  Registry r;
  EXPECT_EQ(r.AddCounter("1abc", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("a-b", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("ok", "x", {{"bad:label", "v"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("ok", "x", {{"__reserved", "v"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {1}, {{"le", "v"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddHistogram("h", "x", {1, NAN}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(r.AddCounter("c_total", "x", {{"a", "1"}}).ok());
  EXPECT_EQ(r.AddCounter("c_total", "x", {{"a", "1"}}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(r.AddGauge("c_total", "x", {{"a", "2"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("c_total", "other help", {{"a", "2"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.AddCounter("c_total", "x", {{"b", "2"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      r.AddCallback("cb", "x", Type::kHistogram, [] { return 1.0; }).code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(r.AddCounter("c_total", "x", {{"a", "2"}}).ok());
}

TEST(RegistryTest, ConcurrentUpdatesAreAllCounted) {
  Registry r;
  Counter* c = *r.AddCounter("c_total", "x");
  Gauge* g = *r.AddGauge("g", "x");
  Histogram* h = *r.AddHistogram("h_seconds", "x", {0.5, 1.5});
  constexpr int kThreads = 8;
  constexpr int kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        c->Inc();
        g->Add(t % 2 == 0 ? 1 : -1);
        h->Observe(i % 2);  // 0 or 1: exact sums
      }
    });
  }
  // Scrapes while the threads run stay self-consistent.
  for (int i = 0; i < 50; ++i) {
    const auto s = h->Read();
    EXPECT_EQ(s.count, s.cumulative.back());
    (void)r.Render();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), kThreads * kEach);
  EXPECT_EQ(g->value(), 0);
  const auto s = h->Read();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(s.cumulative[0], static_cast<uint64_t>(kThreads * kEach / 2));
  EXPECT_EQ(s.sum, kThreads * kEach / 2);
}

TEST(RegistryTest, PromtoolAcceptsTheRendering) {
  const std::string promtool = testing::PromtoolPath();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus; "
                    "scripts/setup.sh installs it)";
  }
  Registry r;
  (*r.AddCounter("duet:request_success_total", "Finished \"requests\"\\.",
                 {{"finished_reason", "stop"}}))
      ->Inc(3);
  (*r.AddCounter("duet:request_success_total", "Finished \"requests\"\\.",
                 {{"finished_reason", "a \"b\"\nc\\"}}))
      ->Inc();
  (*r.AddGauge("duet:kv_cache_usage_perc", "KV use, 0..1."))->Set(0.125);
  Histogram* h = *r.AddHistogram("duet:time_to_first_token_seconds", "TTFT.",
                                 TimeToFirstTokenBuckets());
  h->Observe(0.003);
  h->Observe(7);
  const testing::PromtoolVerdict v =
      testing::PromtoolCheck(promtool, r.Render());
  EXPECT_TRUE(v.ok) << v.output << "\n" << r.Render();
  // And it does fail: a counter without the _total suffix is a lint error.
  Registry bad;
  (*bad.AddCounter("requests", "x"))->Inc();
  EXPECT_FALSE(testing::PromtoolCheck(promtool, bad.Render()).ok);
  EXPECT_FALSE(testing::PromtoolCheck(promtool, "garbage{ 1\n").ok);
}

TEST(MetricsServerTest, ServesMetricsAndHealth) {
  Registry r;
  (*r.AddCounter("duet:x_total", "X."))->Inc(4);
  auto server = StartMetricsServer("127.0.0.1", 0, &r);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  auto m = testing::HttpGet(port, "/metrics");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->status, 200);
  EXPECT_EQ(m->content_type, std::string(kContentType));
  EXPECT_THAT(m->body, HasSubstr("duet:x_total 4\n"));
  auto h = testing::HttpGet(port, "/health");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->status, 200);
  auto nf = testing::HttpGet(port, "/v1/models");
  ASSERT_TRUE(nf.ok()) << nf.status();
  EXPECT_EQ(nf->status, 404);
  (*server)->Stop(absl::Seconds(1));
}

TEST(MetricsServerTest, HttpHostOf) {
  EXPECT_EQ(HttpHostOf("0.0.0.0:50051"), "0.0.0.0");
  EXPECT_EQ(HttpHostOf("localhost:1"), "127.0.0.1");
  EXPECT_EQ(HttpHostOf("[::1]:7001"), "::1");
}

}  // namespace
}  // namespace duet::metrics
