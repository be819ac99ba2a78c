#include "model/engine.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<Engine> NewEngine(EngineOptions options = {}) {
  auto engine = Engine::Create(
      testing::LoadCpuModel(testing::SyntheticModelDir("tiny")), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return std::move(*engine);
}

TEST(EngineTest, ChunkSizeAndBlockSizeDoNotChangeOutput) {
  const auto prompt = testing::LcgPrompt(70, 100000);
  SamplingParams params;
  params.max_tokens = 12;
  params.ignore_eos = true;
  auto reference = NewEngine()->Generate(prompt, params);
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_EQ(reference->tokens.size(), 12u);
  EXPECT_EQ(reference->decode_step_ms.size(), 11u);
  for (int32_t chunk : {1, 7, 64}) {
    for (int32_t block : {1, 16, 32}) {
      EngineOptions o;
      o.prefill_chunk_tokens = chunk;
      o.block_size = block;
      auto engine = NewEngine(o);
      auto got = engine->Generate(prompt, params);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->tokens, reference->tokens)
          << "chunk " << chunk << " block " << block;
      EXPECT_EQ(got->prefill_chunk_ms.size(),
                static_cast<size_t>((70 + chunk - 1) / chunk));
    }
  }
}

TEST(EngineTest, SampledGenerationIsReproducible) {
  auto engine = NewEngine();
  const auto prompt = testing::LcgPrompt(9, 100000);
  SamplingParams params;
  params.max_tokens = 16;
  params.temperature = 0.9f;
  params.top_p = 0.95f;
  params.top_k = 50;
  params.seed = 1234;
  params.ignore_eos = true;
  auto a = engine->Generate(prompt, params);
  auto b = engine->Generate(prompt, params);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  params.seed = 1235;
  auto c = engine->Generate(prompt, params);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->tokens, c->tokens);
}

TEST(EngineTest, StopsOnStopTokenAndIncludesIt) {
  auto engine = NewEngine();
  const auto prompt = testing::LcgPrompt(17, 100000);
  SamplingParams params;
  params.max_tokens = 10;
  params.ignore_eos = true;
  auto full = engine->Generate(prompt, params);
  ASSERT_TRUE(full.ok());
  params.stop_token_ids = {full->tokens[3]};
  auto stopped = engine->Generate(prompt, params);
  ASSERT_TRUE(stopped.ok());
  // Stops at the first occurrence of that token.
  const auto first = std::find(full->tokens.begin(), full->tokens.end(),
                               full->tokens[3]);
  const std::vector<int32_t> want(full->tokens.begin(), first + 1);
  EXPECT_EQ(stopped->tokens, want);
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStopToken);
}

TEST(EngineTest, RejectsInvalidRequestsWithClearErrors) {
  auto engine = NewEngine();
  const int32_t vocab = engine->config().vocab_size;
  SamplingParams ok;
  ok.max_tokens = 4;
  struct Case {
    std::vector<int32_t> prompt;
    SamplingParams params;
    const char* phrase;
  };
  SamplingParams bad_top_p = ok;
  bad_top_p.top_p = 0.0f;
  SamplingParams zero_tokens = ok;
  zero_tokens.max_tokens = 0;
  SamplingParams too_many = ok;
  too_many.max_tokens = engine->config().max_position_embeddings;
  const std::vector<Case> cases = {
      {{}, ok, "at least one token"},
      {{1, vocab}, ok, "outside the vocabulary"},
      {{1, -3}, ok, "outside the vocabulary"},
      {{1, 2}, bad_top_p, "top_p"},
      {{1, 2}, zero_tokens, "max_tokens"},
      {{1, 2}, too_many, "exceeds the model context"},
  };
  for (const Case& c : cases) {
    auto r = engine->Generate(c.prompt, c.params);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << c.phrase;
    EXPECT_THAT(r.status().message(), HasSubstr(c.phrase));
  }
  EXPECT_EQ(engine->block_pool().num_free(),
            engine->block_pool().num_blocks());
}

TEST(EngineTest, FullKvCacheIsResourceExhaustedAndFreesNothingWrong) {
  EngineOptions o;
  o.num_blocks = 2;  // 32 tokens of cache
  auto engine = NewEngine(o);
  SamplingParams params;
  params.max_tokens = 8;
  auto r = engine->Generate(testing::LcgPrompt(40, 100000), params);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(engine->block_pool().num_free(), 2);
  auto small = engine->Generate(testing::LcgPrompt(10, 100000), params);
  EXPECT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(engine->block_pool().num_free(), 2);
}

TEST(EngineTest, RejectsBadOptions) {
  EngineOptions o;
  o.block_size = 0;
  EXPECT_EQ(Engine::Create(testing::LoadCpuModel(
                               testing::SyntheticModelDir("tiny")),
                           o)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::model
