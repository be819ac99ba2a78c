// OpenAI sampling features through a real cluster (tiny model, CPU
// backend): presence / frequency / repetition penalties, min_p, seeds and
// logprobs give the single-process engine's tokens, and logprobs within
// 1e-4 of the engine's, on both serving paths: disaggregated (token 1 and
// its logprobs from the prefill node, the rest from the decode node, whose
// penalties must count token 1) and colocated (--policy auto sends short
// prompts to the colocated node).
#include <grpcpp/grpcpp.h>

#include <thread>

#include "gtest/gtest.h"
#include "model/engine.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<v1::TokenLogprobs> logprobs;
  v1::GenerationFinished finished;
};

Outcome Generate(v1::Duet::Stub& stub, const std::vector<int32_t>& prompt,
                 const v1::SamplingParams& sampling) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  *req.mutable_sampling() = sampling;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  Outcome out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      out.tokens.insert(out.tokens.end(), msg.chunk().token_ids().begin(),
                        msg.chunk().token_ids().end());
      out.logprobs.insert(out.logprobs.end(), msg.chunk().logprobs().begin(),
                          msg.chunk().logprobs().end());
    } else if (msg.has_finished()) {
      out.finished = msg.finished();
    }
  }
  out.status = reader->Finish();
  return out;
}

struct Case {
  const char* name;
  v1::SamplingParams proto;
  model::SamplingParams params;  // the same, as the engine takes it
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  auto add = [&](const char* name, auto&& set) {
    Case c{name, {}, {}};
    c.proto.set_max_tokens(14);
    c.proto.set_ignore_eos(true);
    c.params.max_tokens = 14;
    c.params.ignore_eos = true;
    set(c.proto, c.params);
    cases.push_back(c);
  };
  add("greedy_penalties", [](v1::SamplingParams& p, model::SamplingParams& m) {
    p.set_seed(1);
    m.seed = 1;
    p.set_presence_penalty(0.8f);
    m.presence_penalty = 0.8f;
    p.set_frequency_penalty(0.6f);
    m.frequency_penalty = 0.6f;
    p.set_repetition_penalty(1.3f);
    m.repetition_penalty = 1.3f;
    p.set_logprobs(true);
    m.logprobs = true;
    p.set_top_logprobs(5);
    m.top_logprobs = 5;
  });
  add("seeded_min_p_penalties",
      [](v1::SamplingParams& p, model::SamplingParams& m) {
        p.set_seed(42);
        m.seed = 42;
        p.set_temperature(0.9f);
        m.temperature = 0.9f;
        p.set_min_p(0.05f);
        m.min_p = 0.05f;
        p.set_frequency_penalty(1.5f);
        m.frequency_penalty = 1.5f;
        p.set_repetition_penalty(0.7f);
        m.repetition_penalty = 0.7f;
        p.set_logprobs(true);
        m.logprobs = true;
      });
  add("seeded_topk_topp_presence",
      [](v1::SamplingParams& p, model::SamplingParams& m) {
        p.set_seed(7);
        m.seed = 7;
        p.set_temperature(1.2f);
        m.temperature = 1.2f;
        p.set_top_k(40);
        m.top_k = 40;
        p.set_top_p(0.9f);
        m.top_p = 0.9f;
        p.set_min_p(0.1f);
        m.min_p = 0.1f;
        p.set_presence_penalty(-1.0f);
        m.presence_penalty = -1.0f;
        p.set_logprobs(true);
        m.logprobs = true;
        p.set_top_logprobs(20);
        m.top_logprobs = 20;
      });
  add("seeded_no_logprobs",
      [](v1::SamplingParams& p, model::SamplingParams& m) {
        p.set_seed(9);
        m.seed = 9;
        p.set_temperature(0.7f);
        m.temperature = 0.7f;
        p.set_frequency_penalty(2.0f);
        m.frequency_penalty = 2.0f;
      });
  return cases;
}

std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> prompts;
  // Short ones run colocated, long ones disaggregated (threshold 32); the
  // prompts repeat tokens so repetition_penalty has work.
  for (int len : {5, 20, 70, 140}) {
    std::vector<int32_t> p;
    for (int k = 0; k < len; ++k) p.push_back((k * 7 + len) % 60 + 1);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

TEST(SamplingClusterTest, PenaltiesMinPAndLogprobsEqualTheEngine) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.num_prefill = 1;
  o.num_decode = 1;
  o.num_colocated = 1;
  o.router_args = {"--policy", "auto", "--auto-colocated-prompt-tokens", "32"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto engine = model::Engine::Create(LoadCpuModel(SyntheticModelDir("tiny")),
                                      model::EngineOptions{});
  ASSERT_TRUE(engine.ok()) << engine.status();

  const std::vector<Case> cases = Cases();
  const std::vector<std::vector<int32_t>> prompts = Prompts();
  std::vector<Outcome> got(cases.size() * prompts.size());
  std::vector<std::thread> threads;
  for (size_t c = 0; c < cases.size(); ++c) {
    for (size_t p = 0; p < prompts.size(); ++p) {
      threads.emplace_back([&, c, p] {
        got[c * prompts.size() + p] =
            Generate((*cluster)->client(), prompts[p], cases[c].proto);
      });
    }
  }
  for (auto& t : threads) t.join();
  int disagg = 0, logprob_tokens = 0;
  bool penalties_changed_output = false;
  for (size_t c = 0; c < cases.size(); ++c) {
    for (size_t p = 0; p < prompts.size(); ++p) {
      const Outcome& g = got[c * prompts.size() + p];
      SCOPED_TRACE(::testing::Message()
                   << cases[c].name << ", prompt of " << prompts[p].size()
                   << " tokens (logs in " << (*cluster)->log_dir() << ")");
      ASSERT_TRUE(g.status.ok()) << g.status.error_message();
      // Only a disaggregated request has a KV handover to time.
      disagg += g.finished.timings().transfer_ms() > 0;
      auto want = (*engine)->Generate(prompts[p], cases[c].params);
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(g.tokens, want->tokens);
      // Without penalties the tiny model repeats itself.
      model::SamplingParams plain = cases[c].params;
      plain.presence_penalty = plain.frequency_penalty = 0.0f;
      plain.repetition_penalty = 1.0f;
      auto unpenalized = (*engine)->Generate(prompts[p], plain);
      ASSERT_TRUE(unpenalized.ok());
      penalties_changed_output |= unpenalized->tokens != want->tokens;
      if (!cases[c].params.logprobs) {
        EXPECT_TRUE(g.logprobs.empty());
        continue;
      }
      ASSERT_EQ(g.logprobs.size(), want->logprobs.size());
      for (size_t i = 0; i < want->logprobs.size(); ++i) {
        const kernels::TokenLogprobs& w = want->logprobs[i];
        const v1::TokenLogprobs& l = g.logprobs[i];
        EXPECT_NEAR(l.logprob(), w.logprob, 1e-4) << "token " << i;
        EXPECT_LE(l.logprob(), 0.0f);
        ASSERT_EQ(l.top_token_ids_size(), w.num_top) << "token " << i;
        ASSERT_EQ(w.num_top, cases[c].params.top_logprobs);
        for (int j = 0; j < w.num_top; ++j) {
          EXPECT_EQ(l.top_token_ids(j), w.top_ids[j]);
          EXPECT_NEAR(l.top_logprobs(j), w.top_logprobs[j], 1e-4);
        }
        ++logprob_tokens;
      }
    }
  }
  // Short prompts always run colocated; long ones disaggregated unless the
  // prefill node's queue is past --auto-prefill-queue-tokens.
  EXPECT_GT(disagg, 0);
  EXPECT_LE(disagg, static_cast<int>(cases.size()) * 2);
  EXPECT_GT(logprob_tokens, 100);
  EXPECT_TRUE(penalties_changed_output);
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(SamplingClusterTest, OutOfRangeParamsNameTheField) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  struct Bad {
    void (*set)(v1::SamplingParams&);
    const char* phrase;
  };
  const Bad bad[] = {
      {[](v1::SamplingParams& p) { p.set_presence_penalty(2.5f); },
       "sampling.presence_penalty must be in [-2, 2]"},
      {[](v1::SamplingParams& p) { p.set_frequency_penalty(-3.0f); },
       "sampling.frequency_penalty must be in [-2, 2]"},
      {[](v1::SamplingParams& p) { p.set_repetition_penalty(-1.0f); },
       "sampling.repetition_penalty must be a finite number > 0"},
      {[](v1::SamplingParams& p) { p.set_min_p(1.5f); },
       "sampling.min_p must be in [0, 1]"},
      {[](v1::SamplingParams& p) {
         p.set_logprobs(true);
         p.set_top_logprobs(21);
       },
       "sampling.top_logprobs must be in [0, 20]"},
      {[](v1::SamplingParams& p) { p.set_top_logprobs(2); },
       "sampling.top_logprobs needs sampling.logprobs"},
  };
  for (const Bad& b : bad) {
    v1::SamplingParams p;
    p.set_max_tokens(4);
    b.set(p);
    const Outcome g = Generate((*cluster)->client(), {5, 6, 7}, p);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(g.status.error_message().find(b.phrase), std::string::npos)
        << g.status.error_message();
  }
}

}  // namespace
}  // namespace duet::testing
