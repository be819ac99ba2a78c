// End to end on real processes over loopback: 1 router, 2 prefill and 2
// decode nodes on the tiny model, KV moved over UCX. Disaggregated output
// must equal the single-process engine token for token, no KV block may
// leak, and faults end requests with the right status in bounded time.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/engine.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

using ::testing::HasSubstr;

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  v1::GenerationFinished finished;
  int chunks = 0;
};

v1::GenerateRequest Request(const std::vector<int32_t>& prompt,
                            int32_t max_tokens) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

// Runs one Generate; `cancel_after` > 0 cancels after that many tokens.
Outcome Generate(v1::Duet::Stub& stub, const v1::GenerateRequest& req,
                 absl::Duration timeout = absl::Seconds(60),
                 int cancel_after = 0) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Outcome out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      ++out.chunks;
      out.tokens.insert(out.tokens.end(), msg.chunk().token_ids().begin(),
                        msg.chunk().token_ids().end());
      if (cancel_after > 0 &&
          static_cast<int>(out.tokens.size()) >= cancel_after) {
        ctx.TryCancel();
      }
    } else if (msg.has_finished()) {
      out.finished = msg.finished();
    }
  }
  out.status = reader->Finish();
  return out;
}

// Sends every prompt at once (greedy, `max_tokens` each, EOS ignored) and
// expects each stream to equal the single-process engine's output for it.
void ExpectConcurrentOutputsEqualTheEngine(
    LocalCluster& cluster, const std::vector<std::vector<int32_t>>& prompts,
    int32_t max_tokens) {
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok());
  std::vector<std::vector<int32_t>> want;
  for (const std::vector<int32_t>& p : prompts) {
    model::SamplingParams params;
    params.max_tokens = max_tokens;
    params.ignore_eos = true;
    auto r = (*engine)->Generate(p, params);
    ASSERT_TRUE(r.ok()) << r.status();
    want.push_back(r->tokens);
  }
  std::vector<Outcome> got(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      got[i] = Generate(cluster.client(), Request(prompts[i], max_tokens));
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok())
        << "request " << i << ": " << got[i].status.error_message()
        << " (logs in " << cluster.log_dir() << ")";
    EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
  }
}

bool LogContains(const std::string& path, const std::string& needle) {
  std::ifstream in(path);
  std::stringstream all;
  all << in.rdbuf();
  return all.str().find(needle) != std::string::npos;
}

ClusterOptions TinyCluster(int prefill, int decode) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = prefill;
  o.num_decode = decode;
  // Small chunks so long prompts are prefilled in several passes, and
  // several requests share a pass.
  o.prefill_args = {"--max-num-batched-tokens", "64", "--num-kv-blocks", "256"};
  // Released reservations come back after 1 s instead of 12: transfers
  // here are loopback copies of a few KiB, far inside that.
  o.decode_args = {"--num-kv-blocks",         "512", "--max-num-seqs", "16",
                   "--release-quarantine-ms", "1000"};
  return o;
}

TEST(ClusterTest, ConcurrentRequestsEqualTheSingleProcessEngine) {
  auto cluster = LocalCluster::Start(TinyCluster(2, 2));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok());

  constexpr int kRequests = 64;
  const int lengths[] = {1, 5, 17, 40, 64, 65, 100, 150};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> max_tokens;
  std::vector<std::vector<int32_t>> want;
  for (int i = 0; i < kRequests; ++i) {
    std::vector<int32_t> p = LcgPrompt(lengths[i % 8], 100000);
    p[0] = 1000 + i;  // distinct prompts
    prompts.push_back(p);
    max_tokens.push_back(4 + i % 13);
    model::SamplingParams params;
    params.max_tokens = max_tokens.back();
    params.ignore_eos = true;
    auto r = (*engine)->Generate(p, params);
    ASSERT_TRUE(r.ok()) << r.status();
    want.push_back(r->tokens);
  }
  std::vector<Outcome> got(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      got[i] =
          Generate((*cluster)->client(), Request(prompts[i], max_tokens[i]));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(got[i].status.ok())
        << "request " << i << ": " << got[i].status.error_message()
        << " (logs in " << (*cluster)->log_dir() << ")";
    EXPECT_EQ(got[i].tokens, want[i])
        << "request " << i << ", prompt of " << prompts[i].size() << " tokens";
    EXPECT_EQ(got[i].finished.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);
    EXPECT_EQ(got[i].finished.usage().prompt_tokens(), prompts[i].size());
    EXPECT_EQ(got[i].finished.usage().completion_tokens(),
              static_cast<uint32_t>(max_tokens[i]));
    const v1::Timings& t = got[i].finished.timings();
    EXPECT_GT(t.ttft_ms(), 0);
    EXPECT_GT(t.prefill_ms(), 0);
    EXPECT_GE(t.transfer_ms(), 0);
  }
  // Streaming: tokens arrive as they are produced, not in one message.
  EXPECT_GT(got[kRequests - 1].chunks, 1);
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

TEST(ClusterTest, SampledRequestsAreReproducibleAcrossTheCluster) {
  auto cluster = LocalCluster::Start(TinyCluster(1, 1));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> prompt = LcgPrompt(30, 100000);
  v1::GenerateRequest req = Request(prompt, 12);
  req.mutable_sampling()->set_temperature(0.8f);
  req.mutable_sampling()->set_top_p(0.9f);
  req.mutable_sampling()->set_top_k(40);
  req.mutable_sampling()->set_seed(77);
  model::SamplingParams params;
  params.max_tokens = 12;
  params.ignore_eos = true;
  params.temperature = 0.8f;
  params.top_p = 0.9f;
  params.top_k = 40;
  params.seed = 77;
  auto want = (*engine)->Generate(prompt, params);
  ASSERT_TRUE(want.ok());
  const Outcome got = Generate((*cluster)->client(), req);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(got.tokens, want->tokens);
}

TEST(ClusterTest, CancelledRequestsFreeEveryBlock) {
  auto cluster = LocalCluster::Start(TinyCluster(1, 2));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<std::thread> threads;
  std::atomic<int> cancelled{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      std::vector<int32_t> prompt = LcgPrompt(20 + i, 100000);
      const Outcome o = Generate((*cluster)->client(), Request(prompt, 2000),
                                 absl::Seconds(60), /*cancel_after=*/2);
      if (o.status.error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(cancelled.load(), 16);
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(5));
  EXPECT_TRUE(freed.ok()) << freed;
  // The cluster still serves afterwards.
  const Outcome after =
      Generate((*cluster)->client(), Request(LcgPrompt(8, 1000), 3));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
}

TEST(ClusterTest, InvalidRequestsAreInvalidArgument) {
  auto cluster = LocalCluster::Start(TinyCluster(1, 1));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  struct Case {
    v1::GenerateRequest req;
    const char* phrase;
  };
  std::vector<Case> cases;
  cases.push_back({Request({}, 4), "at least one token"});
  cases.push_back({Request({1, 2}, 0), "max_tokens"});
  cases.push_back({Request({1, 2}, -3), "max_tokens"});
  v1::GenerateRequest top_p = Request({1, 2}, 4);
  top_p.mutable_sampling()->set_top_p(1.5f);
  cases.push_back({top_p, "top_p"});
  top_p.mutable_sampling()->set_top_p(-0.5f);
  cases.push_back({top_p, "top_p"});
  cases.push_back({Request(LcgPrompt(4090, 1000), 16),
                   "exceeds the model "
                   "context"});
  cases.push_back({Request({1, 999999999}, 4), "outside the vocabulary"});
  for (const Case& c : cases) {
    const Outcome o = Generate((*cluster)->client(), c.req);
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.phrase << ": " << o.status.error_message();
    EXPECT_THAT(o.status.error_message(), HasSubstr(c.phrase));
  }
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

TEST(ClusterTest, DroppedTransferTimesOutWithinTheConfiguredTimeout) {
  ClusterOptions o = TinyCluster(1, 1);
  o.prefill_args.insert(
      o.prefill_args.end(),
      {"--kv-fault", "drop:every=1", "--kv-transfer-timeout-ms", "500"});
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const absl::Time start = absl::Now();
  const Outcome out =
      Generate((*cluster)->client(), Request(LcgPrompt(10, 1000), 4));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << out.status.error_message();
  EXPECT_THAT(out.status.error_message(), HasSubstr("KV transfer"));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

TEST(ClusterTest, KilledDecodeNodeFailsItsRequestsOthersComplete) {
  // 8 long requests on two decode nodes of 160 blocks: placement by free
  // blocks puts some on each.
  ClusterOptions o = TinyCluster(1, 2);
  o.decode_args = {"--num-kv-blocks", "160", "--max-num-seqs", "16"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  constexpr int kRequests = 8;
  std::vector<Outcome> got(kRequests);
  std::atomic<int> streaming{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
      auto reader = (*cluster)->client().Generate(
          &ctx, Request(LcgPrompt(10 + i, 1000), 600));
      v1::GenerateResponse msg;
      bool counted = false;
      while (reader->Read(&msg)) {
        if (msg.has_chunk()) {
          got[i].tokens.insert(got[i].tokens.end(),
                               msg.chunk().token_ids().begin(),
                               msg.chunk().token_ids().end());
          if (!counted) {
            counted = true;
            ++streaming;
          }
        }
      }
      got[i].status = reader->Finish();
    });
  }
  // Kill one decode node once every request is streaming.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (streaming.load() < kRequests && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  (*cluster)->decode(0).Kill(SIGKILL);
  for (auto& t : threads) t.join();
  int ok = 0, unavailable = 0;
  std::string summary;
  for (const Outcome& o : got) {
    absl::StrAppend(&summary, o.status.error_code(), " (", o.tokens.size(),
                    " tokens) ", o.status.error_message(), "\n");
    if (o.status.ok()) {
      ++ok;
      EXPECT_EQ(o.tokens.size(), 600u);
    } else {
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << o.status.error_message();
      ++unavailable;
    }
  }
  // Placement spreads the requests by free blocks, so both nodes hold
  // some: the killed node's fail, the survivor's complete.
  EXPECT_GE(ok, 1) << summary;
  EXPECT_GE(unavailable, 1) << summary;
  EXPECT_EQ(ok + unavailable, kRequests) << summary;
}

// A prefill node that dies: requests placed on it before the router notices
// are retried on the other one, each with a fresh reservation (a second
// writer must never share blocks the first may still write), and complete
// with the engine's output; the abandoned reservations come back.
TEST(ClusterTest, DeadPrefillNodeIsRetriedElsewhereWithAFreshReservation) {
  ClusterOptions o = TinyCluster(2, 1);
  // The dead node must still be in rotation when the requests go out (the
  // point is the retry): on a loaded machine, building the reference
  // engine could outlast the default 2 s before the router drops it.
  o.router_args.insert(o.router_args.end(), {"--node-timeout-ms", "60000"});
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  (*cluster)->prefill(0).Kill(SIGKILL);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(LcgPrompt(10 + 9 * i, 100000));
    prompts.back()[0] = 4000 + i;
  }
  ExpectConcurrentOutputsEqualTheEngine(**cluster, prompts, 5);
  EXPECT_TRUE(LogContains((*cluster)->log_dir() + "/router.log",
                          "trying another prefill node with a new "
                          "reservation"))
      << "no request was placed on the dead node; see "
      << (*cluster)->log_dir();
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  int64_t free_blocks = -1;
  while (absl::Now() < deadline) {
    auto stats = (*cluster)->Stats((*cluster)->decode(0));
    ASSERT_TRUE(stats.ok()) << stats.status();
    free_blocks = stats->load().free_kv_blocks();
    if (free_blocks == stats->load().total_kv_blocks()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(free_blocks, 512);
}

// The staged KV path (gather into registered host staging on the prefill
// node, scatter from staging on the decode node: what GPU pools use) on CPU
// pools, end to end.
TEST(ClusterTest, HostStagedKvTransferEqualsTheSingleProcessEngine) {
  ClusterOptions o = TinyCluster(1, 1);
  o.prefill_args.push_back("--kv-staged");
  o.decode_args.insert(o.decode_args.end(),
                       {"--kv-staged", "--kv-staging-blocks", "64"});
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 12; ++i) {
    prompts.push_back(LcgPrompt(7 + 23 * i, 100000));
    prompts.back()[0] = 2000 + i;
  }
  ExpectConcurrentOutputsEqualTheEngine(**cluster, prompts, 6);
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
}

// Every --kv-push mode over staged UCX, prompts of 7..260 tokens in 64-token
// chunks (so pieces of several chunks and layers are in flight at once):
// the same tokens as the single-process engine.
TEST(ClusterTest, EveryKvPushModeEqualsTheSingleProcessEngine) {
  for (const char* push : {"layer", "chunk", "request"}) {
    SCOPED_TRACE(push);
    ClusterOptions o = TinyCluster(1, 1);
    o.prefill_args = {"--kv-staged", "--kv-push", push,
                      "--max-num-batched-tokens", "64"};
    o.decode_args = {"--kv-staged"};
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) {
      prompts.push_back(LcgPrompt(7 + 36 * i, 100000));
      prompts.back()[0] = 4000 + i;
    }
    ExpectConcurrentOutputsEqualTheEngine(**cluster, prompts, 6);
    EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
  }
}

// Tensor parallelism across the handover (CPU ranks as threads): a prefill
// node of TP=2 writing into a decode node of TP=1 (each prefill rank sends
// its KV heads as slices into the one decode pool), TP=1 into TP=2 (the one
// prefill pool is split over the two decode ranks), and TP=2 into TP=2
// (whole blocks, rank to rank), over direct and host-staged UCX: every
// stream equals the single-process TP=1 engine token for token, and no
// block leaks.
TEST(ClusterTest, HeterogeneousTensorParallelEqualsTheSingleProcessEngine) {
  for (auto [p_tp, d_tp] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}}) {
    for (bool staged : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "P TP=" << p_tp << " -> D TP="
                                        << d_tp << (staged ? " staged" : ""));
      ClusterOptions o = TinyCluster(1, 1);
      o.prefill_args.insert(o.prefill_args.end(),
                            {"--tensor-parallel-size", std::to_string(p_tp)});
      o.decode_args.insert(o.decode_args.end(),
                           {"--tensor-parallel-size", std::to_string(d_tp)});
      if (staged) {
        o.prefill_args.push_back("--kv-staged");
        o.decode_args.insert(o.decode_args.end(),
                             {"--kv-staged", "--kv-staging-blocks", "64"});
      }
      auto cluster = LocalCluster::Start(o);
      ASSERT_TRUE(cluster.ok()) << cluster.status();
      std::vector<std::vector<int32_t>> prompts;
      for (int i = 0; i < 6; ++i) {
        prompts.push_back(LcgPrompt(5 + 29 * i, 100000));  // up to 3 chunks
        prompts.back()[0] = 5000 + i;
      }
      ExpectConcurrentOutputsEqualTheEngine(**cluster, prompts, 8);
      EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
    }
  }
}

// A decode pool too small for the concurrent requests' growth: requests are
// preempted and recomputed on the decode node, and every stream still
// equals the single-process engine token for token.
TEST(ClusterTest, PreemptionOnAFullDecodePoolKeepsOutputsIdentical) {
  ClusterOptions o = TinyCluster(1, 1);
  // 8 requests of 20-34 prompt tokens growing by 48: up to 5 blocks each
  // at the end (40 in all) on a pool of 24.
  o.decode_args = {"--num-kv-blocks", "24", "--max-num-seqs", "16"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(LcgPrompt(20 + 2 * i, 100000));
    prompts.back()[0] = 3000 + i;
  }
  ExpectConcurrentOutputsEqualTheEngine(**cluster, prompts, 48);
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());
  EXPECT_TRUE(LogContains((*cluster)->log_dir() + "/decode0.log", "preempted"))
      << "no preemption happened; see " << (*cluster)->log_dir();
}

}  // namespace
}  // namespace duet::testing
