// DuetClient and the bench runner against a real gRPC server in this process
// (ScriptedDuetServer on 127.0.0.1, kernel-chosen port).
#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/bench.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/client/scripted_server.h"

namespace duet::client {
namespace {

using ::duet::client::testing::EchoScript;
using ::duet::client::testing::ScriptedDuetServer;
using ::duet::client::testing::StreamScript;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<ScriptedDuetServer> StartServer(
    ScriptedDuetServer::Options options = {}) {
  auto server = ScriptedDuetServer::Start(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

std::unique_ptr<DuetClient> Connect(const ScriptedDuetServer& server) {
  auto client = DuetClient::Create(server.address());
  EXPECT_TRUE(client.ok()) << client.status();
  return std::move(*client);
}

v1::GenerateRequest Request(std::vector<int32_t> prompt, int max_tokens) {
  v1::GenerateRequest r;
  r.set_request_id("t-1");
  r.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  r.mutable_sampling()->set_max_tokens(max_tokens);
  return r;
}

// Every Generate in this server follows `script` (prompt-derived tokens from
// EchoScript, then `edit`).
ScriptedDuetServer::Options Scripted(std::function<void(StreamScript&)> edit) {
  ScriptedDuetServer::Options options;
  options.script = [edit](const v1::GenerateRequest& r, int64_t) {
    StreamScript s = EchoScript(r);
    edit(s);
    return s;
  };
  return options;
}

TEST(ClientTest, StreamsTokensWithTimestampsAndFinishes) {
  auto server = StartServer(Scripted([](StreamScript& s) {
    s.first_token_delay = absl::Milliseconds(20);
    s.token_delay = absl::Milliseconds(5);
  }));
  auto client = Connect(*server);
  std::vector<int32_t> seen;
  std::vector<double> arrivals;
  const GenerateResult r =
      client->Generate(Request({7, 8, 9}, 5), {}, [&](const ChunkEvent& e) {
        EXPECT_EQ(e.tokens_before, seen.size());
        seen.insert(seen.end(), e.token_ids.begin(), e.token_ids.end());
        arrivals.push_back(e.ms_since_start);
        return true;
      });
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.request_id, "t-1");
  EXPECT_THAT(r.tokens, ElementsAre(7, 8, 9, 7, 8));
  EXPECT_EQ(seen, r.tokens);
  EXPECT_TRUE(r.got_finished);
  EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_MAX_TOKENS);
  EXPECT_EQ(r.usage.prompt_tokens(), 3u);
  EXPECT_EQ(r.usage.completion_tokens(), 5u);
  EXPECT_DOUBLE_EQ(r.server_timings.ttft_ms(), 20);
  EXPECT_DOUBLE_EQ(r.server_timings.mean_itl_ms(), 5);
  // Nothing can arrive before the server sent it: the first token after
  // 20 ms, the last after 20 + 4 * 5 ms. (Single gaps may be shorter when
  // the previous read was late, so they are not bounded one by one.)
  EXPECT_GE(r.ttft_ms, 20);
  EXPECT_DOUBLE_EQ(r.ttft_ms, arrivals[0]);
  EXPECT_GE(arrivals.back(), 40);
  ASSERT_EQ(r.itl_ms.size(), 4u);
  double gaps = 0;
  for (double gap : r.itl_ms) gaps += gap;
  EXPECT_NEAR(gaps, arrivals.back() - arrivals.front(), 1e-9);
  EXPECT_TRUE(std::is_sorted(arrivals.begin(), arrivals.end()));
  EXPECT_GE(r.e2e_ms, arrivals.back());
  EXPECT_EQ(r.num_chunks, 5u);
}

TEST(ClientTest, StopTokenEndsGenerationAndIsIncluded) {
  auto server = StartServer();
  auto client = Connect(*server);
  v1::GenerateRequest req = Request({1, 2, 3}, 10);
  req.mutable_sampling()->add_stop_token_ids(3);
  const GenerateResult r = client->Generate(req, {});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.tokens, ElementsAre(1, 2, 3));
  EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_STOP_TOKEN);
}

TEST(ClientTest, ChunksOfSeveralTokensCountAsOneArrival) {
  auto server =
      StartServer(Scripted([](StreamScript& s) { s.chunk_size = 3; }));
  auto client = Connect(*server);
  const GenerateResult r = client->Generate(Request({4, 5}, 7), {});
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens.size(), 7u);
  EXPECT_EQ(r.num_chunks, 3u);  // 3 + 3 + 1
  EXPECT_EQ(r.itl_ms.size(), 2u);
}

TEST(ClientTest, StatusFromTheServerIsReturnedWithItsMessage) {
  auto server = StartServer();
  auto client = Connect(*server);
  const GenerateResult r = client->Generate(Request({1}, 0), {});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status.message()),
              HasSubstr("max_tokens must be > 0"));
  EXPECT_TRUE(r.tokens.empty());
  EXPECT_EQ(r.ttft_ms, 0);
}

TEST(ClientTest, FailureMidStreamKeepsTheTokensThatArrived) {
  auto server = StartServer(Scripted([](StreamScript& s) {
    s.failure = absl::UnavailableError("decode node died");
    s.fail_after_tokens = 2;
  }));
  auto client = Connect(*server);
  const GenerateResult r = client->Generate(Request({5, 6, 7}, 8), {});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(r.status.message(), "decode node died");
  EXPECT_THAT(r.tokens, ElementsAre(5, 6));
  EXPECT_FALSE(r.got_finished);
}

TEST(ClientTest, DeadlineExceeded) {
  auto server = StartServer(Scripted(
      [](StreamScript& s) { s.first_token_delay = absl::Milliseconds(300); }));
  auto client = Connect(*server);
  GenerateOptions options;
  options.timeout = absl::Milliseconds(50);
  const GenerateResult r = client->Generate(Request({1}, 3), options);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(r.e2e_ms, 250);
}

TEST(ClientTest, CallbackReturningFalseCancelsTheCall) {
  auto server = StartServer(Scripted(
      [](StreamScript& s) { s.token_delay = absl::Milliseconds(10); }));
  auto client = Connect(*server);
  int calls = 0;
  const GenerateResult r = client->Generate(
      Request({1, 2}, 50), {}, [&](const ChunkEvent&) { return ++calls < 3; });
  EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calls, 3);
  EXPECT_LT(r.tokens.size(), 50u);
  // The server saw the cancellation (OnCancel runs asynchronously).
  for (int i = 0; i < 100 && server->cancelled_calls() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(server->cancelled_calls(), 1);
}

TEST(ClientTest, ProtocolViolationsBecomeErrors) {
  auto no_finished =
      StartServer(Scripted([](StreamScript& s) { s.send_finished = false; }));
  const GenerateResult a = Connect(*no_finished)->Generate(Request({1}, 2), {});
  EXPECT_EQ(a.status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(a.tokens.size(), 2u);

  auto error_reason = StartServer(Scripted([](StreamScript& s) {
    s.finish_reason = v1::FINISH_REASON_ERROR;
    s.error_message = "sampler exploded";
  }));
  const GenerateResult b =
      Connect(*error_reason)->Generate(Request({1}, 2), {});
  EXPECT_EQ(b.status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(b.status.message()), HasSubstr("sampler exploded"));
}

TEST(ClientTest, UnreachableRouterIsUnavailable) {
  auto server = StartServer();
  const std::string address = server->address();
  server.reset();  // The port is closed now.
  auto client = DuetClient::Create(address);
  ASSERT_TRUE(client.ok());
  const GenerateResult r = (*client)->Generate(Request({1}, 2), {});
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->Health(absl::Seconds(1)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->WaitForConnected(absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(DuetClient::Create("").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClientTest, HealthAndListNodes) {
  ScriptedDuetServer::Options options;
  options.health.set_serving(true);
  options.health.set_num_prefill_nodes(1);
  options.health.set_num_decode_nodes(2);
  options.health.set_model_name("qwen3-tiny");
  for (int i = 0; i < 3; ++i) {
    v1::NodeInfo* n = options.nodes.add_nodes();
    n->set_node_id(i + 1);
    n->set_role(i == 0 ? v1::NODE_ROLE_PREFILL : v1::NODE_ROLE_DECODE);
    n->set_address(absl::StrCat("10.0.0.", i, ":7000"));
  }
  auto server = StartServer(std::move(options));
  auto client = Connect(*server);
  auto health = client->Health(absl::Seconds(5));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_TRUE(health->serving());
  EXPECT_EQ(health->num_decode_nodes(), 2u);
  EXPECT_EQ(health->model_name(), "qwen3-tiny");
  auto all = client->ListNodes(v1::NODE_ROLE_UNSPECIFIED, absl::Seconds(5));
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->nodes_size(), 3);
  auto decode = client->ListNodes(v1::NODE_ROLE_DECODE, absl::Seconds(5));
  ASSERT_TRUE(decode.ok());
  EXPECT_EQ(decode->nodes_size(), 2);
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_STOP_TOKEN), "STOP_TOKEN");
  EXPECT_EQ(NodeRoleName(v1::NODE_ROLE_DECODE), "DECODE");
}

BenchOptions SmallBench() {
  BenchOptions o;
  o.workload.num_requests = 128;
  o.workload.input_len_min = 4;
  o.workload.input_len_max = 32;
  o.workload.output_len_min = 4;
  o.workload.output_len_max = 12;
  o.workload.vocab_limit = 1000;
  o.workload.seed = 3;
  o.timeout = absl::Seconds(20);
  return o;
}

// Per-request invariants every successful bench must satisfy.
void ExpectSaneRecords(const BenchReport& report) {
  for (const RequestRecord& r : report.requests) {
    if (!r.ok()) continue;
    EXPECT_EQ(r.output_tokens, r.output_len_requested) << r.index;
    EXPECT_GT(r.ttft_ms, 0) << r.index;
    EXPECT_LE(r.ttft_ms, r.e2e_ms) << r.index;
    EXPECT_EQ(r.itl_ms.size(), static_cast<size_t>(r.output_tokens - 1));
  }
}

TEST(BenchTest, ClosedLoopSustains64ConcurrentStreams) {
  // Long first-token delay so all 64 streams overlap even on 2 cores.
  auto server = StartServer(Scripted([](StreamScript& s) {
    s.first_token_delay = absl::Milliseconds(60);
    s.token_delay = absl::Milliseconds(1);
  }));
  auto client = Connect(*server);
  BenchOptions o = SmallBench();
  o.max_concurrency = 64;
  auto report = RunBench(*client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 128);
  EXPECT_EQ(report->failed, 0);
  EXPECT_EQ(report->output_len_mismatches, 0);
  EXPECT_EQ(server->generate_calls(), 128);
  // Closed loop never exceeds C in flight, and reaches it.
  EXPECT_LE(server->max_in_flight(), 64);
  EXPECT_GE(server->max_in_flight(), 56);
  ExpectSaneRecords(*report);
  int64_t expected_in = 0, expected_out = 0;
  for (const BenchRequestSpec& spec : MakeBenchRequests(o.workload)) {
    expected_in += spec.prompt_token_ids.size();
    expected_out += spec.output_len;
  }
  EXPECT_EQ(report->total_input_tokens, expected_in);
  EXPECT_EQ(report->total_output_tokens, expected_out);

  const auto j = nlohmann::json::parse(ReportToJson(*report, false));
  EXPECT_EQ(j["completed"], 128);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_TRUE(j["failures"].empty());
  EXPECT_EQ(j["ttft_ms"]["count"], 128);
  EXPECT_GE(j["ttft_ms"]["p50"].get<double>(), 60);
  EXPECT_LE(j["ttft_ms"]["p99"].get<double>(),
            j["e2e_latency_ms"]["max"].get<double>());
  EXPECT_LE(j["ttft_ms"]["mean"].get<double>(),
            j["e2e_latency_ms"]["mean"].get<double>());
  EXPECT_GT(j["tpot_ms"]["p50"].get<double>(), 0);
  EXPECT_GT(j["itl_ms"]["p50"].get<double>(), 0);
  EXPECT_LE(j["tpot_ms"]["max"].get<double>(),
            j["e2e_latency_ms"]["max"].get<double>());
  EXPECT_EQ(j["itl_ms"]["count"].get<int64_t>(), expected_out - 128);
  // Two waves of 64 requests, each >= 60 ms + 3..11 ms.
  EXPECT_GE(j["duration_s"].get<double>(), 0.12);
  EXPECT_NEAR(j["request_throughput_rps"].get<double>(),
              128 / j["duration_s"].get<double>(), 1e-6);
}

TEST(BenchTest, PoissonArrivalsMatchTheRequestedRate) {
  auto server = StartServer();
  auto client = Connect(*server);
  BenchOptions o = SmallBench();
  o.workload.num_requests = 100;
  o.request_rate = 200;
  auto report = RunBench(*client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 100);
  EXPECT_EQ(report->output_len_mismatches, 0);
  ExpectSaneRecords(*report);
  // Each request is sent at its seeded Poisson time: never early, and
  // (median) barely late.
  const std::vector<double> offsets = PoissonArrivalOffsets(
      100, 200, DeriveSeed(o.workload.seed, kArrivalSeedStream));
  std::vector<double> lateness_ms;
  for (const RequestRecord& r : report->requests) {
    const double due_ms = offsets[r.index] * 1000;
    EXPECT_GE(r.start_ms, due_ms) << r.index;
    lateness_ms.push_back(r.start_ms - due_ms);
  }
  EXPECT_LT(Summarize(lateness_ms).p50, 10);
  // The seeded schedule itself is near the requested rate (99 gaps: the
  // standard error is 10%), and so is the measured throughput.
  const double send_rate = 99 / offsets.back();
  EXPECT_NEAR(send_rate, 200, 50);
  EXPECT_GT(report->duration_s, offsets.back());
  EXPECT_GT(report->request_throughput_rps, 0.6 * send_rate);
  EXPECT_LT(report->request_throughput_rps, 1.01 * send_rate);
}

TEST(BenchTest, OpenLoopBurstOpensAStreamPerRequest) {
  // rate = inf sends all 96 at once: the open-loop pool must grow to one
  // thread per request instead of queueing behind slow ones. The first
  // token waits long enough that all 96 are open at once even on a loaded
  // machine (at 100 ms it failed under ctest -j8 on 2 cores).
  auto server = StartServer(Scripted(
      [](StreamScript& s) { s.first_token_delay = absl::Milliseconds(400); }));
  auto client = Connect(*server);
  BenchOptions o = SmallBench();
  o.workload.num_requests = 96;
  o.request_rate = INFINITY;
  auto report = RunBench(*client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 96);
  EXPECT_EQ(report->output_len_mismatches, 0);
  EXPECT_GE(server->max_in_flight(), 88);
  ExpectSaneRecords(*report);
  const auto j = nlohmann::json::parse(ReportToJson(*report, false));
  EXPECT_EQ(j["config"]["arrival"], "all_at_once");
}

TEST(BenchTest, FailuresAreCountedByStatusCode) {
  ScriptedDuetServer::Options options;
  options.script = [](const v1::GenerateRequest& r, int64_t arrival) {
    StreamScript s = EchoScript(r);
    if (arrival % 5 == 1) {
      s.failure = absl::ResourceExhaustedError("no decode node has room");
    } else if (arrival % 5 == 3) {
      s.failure = absl::UnavailableError("prefill node died");
      s.fail_after_tokens = 2;
    }
    return s;
  };
  auto server = StartServer(std::move(options));
  auto client = Connect(*server);
  BenchOptions o = SmallBench();
  o.workload.num_requests = 50;
  o.max_concurrency = 8;
  auto report = RunBench(*client, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->completed, 30);
  EXPECT_EQ(report->failed, 20);
  ASSERT_EQ(report->failures.size(), 2u);
  EXPECT_EQ(report->failures.at("RESOURCE_EXHAUSTED").count, 10);
  EXPECT_EQ(report->failures.at("RESOURCE_EXHAUSTED").first_message,
            "no decode node has room");
  EXPECT_EQ(report->failures.at("UNAVAILABLE").count, 10);
  EXPECT_EQ(report->ttft_ms.count, 30u);
  ExpectSaneRecords(*report);
  const auto j = nlohmann::json::parse(ReportToJson(*report, true));
  EXPECT_EQ(j["failures"]["UNAVAILABLE"]["count"], 10);
  EXPECT_EQ(j["failures"]["RESOURCE_EXHAUSTED"]["first_message"],
            "no decode node has room");
  int unavailable = 0;
  for (const auto& r : j["requests"])
    unavailable += r["status"] == "UNAVAILABLE";
  EXPECT_EQ(unavailable, 10);
}

TEST(BenchTest, BadOptionsAndUnreachableRouterAreErrors) {
  auto server = StartServer();
  auto client = Connect(*server);
  BenchOptions o = SmallBench();
  o.request_rate = 0;
  EXPECT_EQ(RunBench(*client, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server->generate_calls(), 0);
  const std::string address = server->address();
  server.reset();
  auto orphan = DuetClient::Create(address);
  o.request_rate = INFINITY;
  o.max_concurrency = 1;
  EXPECT_EQ(RunBench(**orphan, o, absl::Milliseconds(100)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace duet::client
