// Prometheus /metrics on a real cluster (tiny model, CPU): a router with
// --metrics-port and --http-port, one prefill node, one decode node and one
// colocated node, each with --metrics-port, under --policy auto (short
// prompts colocated, long ones disaggregated). After a few requests that
// end by length, stop token and stop string, every number scraped must
// agree with what the client saw: request counts by finished_reason and
// path, prompt and generated token totals (on the router, and split over
// the nodes as each did the work), histogram counts, the KV bytes the
// prefill node sent and the decode nodes received; queues and KV use back
// at 0; a cancelled request counted as abort; and promtool must accept
// every scrape.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/metrics/prom_test_util.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

using ::testing::HasSubstr;
using Samples = std::map<std::string, double>;

const std::string kTokenizer =
    std::string(DUET_SOURCE_DIR) + "/assets/qwen3/tokenizer.json";
constexpr int kShortMax = 64;   // --auto-colocated-prompt-tokens
constexpr int kBlockSize = 16;  // the nodes' default --block-size

struct Outcome {
  grpc::Status status;
  int tokens = 0;
  int first_chunk_tokens = 0;
  std::vector<int32_t> ids;
  std::string text;
  v1::GenerationFinished finished;
};

Outcome Generate(v1::Duet::Stub& stub, v1::GenerateRequest req,
                 int cancel_after = 0) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  Outcome out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      const int n = msg.chunk().token_ids_size();
      if (out.tokens == 0) out.first_chunk_tokens = n;
      out.tokens += n;
      out.ids.insert(out.ids.end(), msg.chunk().token_ids().begin(),
                     msg.chunk().token_ids().end());
      out.text += msg.chunk().text();
      if (cancel_after > 0 && out.tokens >= cancel_after) ctx.TryCancel();
    } else if (msg.has_finished()) {
      out.finished = msg.finished();
    }
  }
  out.status = reader->Finish();
  return out;
}

v1::GenerateRequest Request(int len, int seed, int max_tokens) {
  v1::GenerateRequest req;
  for (int k = 0; k < len; ++k)
    req.add_prompt_token_ids((seed * 37 + k * 11) % 250 + 1);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_temperature(0);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

// The value of `series`, NaN when absent (never equal to anything).
double Val(const Samples& s, const std::string& series) {
  auto it = s.find(series);
  return it == s.end() ? NAN : it->second;
}

double Get(const Samples& s, const std::string& series) {
  auto it = s.find(series);
  EXPECT_TRUE(it != s.end()) << "no sample " << series;
  return it == s.end() ? NAN : it->second;
}

// Scrapes /metrics on `port`; checks promtool's verdict and that every
// histogram's buckets are cumulative with +Inf equal to _count.
Samples Scrape(int port, const std::string& who) {
  auto reply = HttpGet(port, "/metrics");
  EXPECT_TRUE(reply.ok()) << who << ": " << reply.status();
  if (!reply.ok()) return {};
  EXPECT_EQ(reply->status, 200) << who;
  EXPECT_THAT(reply->content_type, HasSubstr("version=0.0.4")) << who;
  const std::string promtool = PromtoolPath();
  if (!promtool.empty()) {
    const PromtoolVerdict v = PromtoolCheck(promtool, reply->body);
    EXPECT_TRUE(v.ok) << who << ": promtool check metrics:\n"
                      << v.output << "\n--- scrape:\n"
                      << reply->body;
  }
  const Samples s = ParseSamples(reply->body);
  std::map<std::string, std::vector<double>> buckets;  // in text order
  for (absl::string_view line : absl::StrSplit(reply->body, '\n')) {
    const size_t b = line.find("_bucket{");
    if (b == absl::string_view::npos) continue;
    const size_t space = line.rfind(' ');
    double v = 0;
    EXPECT_TRUE(absl::SimpleAtod(line.substr(space + 1), &v)) << line;
    buckets[std::string(line.substr(0, b))].push_back(v);
    if (absl::StrContains(line, "le=\"+Inf\"")) {
      EXPECT_EQ(v, Get(s, absl::StrCat(line.substr(0, b), "_count")))
          << who << ": " << line;
    }
  }
  for (const auto& [name, counts] : buckets) {
    for (size_t i = 1; i < counts.size(); ++i) {
      EXPECT_LE(counts[i - 1], counts[i]) << who << ": " << name;
    }
  }
  return s;
}

// Scrapes until `done` holds (counters recorded just after the client's
// last message), at most 10 s; returns the last scrape.
Samples ScrapeUntil(int port, const std::string& who,
                    const std::function<bool(const Samples&)>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  Samples s = Scrape(port, who);
  while (!done(s) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
    s = Scrape(port, who);
  }
  return s;
}

// Whole-model KV bytes of one block of every layer, from config.json.
int64_t KvBlockBytes(const std::string& model_dir, int dtype_bytes) {
  std::ifstream in(model_dir + "/config.json");
  const nlohmann::json c = nlohmann::json::parse(in);
  const int64_t heads = c["num_attention_heads"].get<int64_t>();
  const int64_t kv_heads = c.value("num_key_value_heads", heads);
  const int64_t head_dim =
      c.value("head_dim", c["hidden_size"].get<int64_t>() / heads);
  return 2 * kv_heads * head_dim * kBlockSize *
         c["num_hidden_layers"].get<int64_t>() * dtype_bytes;
}

TEST(MetricsClusterTest, ScrapedNumbersMatchWhatClientsSaw) {
  if (PromtoolPath().empty()) {
    // The numbers are still checked; only promtool's verdict is skipped.
    std::fprintf(stderr,
                 "promtool not installed (Debian package prometheus, "
                 "scripts/setup.sh): scrapes are not checked by it\n");
  }
  const int router_port = FreePort();
  const int http_port = FreePort();
  const int prefill_port = FreePort();
  const int decode_port = FreePort();
  const int colocated_port = FreePort();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 1;
  o.num_decode = 1;
  o.num_colocated = 1;
  o.router_args = {"--policy",
                   "auto",
                   "--auto-colocated-prompt-tokens",
                   std::to_string(kShortMax),
                   "--metrics-port",
                   std::to_string(router_port),
                   "--tokenizer",
                   kTokenizer,
                   "--http-port",
                   std::to_string(http_port)};
  o.prefill_args = {"--metrics-port", std::to_string(prefill_port)};
  o.decode_args = {"--metrics-port", std::to_string(decode_port)};
  // After decode_args: the later --metrics-port wins.
  o.colocated_args = {"--metrics-port", std::to_string(colocated_port)};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  LocalCluster& c = **cluster;
  EXPECT_THAT(c.router().ready_line(), HasSubstr("/metrics"));
  EXPECT_THAT(c.prefill(0).ready_line(),
              HasSubstr(absl::StrCat(":", prefill_port, "/metrics")));

  // Nothing served yet: every counter at 0.
  {
    const Samples r = Scrape(router_port, "router");
    EXPECT_EQ(Get(r, "duet:time_to_first_token_seconds_count"), 0);
    EXPECT_EQ(Get(r, "duet:request_success_total{finished_reason=\"length\"}"),
              0);
    EXPECT_EQ(Get(r, "duet:num_requests_running"), 0);
  }

  // Requests: three disaggregated, three colocated, all by length; then
  // one that stops on a stop token and one on a stop string.
  std::vector<Outcome> out;
  std::vector<bool> disagg;
  std::vector<std::thread> threads;
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    const int len = i % 2 == 0 ? 5 + 7 * i : kShortMax + 20 + 13 * i;
    reqs.push_back(Request(len, i, 6 + i));
    disagg.push_back(len > kShortMax);
  }
  out.resize(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { out[i] = Generate(c.client(), reqs[i]); });
  }
  for (auto& t : threads) t.join();
  for (const Outcome& g : out) {
    ASSERT_TRUE(g.status.ok()) << g.status.error_message();
    EXPECT_EQ(g.finished.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);
  }
  // Greedy is deterministic: the same request stopped at its 3rd token.
  v1::GenerateRequest stop_req = reqs[0];
  stop_req.mutable_sampling()->add_stop_token_ids(out[0].ids[2]);
  out.push_back(Generate(c.client(), stop_req));
  disagg.push_back(false);
  ASSERT_TRUE(out.back().status.ok()) << out.back().status.error_message();
  EXPECT_EQ(out.back().finished.finish_reason(), v1::FINISH_REASON_STOP_TOKEN);
  // What the client saw.
  int64_t prompt = 0, completion = 0, itl = 0, n_disagg = 0;
  int64_t prompt_disagg = 0, prompt_colocated = 0, blocks_disagg = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const v1::Usage& u = out[i].finished.usage();
    EXPECT_EQ(static_cast<int64_t>(u.completion_tokens()), out[i].tokens);
    prompt += u.prompt_tokens();
    completion += u.completion_tokens();
    itl += out[i].tokens - out[i].first_chunk_tokens;
    if (disagg[i]) {
      ++n_disagg;
      prompt_disagg += u.prompt_tokens();
      blocks_disagg += (u.prompt_tokens() + kBlockSize - 1) / kBlockSize;
    } else {
      prompt_colocated += u.prompt_tokens();
    }
  }
  ASSERT_EQ(n_disagg, 3);

  // The nodes, once every block is back. Before the stop-string request,
  // whose node may sample a few tokens past the stop before it sees the
  // cancellation.
  const absl::Status freed = c.WaitAllBlocksFree(absl::Seconds(20));
  EXPECT_TRUE(freed.ok()) << freed;
  const Samples p = Scrape(prefill_port, "prefill");
  const Samples d = Scrape(decode_port, "decode");
  const Samples k = Scrape(colocated_port, "colocated");
  EXPECT_EQ(Get(p, "duet:prompt_tokens_total"), prompt_disagg);
  EXPECT_EQ(Get(p, "duet:generation_tokens_total"), n_disagg);  // token 1
  // Decode and colocated nodes: the rest of every token, and the prompts
  // they prefilled themselves (disaggregated KV may land on either).
  EXPECT_EQ(Get(d, "duet:generation_tokens_total") +
                Get(k, "duet:generation_tokens_total"),
            completion - n_disagg);
  EXPECT_EQ(Get(d, "duet:prompt_tokens_total"), 0);
  EXPECT_EQ(Get(k, "duet:prompt_tokens_total"), prompt_colocated);
  const std::string kSent = "duet:kv_transfer_bytes_total{direction=\"sent\"}";
  const std::string kReceived =
      "duet:kv_transfer_bytes_total{direction=\"received\"}";
  const double sent = Get(p, kSent);
  EXPECT_EQ(Get(d, kReceived) + Get(k, kReceived), sent);
  // f32 KV on the CPU backend.
  EXPECT_EQ(sent, blocks_disagg * KvBlockBytes(o.model_dir, 4));
  EXPECT_EQ(Get(p, "duet:kv_transfer_seconds_count"), n_disagg);
  EXPECT_GT(Get(p, "duet:kv_transfer_seconds_sum"), 0);
  EXPECT_EQ(d.count("duet:kv_transfer_seconds_count"), 0u);  // prefill only
  for (const auto* s : {&p, &d, &k}) {
    EXPECT_EQ(Get(*s, "duet:num_requests_running"), 0);
    EXPECT_EQ(Get(*s, "duet:num_requests_waiting"), 0);
    EXPECT_EQ(Get(*s, "duet:kv_cache_usage_perc"), 0);
    EXPECT_EQ(Get(*s, "duet:num_preemptions_total"), 0);
    EXPECT_LE(Get(*s, "duet:prefix_cache_hits_total"),
              Get(*s, "duet:prefix_cache_queries_total"));
  }
  // A text request, then the same with a stop string taken from its text.
  v1::GenerateRequest text_req;
  text_req.set_prompt("The metrics of a small cluster");
  text_req.mutable_sampling()->set_max_tokens(12);
  text_req.mutable_sampling()->set_temperature(0);
  text_req.mutable_sampling()->set_ignore_eos(true);
  out.push_back(Generate(c.client(), text_req));
  ASSERT_TRUE(out.back().status.ok()) << out.back().status.error_message();
  const std::string text = out.back().text;
  // Short: colocated, as the path counts below expect.
  ASSERT_LE(out.back().finished.usage().prompt_tokens(), kShortMax);
  size_t pos = 1;
  while (pos < text.size() && !isalnum(static_cast<unsigned char>(text[pos])))
    ++pos;
  ASSERT_LT(pos, text.size()) << "no ASCII letter in '" << text << "'";
  text_req.mutable_sampling()->add_stop(text.substr(pos, 1));
  out.push_back(Generate(c.client(), text_req));
  ASSERT_TRUE(out.back().status.ok()) << out.back().status.error_message();
  EXPECT_EQ(out.back().finished.finish_reason(), v1::FINISH_REASON_STOP_STRING);

  {
    const Outcome& a = out[out.size() - 2];
    const Outcome& b = out.back();
    for (const Outcome* g : {&a, &b}) {
      const v1::Usage& u = g->finished.usage();
      prompt += u.prompt_tokens();
      completion += u.completion_tokens();
      itl += g->tokens - g->first_chunk_tokens;
    }
  }
  const int64_t n_all = static_cast<int64_t>(out.size());

  // The router, on --metrics-port and on --http-port's /metrics.
  const std::string kE2eCount = "duet:e2e_request_latency_seconds_count";
  const Samples r = ScrapeUntil(router_port, "router", [&](const Samples& s) {
    return Val(s, kE2eCount) == n_all &&
           Val(s, "duet:num_requests_running") == 0;
  });
  auto reason = [&](const char* why) {
    return Get(r, absl::StrCat("duet:request_success_total{finished_reason=\"",
                               why, "\"}"));
  };
  EXPECT_EQ(reason("length"), 7);  // six, and the first text request
  EXPECT_EQ(reason("stop"), 1);
  EXPECT_EQ(reason("stop_string"), 1);
  EXPECT_EQ(reason("abort"), 0);
  EXPECT_EQ(reason("error"), 0);
  EXPECT_EQ(Get(r, "duet:prompt_tokens_total"), prompt);
  EXPECT_EQ(Get(r, "duet:generation_tokens_total"), completion);
  EXPECT_EQ(Get(r, "duet:time_to_first_token_seconds_count"), n_all);
  EXPECT_EQ(Get(r, kE2eCount), n_all);
  EXPECT_EQ(Get(r, "duet:inter_token_latency_seconds_count"), itl);
  EXPECT_GT(Get(r, "duet:e2e_request_latency_seconds_sum"), 0);
  EXPECT_EQ(Get(r, "duet:router_requests_total{path=\"disagg\"}"), n_disagg);
  EXPECT_EQ(Get(r, "duet:router_requests_total{path=\"colocated\"}"),
            n_all - n_disagg);
  EXPECT_EQ(Get(r, "duet:num_requests_running"), 0);
  EXPECT_EQ(Get(r, "duet:num_requests_waiting"), 0);
  {
    // The prefix-routing counters say what Health says.
    v1::HealthResponse health;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    ASSERT_TRUE(c.client().Health(&ctx, v1::HealthRequest(), &health).ok());
    const v1::RoutingStats& rs = health.routing();
    EXPECT_EQ(
        Get(r, "duet:router_prefix_cached_tokens_total{source=\"predicted\"}"),
        static_cast<int64_t>(rs.predicted_cached_tokens()));
    EXPECT_EQ(
        Get(r, "duet:router_prefix_cached_tokens_total{source=\"prefill\"}"),
        static_cast<int64_t>(rs.prefill_cached_tokens()));
    EXPECT_EQ(
        Get(r, "duet:router_prefix_cached_tokens_total{source=\"decode\"}"),
        static_cast<int64_t>(rs.decode_cached_tokens()));
    EXPECT_EQ(static_cast<int64_t>(rs.prompt_tokens()), prompt);
  }
  const Samples via_http = Scrape(http_port, "router --http-port");
  EXPECT_EQ(Get(via_http, "duet:generation_tokens_total"), completion);
  EXPECT_EQ(Get(via_http, kE2eCount), n_all);

  for (int port : {router_port, prefill_port, decode_port, colocated_port}) {
    auto h = HttpGet(port, "/health");
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->status, 200) << "port " << port;
  }

  // A client that leaves mid-stream: abort.
  const Outcome gone = Generate(c.client(), Request(10, 99, 400), 2);
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::CANCELLED);
  const std::string kAbort =
      "duet:request_success_total{finished_reason=\"abort\"}";
  const Samples after =
      ScrapeUntil(router_port, "router", [&](const Samples& s) {
        return Val(s, kAbort) == 1 && Val(s, "duet:num_requests_running") == 0;
      });
  EXPECT_EQ(Get(after, kAbort), 1);
  EXPECT_EQ(Get(after, kE2eCount), n_all + 1);
  EXPECT_EQ(Get(after, "duet:num_requests_running"), 0);
  EXPECT_GE(Get(after, "duet:generation_tokens_total"), completion + 2);
}

}  // namespace
}  // namespace duet::testing
