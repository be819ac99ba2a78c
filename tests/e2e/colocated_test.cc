// The colocated role (duet-decode --role colocated) and the router's
// --policy, on real processes with the tiny model on the CPU backend: a
// cluster of colocated nodes only, and a mixed cluster where --policy auto
// sends short prompts colocated and long ones disaggregated; every output
// equals the single-process engine token for token, under both
// --scheduling orders, and no KV block leaks.
#include <grpcpp/grpcpp.h>

#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "model/engine.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  v1::GenerationFinished finished;
  double e2e_ms = 0;  // the client's, call to end of stream
};

Outcome Generate(v1::Duet::Stub& stub, const std::vector<int32_t>& prompt,
                 int32_t max_tokens, int cancel_after = 0) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  Outcome out;
  const absl::Time start = absl::Now();
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
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
  out.e2e_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  return out;
}

// Prompts of mixed lengths (tiny's vocabulary is 256), distinct heads.
std::vector<std::vector<int32_t>> Prompts(int n, int32_t long_len) {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n; ++i) {
    const int32_t len = i % 2 == 0 ? 3 + 5 * i : long_len + 17 * i;
    std::vector<int32_t> p;
    for (int32_t k = 0; k < len; ++k) p.push_back((i * 37 + k * 11) % 250 + 1);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

std::vector<int32_t> Reference(model::Engine& engine,
                               const std::vector<int32_t>& prompt,
                               int32_t max_tokens) {
  model::SamplingParams params;
  params.max_tokens = max_tokens;
  params.ignore_eos = true;
  auto r = engine.Generate(prompt, params);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->tokens : std::vector<int32_t>{};
}

// Every prompt at once; each stream must equal the engine's output.
// Returns the outcomes in prompt order.
std::vector<Outcome> ExpectEqualTheEngine(
    LocalCluster& cluster, const std::vector<std::vector<int32_t>>& prompts,
    int32_t max_tokens) {
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  EXPECT_TRUE(engine.ok());
  std::vector<Outcome> got(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] {
      got[i] = Generate(cluster.client(), prompts[i], max_tokens);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_TRUE(got[i].status.ok())
        << "request " << i << ": " << got[i].status.error_message()
        << " (logs in " << cluster.log_dir() << ")";
    EXPECT_EQ(got[i].tokens, Reference(**engine, prompts[i], max_tokens))
        << "request " << i << " of " << prompts[i].size() << " tokens";
  }
  return got;
}

class ColocatedOnlyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ColocatedOnlyTest, ServesLikeTheSingleProcessEngine) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 0;
  o.num_decode = 0;
  o.num_colocated = 2;
  o.router_args = {"--policy", "colocated"};
  // A small budget so long prompts run as several chunks beside decodes.
  o.decode_args = {"--max-num-batched-tokens", "64", "--scheduling",
                   GetParam()};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::vector<Outcome> got =
      ExpectEqualTheEngine(**cluster, Prompts(16, 150), 12);
  for (const Outcome& g : got) {
    // The node's own queue and prefill (its first chunk reports them), no
    // handover; the prefill (first step to first token) and the decode
    // (first token to last) are disjoint spans of the client's call.
    const v1::Timings& t = g.finished.timings();
    EXPECT_GE(t.queue_ms(), 0.0);
    EXPECT_GT(t.prefill_ms(), 0.0);
    EXPECT_EQ(t.transfer_ms(), 0.0);
    EXPECT_LE(t.prefill_ms(), t.ttft_ms());
    EXPECT_GT(t.decode_ms(), 0.0);
    EXPECT_LE(t.prefill_ms() + t.decode_ms(), g.e2e_ms);
    EXPECT_NEAR(t.mean_itl_ms(), t.decode_ms() / 11, 1e-6);
    EXPECT_EQ(g.finished.usage().completion_tokens(), 12u);
  }
  // Cancelled mid-stream: blocks come back.
  for (int i = 0; i < 4; ++i) {
    const Outcome c = Generate((*cluster)->client(), Prompts(2, 90)[1], 200, 3);
    EXPECT_EQ(c.status.error_code(), grpc::StatusCode::CANCELLED);
  }
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

INSTANTIATE_TEST_SUITE_P(Scheduling, ColocatedOnlyTest,
                         ::testing::Values("piggyback", "prefill-first"),
                         [](const auto& info) {
                           return info.param == "piggyback" ? "Piggyback"
                                                            : "PrefillFirst";
                         });

TEST(ColocatedClusterTest, AutoSendsShortPromptsColocatedAndLongOnesDisagg) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 1;
  o.num_decode = 1;
  o.num_colocated = 1;
  o.router_args = {"--policy", "auto", "--auto-colocated-prompt-tokens", "64"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::vector<std::vector<int32_t>> prompts = Prompts(12, 100);
  const std::vector<Outcome> got = ExpectEqualTheEngine(**cluster, prompts, 8);
  int colocated = 0, disagg = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    // Only a disaggregated request has a KV handover to time.
    const bool ran_disagg = got[i].finished.timings().transfer_ms() > 0;
    EXPECT_EQ(ran_disagg, prompts[i].size() > 64)
        << "prompt of " << prompts[i].size() << " tokens";
    (ran_disagg ? disagg : colocated) += 1;
  }
  EXPECT_EQ(colocated, 6);
  EXPECT_EQ(disagg, 6);
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

// A colocated node is a decode node too: with --policy disagg and no plain
// decode node, the prefill node hands its KV to the colocated node.
TEST(ColocatedClusterTest, ColocatedNodeServesAsADecodeNodeUnderDisagg) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 1;
  o.num_decode = 0;
  o.num_colocated = 1;
  o.router_args = {"--policy", "disagg"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::vector<Outcome> got =
      ExpectEqualTheEngine(**cluster, Prompts(6, 40), 8);
  for (const Outcome& g : got) {
    EXPECT_GT(g.finished.timings().prefill_ms(), 0);
    EXPECT_GT(g.finished.timings().transfer_ms(), 0);
  }
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

// Without any colocated node, --policy colocated says what to start.
TEST(ColocatedClusterTest, ColocatedPolicyWithoutColocatedNodesIsUnavailable) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--policy", "colocated"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const Outcome g = Generate((*cluster)->client(), {5, 6, 7}, 4);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(g.status.error_message().find("--role colocated"),
            std::string::npos)
      << g.status.error_message();
}

}  // namespace
}  // namespace duet::testing
