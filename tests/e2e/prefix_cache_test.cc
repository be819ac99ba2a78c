// Prefix caching end to end (--enable-prefix-caching, on by default) on
// the tiny model, CPU backend: a shared-prefix workload through a
// disaggregated cluster and a colocated node, with pools small enough to
// force evictions, gives the single-process engine's tokens exactly, with
// caching on and off; every block is free or cached afterwards.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/engine.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

std::vector<int32_t> Generate(v1::Duet::Stub& stub,
                              const std::vector<int32_t>& prompt,
                              int32_t max_tokens, grpc::Status* status) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  std::vector<int32_t> out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      out.insert(out.end(), msg.chunk().token_ids().begin(),
                 msg.chunk().token_ids().end());
    }
  }
  *status = reader->Finish();
  return out;
}

// 90% of prompts share one of two long system prefixes (200 tokens), each
// with a short unique suffix; the rest are unique.
std::vector<std::vector<int32_t>> SharedPrefixPrompts(int n) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> p;
    if (i % 10 != 9) {
      const int sys = i % 2;
      for (int k = 0; k < 200; ++k) p.push_back((k * 7 + sys * 101) % 250 + 1);
    }
    for (int k = 0; k < 10 + i % 13; ++k)
      p.push_back((i * 31 + k * 3) % 250 + 1);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

void ExpectEqualTheEngine(LocalCluster& cluster, int n, bool concurrent) {
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok());
  const std::vector<std::vector<int32_t>> prompts = SharedPrefixPrompts(n);
  std::vector<std::vector<int32_t>> got(prompts.size());
  std::vector<grpc::Status> status(prompts.size());
  auto run = [&](size_t i) {
    got[i] = Generate(cluster.client(), prompts[i], 10, &status[i]);
  };
  if (concurrent) {
    std::vector<std::thread> threads;
    for (size_t i = 0; i < prompts.size(); ++i) threads.emplace_back(run, i);
    for (auto& t : threads) t.join();
  } else {
    for (size_t i = 0; i < prompts.size(); ++i) run(i);
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(status[i].ok())
        << "request " << i << ": " << status[i].error_message() << " (logs in "
        << cluster.log_dir() << ")";
    model::SamplingParams params;
    params.max_tokens = 10;
    params.ignore_eos = true;
    auto want = (*engine)->Generate(prompts[i], params);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(got[i], want->tokens) << "request " << i;
  }
  const absl::Status freed = cluster.WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

// The node that prefilled looked up every prompt token, and with caching
// on found most of the shared prefixes (18 of 20 prompts per round share
// one of two 200-token prefixes: 12 full blocks each).
void ExpectCacheUse(LocalCluster& cluster, const Process& node, bool caching) {
  auto stats = cluster.Stats(node);
  ASSERT_TRUE(stats.ok()) << stats.status();
  const v1::NodeLoad& l = stats->load();
  std::printf("prefix cache: %llu of %llu prompt tokens hit\n",
              static_cast<unsigned long long>(l.prefix_cache_hit_tokens()),
              static_cast<unsigned long long>(l.prefix_cache_query_tokens()));
  if (!caching) {
    EXPECT_EQ(l.prefix_cache_query_tokens(), 0u);
    EXPECT_EQ(l.prefix_cache_hit_tokens(), 0u);
    return;
  }
  EXPECT_GE(l.prefix_cache_query_tokens(), 36u * 200u);
  // At least half the shared prefixes' full blocks came from the cache,
  // evictions under the small pools notwithstanding.
  EXPECT_GT(l.prefix_cache_hit_tokens(), 36u * 192u / 2u);
}

class PrefixCacheClusterTest : public ::testing::TestWithParam<bool> {};

TEST_P(PrefixCacheClusterTest, DisaggregatedSharedPrefixesEqualTheEngine) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  const std::string flag =
      GetParam() ? "--enable-prefix-caching" : "--noenable-prefix-caching";
  // 40 blocks = 640 tokens on the prefill node: two prefixes (13 blocks
  // each) plus the requests in flight do not all fit, so cached blocks are
  // evicted and recomputed along the way.
  o.prefill_args = {flag, "--num-kv-blocks", "40"};
  o.decode_args = {flag, "--num-kv-blocks", "200"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ExpectEqualTheEngine(**cluster, 20, /*concurrent=*/false);
  ExpectEqualTheEngine(**cluster, 20, /*concurrent=*/true);
  ExpectCacheUse(**cluster, (*cluster)->prefill(0), GetParam());
}

TEST_P(PrefixCacheClusterTest, ColocatedSharedPrefixesEqualTheEngine) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 0;
  o.num_decode = 0;
  o.num_colocated = 1;
  o.router_args = {"--policy", "colocated"};
  o.decode_args = {
      GetParam() ? "--enable-prefix-caching" : "--noenable-prefix-caching",
      "--num-kv-blocks", "60", "--max-num-batched-tokens", "96"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ExpectEqualTheEngine(**cluster, 20, /*concurrent=*/false);
  ExpectEqualTheEngine(**cluster, 20, /*concurrent=*/true);
  ExpectCacheUse(**cluster, (*cluster)->decode(0), GetParam());
}

v1::RoutingStats Routing(LocalCluster& cluster) {
  v1::HealthRequest req;
  v1::HealthResponse reply;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  const grpc::Status s = cluster.client().Health(&ctx, req, &reply);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return reply.routing();
}

// Two prefill nodes, one decode node, --routing prefix-aware (the
// default): two conversations (each a 400-token prefix and a new 20-token
// turn per round) keep landing on the prefill node that holds their
// prefix, so nearly every prefix token after the first round is a cache hit
// there, exactly as many as the router predicted; the decode node links
// the blocks it holds instead of receiving them; the tokens equal the
// single-process engine's.
TEST(PrefixRoutingClusterTest, ConversationsStayWhereTheirPrefixIs) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 2;
  o.prefill_args = {"--num-kv-blocks", "400"};
  o.decode_args = {"--num-kv-blocks", "400"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok());
  std::vector<std::vector<int32_t>> convo(2);
  for (int c = 0; c < 2; ++c) {
    for (int k = 0; k < 400; ++k)
      convo[c].push_back((k * 11 + c * 57) % 250 + 1);
  }
  constexpr int kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {
    // The router counts what it just sent against a node for two heartbeat
    // intervals (200 ms here); the next turn comes after that, as a user's
    // would.
    absl::SleepFor(absl::Milliseconds(300));
    std::vector<std::vector<int32_t>> prompts(2), got(2);
    std::vector<grpc::Status> status(2);
    std::vector<std::thread> threads;
    for (int c = 0; c < 2; ++c) {
      for (int k = 0; k < 20; ++k) {
        convo[c].push_back((round * 37 + k * 5 + c) % 250 + 1);
      }
      prompts[c] = convo[c];
      threads.emplace_back([&, c] {
        got[c] = Generate((*cluster)->client(), prompts[c], 8, &status[c]);
      });
    }
    for (auto& t : threads) t.join();
    for (int c = 0; c < 2; ++c) {
      ASSERT_TRUE(status[c].ok()) << status[c].error_message();
      model::SamplingParams params;
      params.max_tokens = 8;
      params.ignore_eos = true;
      auto want = (*engine)->Generate(prompts[c], params);
      ASSERT_TRUE(want.ok());
      EXPECT_EQ(got[c], want->tokens) << "round " << round << " convo " << c;
      // The next turn extends the conversation by its answer.
      convo[c].insert(convo[c].end(), got[c].begin(), got[c].end());
    }
  }
  const v1::RoutingStats r = Routing(**cluster);
  std::printf(
      "routing %s: %llu prompt tokens, %llu predicted cached, %llu "
      "prefill cached, %llu decode cached\n",
      r.mode().c_str(), static_cast<unsigned long long>(r.prompt_tokens()),
      static_cast<unsigned long long>(r.predicted_cached_tokens()),
      static_cast<unsigned long long>(r.prefill_cached_tokens()),
      static_cast<unsigned long long>(r.decode_cached_tokens()));
  EXPECT_EQ(r.mode(), "prefix-aware");
  // Rounds 2..5 of both conversations: at least their 400-token prefix
  // (25 blocks) each came from the prefill node's cache.
  EXPECT_GE(r.prefill_cached_tokens(), 2u * (kRounds - 1) * 400u);
  EXPECT_EQ(r.predicted_cached_tokens(), r.prefill_cached_tokens());
  // The decode node held at least as much (prompt and answer blocks).
  EXPECT_GE(r.decode_cached_tokens(), 2u * (kRounds - 1) * 400u);
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

INSTANTIATE_TEST_SUITE_P(Caching, PrefixCacheClusterTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "On" : "Off";
                         });

// The client's usage carries the prefill node's cache hits
// (Usage.cached_prompt_tokens): the same 200-token prompt twice on a
// disaggregated cluster computes it all the first time, and the second
// time takes its 12 full blocks (192 tokens; the last block, partly full,
// and so the last token are always computed) from the cache.
class PrefixCacheUsageTest : public ::testing::TestWithParam<bool> {};

// Disaggregated (the prefill node's count) and colocated (the node's own).
TEST_P(PrefixCacheUsageTest, SecondSamePromptReportsCachedPromptTokens) {
  const bool colocated = GetParam();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--policy", colocated ? "colocated" : "disagg"};
  if (colocated) {
    o.num_prefill = 0;
    o.num_decode = 0;
    o.num_colocated = 1;
  }
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<int32_t> prompt;
  for (int k = 0; k < 200; ++k) prompt.push_back((k * 13 + 5) % 250 + 1);
  auto usage = [&]() -> v1::Usage {
    v1::GenerateRequest req;
    req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    req.mutable_sampling()->set_max_tokens(4);
    req.mutable_sampling()->set_ignore_eos(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    auto reader = (*cluster)->client().Generate(&ctx, req);
    v1::GenerateResponse msg;
    v1::Usage u;
    while (reader->Read(&msg)) {
      if (msg.has_finished()) u = msg.finished().usage();
    }
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return u;
  };
  const v1::Usage first = usage();
  EXPECT_EQ(first.prompt_tokens(), 200u);
  EXPECT_EQ(first.completion_tokens(), 4u);
  EXPECT_EQ(first.cached_prompt_tokens(), 0u);
  const v1::Usage second = usage();
  EXPECT_EQ(second.prompt_tokens(), 200u);
  EXPECT_GT(second.cached_prompt_tokens(), 0u);
  EXPECT_LT(second.cached_prompt_tokens(), 200u);
  EXPECT_EQ(second.cached_prompt_tokens() % 16, 0u) << "whole blocks only";
  const v1::RoutingStats r = Routing(**cluster);
  if (!colocated) {
    EXPECT_EQ(r.prefill_cached_tokens(), second.cached_prompt_tokens());
  }
  // The router expected the hit: it placed the first one there.
  EXPECT_EQ(r.predicted_cached_tokens(), second.cached_prompt_tokens());
}

INSTANTIATE_TEST_SUITE_P(Path, PrefixCacheUsageTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Colocated" : "Disaggregated";
                         });

}  // namespace
}  // namespace duet::testing
