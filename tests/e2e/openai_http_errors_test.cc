// The OpenAI gateway's error statuses that need a cluster in a given state
// (docs/HTTP.md "Errors"): 429 from a full admission queue, 503 with no
// node to run on, 504 past --request-timeout-ms; each in OpenAI's error
// shape with a message saying what to do. (400, 401, 404, 405, 413:
// tests/e2e/openai_http_test.cc.)
#include <csignal>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/e2e/openai_http_client.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

using json = nlohmann::ordered_json;
using openai_http::FreePort;
using openai_http::Http;
using openai_http::SseEvents;
using ::testing::HasSubstr;

const std::string kTokenizer =
    std::string(DUET_SOURCE_DIR) + "/assets/qwen3/tokenizer.json";

// OpenAI's error object, with a message that tells the client what to do.
void ExpectError(const Http::Response& r, int status, const std::string& type,
                 const std::string& says) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_THAT(r.head, HasSubstr("Content-Type: application/json"));
  const json j = r.Json();
  ASSERT_TRUE(j.contains("error")) << r.body;
  EXPECT_EQ(j["error"]["type"], type) << r.body;
  EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code"));
  EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(says));
}

Http::Response PostTo(int port, const std::string& path,
                      const std::string& body) {
  Http h(port);
  EXPECT_TRUE(h.Send("POST", path, body));
  return h.Read().value_or(Http::Response{});
}

// 429 and 503 from the router's own statuses: a decode pool with room for
// two of these requests and no admission queue (--max-queued-requests 0)
// refuses the rest of a burst at once (RESOURCE_EXHAUSTED); with the only
// decode node gone, nothing can be scheduled (UNAVAILABLE).
TEST(OpenAiHttpErrorsTest, FullQueueIs429AndNoDecodeNodeIs503) {
  const int port = FreePort();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.decode_args = {"--num-kv-blocks", "8"};
  o.router_args = {"--tokenizer",           kTokenizer,
                   "--http-port",           std::to_string(port),
                   "--max-queued-requests", "0",
                   "--node-timeout-ms",     "1000"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // 40 prompt tokens + 40 generated: 4 blocks reserved, 5 at the end.
  std::vector<int> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(1000 + 37 * i);
  const json body = {{"prompt", prompt},
                     {"max_tokens", 40},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  constexpr int kRequests = 10;
  std::vector<Http::Response> got(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back(
        [&, i] { got[i] = PostTo(port, "/v1/completions", body.dump()); });
  }
  for (auto& t : threads) t.join();
  int ok = 0, refused = 0;
  for (const Http::Response& r : got) {
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(r.Json()["usage"]["completion_tokens"], 40);
      continue;
    }
    ++refused;
    ExpectError(r, 429, "rate_limit_error", "--max-queued-requests 0");
    EXPECT_THAT(r.body, HasSubstr("retry later"));
    EXPECT_EQ(r.Json()["error"]["code"], "rate_limit_exceeded");
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(refused, 1) << "a burst of " << kRequests
                        << " should not fit a pool of 8 blocks";
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());

  // The decode node dies; once the router has dropped it
  // (--node-timeout-ms; /health turns 503), requests are 503 until a node
  // is back.
  (*cluster)->decode(0).Kill(SIGKILL);
  int health = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (absl::Now() < deadline) {
    Http h(port);
    ASSERT_TRUE(h.Send("GET", "/health", ""));
    auto r = h.Read();
    ASSERT_TRUE(r.has_value());
    health = r->status;
    if (health == 503) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(health, 503) << "the router never dropped the dead decode node";
  const Http::Response r = PostTo(port, "/v1/completions", body.dump());
  ExpectError(r, 503, "service_unavailable", "no decode node is available");
  EXPECT_THAT(r.body, HasSubstr("retry later"));
  // A streamed request fails the same way before its stream starts.
  json sb = body;
  sb["stream"] = true;
  ExpectError(PostTo(port, "/v1/completions", sb.dump()), 503,
              "service_unavailable", "no decode node is available");
}

// A router no node has registered with serves no model yet: 503, not 404.
TEST(OpenAiHttpErrorsTest, NoNodeRegisteredIs503) {
  const int port = FreePort();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 0;
  o.num_decode = 0;
  o.router_args = {"--tokenizer", kTokenizer, "--http-port",
                   std::to_string(port)};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const Http::Response r = PostTo(
      port, "/v1/chat/completions",
      R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})");
  ExpectError(r, 503, "service_unavailable", "no node has registered");
  EXPECT_THAT(r.body, HasSubstr("start"));
}

// The gateway's deadline (--request-timeout-ms) passing mid-generation:
// 504 before the response started, an error event in a stream.
TEST(OpenAiHttpErrorsTest, RequestTimeoutIs504) {
  const int port = FreePort();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--tokenizer",          kTokenizer,
                   "--http-port",          std::to_string(port),
                   "--request-timeout-ms", "300"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // 4,000 tokens take far longer than 300 ms on the tiny model.
  const json body = {{"prompt", "The"},
                     {"max_tokens", 4000},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const absl::Time start = absl::Now();
  const Http::Response r = PostTo(port, "/v1/completions", body.dump());
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  ExpectError(r, 504, "timeout", "--request-timeout-ms");
  EXPECT_THAT(r.body, HasSubstr("max_tokens"));
  json sb = body;
  sb["stream"] = true;
  const Http::Response s = PostTo(port, "/v1/completions", sb.dump());
  if (s.status == 504) {
    // No token came before the deadline (a slow machine): no stream yet.
    ExpectError(s, 504, "timeout", "--request-timeout-ms");
    return;
  }
  ASSERT_EQ(s.status, 200) << s.body;
  const std::vector<std::string> events = SseEvents(s.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json e = json::parse(events[events.size() - 2]);
  ASSERT_TRUE(e.contains("error")) << events[events.size() - 2];
  EXPECT_EQ(e["error"]["type"], "timeout");
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(10)).ok());
}

}  // namespace
}  // namespace duet::testing
