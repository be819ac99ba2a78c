// Operating the cluster: nodes that go silent leave rotation and come back,
// requests queue for KV space instead of failing, and duet-bench produces a
// sane report against real processes.
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <atomic>
#include <functional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

using ::testing::HasSubstr;

int CountDecode(v1::Duet::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  v1::HealthResponse h;
  if (!stub.Health(&ctx, v1::HealthRequest(), &h).ok()) return -1;
  return static_cast<int>(h.num_decode_nodes());
}

bool WaitDecodeCount(v1::Duet::Stub& stub, int want, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (CountDecode(stub) == want) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

grpc::Status RunRequest(v1::Duet::Stub& stub, int prompt_len, int max_tokens,
                        absl::Duration timeout, size_t* tokens = nullptr) {
  v1::GenerateRequest req;
  for (int32_t id : LcgPrompt(prompt_len, 1000)) req.add_prompt_token_ids(id);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  size_t n = 0;
  while (reader->Read(&msg)) n += msg.chunk().token_ids_size();
  if (tokens != nullptr) *tokens = n;
  return reader->Finish();
}

TEST(ClusterOpsTest, SilentNodeLeavesRotationAndReRegistersWhenBack) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_decode = 2;
  auto cluster = LocalCluster::Start(o);  // node timeout 1 s
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  v1::Duet::Stub& stub = (*cluster)->client();
  (*cluster)->decode(0).Kill(SIGSTOP);
  ASSERT_TRUE(WaitDecodeCount(stub, 1, absl::Seconds(5)));
  // Requests keep being served by the live node meanwhile.
  size_t n = 0;
  const grpc::Status s = RunRequest(stub, 10, 5, absl::Seconds(30), &n);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(n, 5u);
  (*cluster)->decode(0).Kill(SIGCONT);
  EXPECT_TRUE(WaitDecodeCount(stub, 2, absl::Seconds(5)));
}

// Starts `n` long streams (3,500 tokens each) at once and returns, per
// stream, its status and how many tokens it delivered; `during` runs once
// every stream has delivered two tokens: token 1 comes from the router
// (the prefill node's), token 2 from the decode node, which then runs the
// stream.
std::vector<std::pair<grpc::Status, size_t>> LongStreams(
    v1::Duet::Stub& stub, int n, const std::function<void()>& during) {
  std::vector<std::pair<grpc::Status, size_t>> out(n);
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req;
      for (int32_t id : LcgPrompt(10 + i, 1000)) req.add_prompt_token_ids(id);
      req.mutable_sampling()->set_max_tokens(3500);
      req.mutable_sampling()->set_ignore_eos(true);
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
      auto reader = stub.Generate(&ctx, req);
      v1::GenerateResponse msg;
      size_t got = 0;
      while (reader->Read(&msg)) {
        const size_t before = got;
        got += msg.chunk().token_ids_size();
        if (before < 2 && got >= 2) ++started;
      }
      out[i] = {reader->Finish(), got};
    });
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (started.load() < n && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  during();
  for (auto& t : threads) t.join();
  return out;
}

// A decode node that stops (SIGSTOP: its connections stay open) ends every
// stream on it as soon as the router drops it (1 s here), UNAVAILABLE and
// naming the node, instead of at the client's deadline; once it resumes it
// sees the cancelled streams and frees every block.
TEST(ClusterOpsTest, StoppedDecodeNodeEndsItsStreamsAtOnce) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  auto cluster = LocalCluster::Start(o);  // node timeout 1 s
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::Time stopped;
  auto streams = LongStreams((*cluster)->client(), 6, [&] {
    (*cluster)->decode(0).Kill(SIGSTOP);
    stopped = absl::Now();
  });
  const absl::Duration took = absl::Now() - stopped;
  (*cluster)->decode(0).Kill(SIGCONT);
  EXPECT_LT(took, absl::Seconds(4));
  for (const auto& [s, tokens] : streams) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << s.error_message() << " after " << tokens << " tokens";
    EXPECT_THAT(s.error_message(), HasSubstr("left the cluster"));
    EXPECT_THAT(s.error_message(), HasSubstr((*cluster)->decode(0).address()));
    EXPECT_LT(tokens, 3500u);
  }
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(15)).ok());
}

// A node that still heartbeats but sends nothing on a stream (here: a long
// node timeout, so SIGSTOP does not drop it) is noticed by the stream's
// idle timeout.
TEST(ClusterOpsTest, QuietStreamEndsAtTheIdleTimeout) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--node-timeout-ms", "60000", "--stream-idle-timeout-ms",
                   "1500"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  absl::Time stopped;
  auto streams = LongStreams((*cluster)->client(), 2, [&] {
    (*cluster)->decode(0).Kill(SIGSTOP);
    stopped = absl::Now();
  });
  const absl::Duration took = absl::Now() - stopped;
  (*cluster)->decode(0).Kill(SIGCONT);
  EXPECT_GE(took, absl::Milliseconds(1400));
  EXPECT_LT(took, absl::Seconds(5));
  for (const auto& [s, tokens] : streams) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("sent nothing for 1.5s"));
  }
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(15)).ok());
}

// A decode node restarted at the same address after a while down serves
// the first request placed on it: the router dials it on a fresh channel,
// not one left in connect backoff by the failures while it was down.
TEST(ClusterOpsTest, RestartedNodeServesAsSoonAsItIsBack) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  auto cluster = LocalCluster::Start(o);  // node timeout 1 s
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  v1::Duet::Stub& stub = (*cluster)->client();
  ASSERT_TRUE(RunRequest(stub, 10, 4, absl::Seconds(30)).ok());
  // Requests while it is down fail (and push the old channel into backoff).
  std::atomic<bool> down{true};
  std::thread pester([&] {
    while (down.load()) {
      (void)RunRequest(stub, 10, 4, absl::Seconds(2));
      absl::SleepFor(absl::Milliseconds(100));
    }
  });
  const absl::Status restarted =
      (*cluster)->RestartDecode(0, absl::Seconds(12));
  down = false;
  pester.join();
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(WaitDecodeCount(stub, 1, absl::Seconds(5)));
  const absl::Time back = absl::Now();
  size_t n = 0;
  const grpc::Status s = RunRequest(stub, 10, 4, absl::Seconds(30), &n);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(n, 4u);
  EXPECT_LT(absl::Now() - back, absl::Seconds(3));
}

TEST(ClusterOpsTest, RequestsQueueForKvSpaceAndTimeOutWhenItNeverComes) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  // 8 blocks = 128 tokens of decode KV: each request below reserves 4
  // blocks and grows to 5, so at most two run at a time (the others wait
  // at the router, and growth preempts).
  o.decode_args = {"--num-kv-blocks", "8"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  v1::Duet::Stub& stub = (*cluster)->client();
  std::vector<grpc::Status> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = RunRequest(stub, 40, 40, absl::Seconds(60)); });
  }
  for (auto& t : threads) t.join();
  for (const grpc::Status& s : results) {
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  // A request that could never fit the pool, even alone (its prompt +
  // max_tokens needs 9 blocks), is refused at once with what to change
  // rather than queued until its deadline.
  const absl::Time start = absl::Now();
  const grpc::Status big = RunRequest(stub, 100, 40, absl::Seconds(30));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << big.error_message();
  EXPECT_THAT(big.error_message(), ::testing::HasSubstr("lower max_tokens"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Overload: with room for two requests on the decode node and room for
// two more in the router's queue (--max-queued-requests 2), 10 requests at
// once: the ones that find the queue full are refused at once
// (RESOURCE_EXHAUSTED naming the flag); every other one completes with all
// its tokens (queued ones are woken by capacity changes, not a timer); no
// block leaks.
TEST(ClusterOpsTest, FullQueueRefusesAtOnceAndQueuedRequestsComplete) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.decode_args = {"--num-kv-blocks", "8"};
  o.router_args = {"--max-queued-requests", "2"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  v1::Duet::Stub& stub = (*cluster)->client();
  constexpr int kRequests = 10;
  std::vector<grpc::Status> results(kRequests);
  std::vector<size_t> tokens(kRequests);
  std::vector<absl::Duration> took(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      const absl::Time start = absl::Now();
      results[i] = RunRequest(stub, 40, 40, absl::Seconds(60), &tokens[i]);
      took[i] = absl::Now() - start;
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, refused = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (results[i].ok()) {
      ++ok;
      EXPECT_EQ(tokens[i], 40u);
      continue;
    }
    ++refused;
    EXPECT_EQ(results[i].error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << results[i].error_message();
    EXPECT_THAT(results[i].error_message(),
                HasSubstr("--max-queued-requests 2"));
    EXPECT_LT(took[i], absl::Seconds(2)) << "refused, but only after waiting";
  }
  EXPECT_GE(ok, 4);  // two running, two queued, at least
  EXPECT_GE(refused, 1);
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Backpressure: clients that stop reading fill their stream's flow-control
// window (each chunk echoes a 256-byte request id: 3,500 of them are far
// more than the window), the router's write to them blocks, and after
// --client-write-timeout-ms their requests are cancelled and every KV block
// is freed while the clients still read nothing; a reading client is not
// affected.
TEST(ClusterOpsTest, ClientsThatStopReadingAreCancelledAndFreed) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--client-write-timeout-ms", "1500"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  v1::GenerateRequest req;
  for (int32_t id : LcgPrompt(10, 1000)) req.add_prompt_token_ids(id);
  req.mutable_sampling()->set_max_tokens(3500);
  req.mutable_sampling()->set_ignore_eos(true);
  req.set_request_id(std::string(256, 'r'));
  // A client whose window does not grow (no BDP probing) and starts at
  // 16 KiB, as a slow or stuck reader's would stay.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 * 1024);
  auto stalled = v1::Duet::NewStub(grpc::CreateCustomChannel(
      (*cluster)->router_address(), TestCredentials(false), args));
  constexpr int kStalled = 4;
  std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>> readers;
  for (int i = 0; i < kStalled; ++i) {
    ctxs.push_back(std::make_unique<grpc::ClientContext>());
    ctxs.back()->set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    readers.push_back(stalled->Generate(ctxs.back().get(), req));
  }
  // A client that reads keeps being served meanwhile.
  size_t n = 0;
  const grpc::Status live =
      RunRequest((*cluster)->client(), 10, 20, absl::Seconds(30), &n);
  EXPECT_TRUE(live.ok()) << live.error_message();
  EXPECT_EQ(n, 20u);
  // Nobody has read a byte of the stalled streams, yet every block is free.
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(20)).ok());
  for (auto& reader : readers) {
    v1::GenerateResponse msg;
    size_t got = 0;
    while (reader->Read(&msg)) got += msg.chunk().token_ids_size();
    const grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
    EXPECT_LT(got, 3500u);
  }
}

TEST(ClusterOpsTest, BenchReportsSaneNumbers) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 2;
  o.num_decode = 2;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string json_path = (*cluster)->log_dir() + "/bench.json";
  const std::string cmd = absl::StrCat(
      DUET_BENCH_BIN, " --tls-ca ", CertDir(), "/ca.pem --router ",
      (*cluster)->router_address(),
      " --num-requests 48 --concurrency 16 --input-len 8 --input-len-max 120",
      " --output-len 4 --output-len-max 24 --vocab-limit 100000 --seed 3",
      " --json-out ", json_path, " 2>&1");
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << out;
  std::ifstream in(json_path);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["completed"].get<int>(), 48) << out;
  EXPECT_EQ(j["failed"].get<int>(), 0) << out;
  EXPECT_EQ(j["output_len_mismatches"].get<int>(), 0);
  EXPECT_GT(j["request_throughput_rps"].get<double>(), 0);
  EXPECT_GT(j["output_throughput_tok_s"].get<double>(), 0);
  for (const char* q : {"p50", "p90", "p99"}) {
    EXPECT_GT(j["ttft_ms"][q].get<double>(), 0) << q;
    EXPECT_LE(j["ttft_ms"][q].get<double>(),
              j["e2e_latency_ms"][q].get<double>() + 1e-9)
        << q;
    EXPECT_GE(j["tpot_ms"][q].get<double>(), 0) << q;
  }
  EXPECT_LE(j["ttft_ms"]["p50"].get<double>(),
            j["ttft_ms"]["p99"].get<double>());
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

}  // namespace
}  // namespace duet::testing
