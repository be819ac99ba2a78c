// The CPU engine against Hugging Face transformers (fp32, eager attention) on
// the same synthetic checkpoints. Goldens: tests/golden/*.json, made by
// scripts/make_golden.py (see its header for the command).
#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/engine.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

using Json = nlohmann::json;

struct GoldenCase {
  const char* preset;
  const char* file;
};

Json LoadGolden(const char* file) {
  std::ifstream in(absl::StrCat(DUET_SOURCE_DIR, "/tests/golden/", file));
  EXPECT_TRUE(in.good()) << file;
  return Json::parse(in);
}

// Every sampled logit within 1e-4 of the row's largest |logit| (the scale of
// the row), and the top-10 ids identical.
void ExpectLogitsMatch(const float* row, int32_t vocab, const Json& golden,
                       int32_t stride, const std::string& where) {
  const auto& ref = golden["stride_values"];
  ASSERT_EQ(static_cast<int32_t>(ref.size()), (vocab + stride - 1) / stride);
  double scale = 0;
  for (const auto& v : ref) scale = std::max(scale, std::abs(v.get<double>()));
  const double tol = 1e-4 * scale;
  int mismatches = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double want = ref[i].get<double>();
    const double got = row[i * stride];
    if (std::abs(got - want) > tol && ++mismatches <= 5) {
      ADD_FAILURE() << where << " vocab id " << i * stride << ": got " << got
                    << ", transformers " << want << " (tol " << tol << ")";
    }
  }
  EXPECT_EQ(mismatches, 0) << where;
  const auto& top_ids = golden["top_ids"];
  const auto& top_values = golden["top_values"];
  for (size_t k = 0; k < top_ids.size(); ++k) {
    const int32_t id = top_ids[k].get<int32_t>();
    EXPECT_NEAR(row[id], top_values[k].get<double>(), tol)
        << where << " top-" << k << " id " << id;
  }
}

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, CheckpointBytesMatchTheGoldenRun) {
  const Json golden = LoadGolden(GetParam().file);
  const std::string& dir = testing::SyntheticModelDir(GetParam().preset);
  for (const auto& [name, hash] : golden["files_fnv1a64"].items()) {
    EXPECT_EQ(testing::Fnv1a64File(dir + "/" + name), hash.get<std::string>())
        << name << " differs from the file the goldens were made from: "
        << "duet-make-model is no longer deterministic, or the preset changed "
        << "(re-run scripts/make_golden.py)";
  }
}

TEST_P(GoldenTest, PrefillLogitsMatchTransformers) {
  const Json golden = LoadGolden(GetParam().file);
  auto model = testing::LoadCpuModel(testing::SyntheticModelDir(
      GetParam().preset));
  ASSERT_NE(model, nullptr);
  const int32_t vocab = model->config().vocab_size;
  const int32_t stride = golden["vocab_stride"].get<int32_t>();
  constexpr int32_t kBlock = 16;
  auto cache = model->AllocateKvCache(kBlock, 32);
  ASSERT_TRUE(cache.ok()) << cache.status();
  std::vector<BlockId> blocks;
  for (int32_t b = 0; b < 32; ++b) blocks.push_back(BlockId(b));
  for (const Json& c : golden["cases"]) {
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    const std::vector<float> logits = testing::PrefillAllLogits(
        *model, *cache, prompt, static_cast<int32_t>(prompt.size()), blocks,
        kBlock);
    ASSERT_EQ(logits.size(), prompt.size() * vocab);
    const auto positions = c["positions"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < positions.size(); ++i) {
      ExpectLogitsMatch(logits.data() + int64_t{positions[i]} * vocab, vocab,
                        c["logits"][i], stride,
                        absl::StrCat("prompt of ", prompt.size(),
                                     " tokens, position ", positions[i]));
    }
  }
}

TEST_P(GoldenTest, GreedyContinuationMatchesTransformers) {
  const Json golden = LoadGolden(GetParam().file);
  auto model = testing::LoadCpuModel(testing::SyntheticModelDir(
      GetParam().preset));
  ASSERT_NE(model, nullptr);
  EngineOptions options;
  options.prefill_chunk_tokens = 64;  // the 100- and 300-token prompts chunk
  auto engine = Engine::Create(std::move(model), options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (const Json& c : golden["cases"]) {
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    const auto want = c["greedy"].get<std::vector<int32_t>>();
    SamplingParams params;
    params.max_tokens = static_cast<int32_t>(want.size());
    params.ignore_eos = true;
    auto result = (*engine)->Generate(prompt, params);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, want) << "prompt of " << prompt.size()
                                    << " tokens";
    EXPECT_EQ(result->finish_reason, FinishReason::kMaxTokens);
  }
  EXPECT_EQ((*engine)->block_pool().num_free(),
            (*engine)->block_pool().num_blocks());
}

TEST_P(GoldenTest, DecodeLogitsAfterGreedyMatchTransformers) {
  // Prefill, then decode the golden continuation token by token through the
  // paged decode path; the last step's logits must match transformers' full
  // forward over prompt + continuation.
  const Json golden = LoadGolden(GetParam().file);
  auto model = testing::LoadCpuModel(testing::SyntheticModelDir(
      GetParam().preset));
  ASSERT_NE(model, nullptr);
  const int32_t vocab = model->config().vocab_size;
  constexpr int32_t kBlock = 16;
  auto cache = model->AllocateKvCache(kBlock, 32);
  ASSERT_TRUE(cache.ok());
  std::vector<BlockId> blocks;
  for (int32_t b = 31; b >= 0; --b) blocks.push_back(BlockId(b));
  for (const Json& c : golden["cases"]) {
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    const auto greedy = c["greedy"].get<std::vector<int32_t>>();
    testing::PrefillAllLogits(*model, *cache, prompt, 128, blocks, kBlock);
    std::vector<float> logits;
    int32_t cached = static_cast<int32_t>(prompt.size());
    for (size_t i = 0; i + 1 < greedy.size(); ++i) {
      const SeqChunk chunk{{&greedy[i], 1}, cached++, blocks};
      auto step = BuildStep(kernels::AttentionMode::kDecode, {&chunk, 1},
                            kBlock);
      ASSERT_TRUE(step.ok());
      auto out = model->Forward(*step, *cache, kBlock);
      ASSERT_TRUE(out.ok()) << out.status();
      logits = std::move(*out);
    }
    ASSERT_EQ(static_cast<int32_t>(logits.size()), vocab);
    ExpectLogitsMatch(logits.data(), vocab, c["greedy_last_logits"],
                      golden["vocab_stride"].get<int32_t>(),
                      absl::StrCat("last decode step after a prompt of ",
                                   prompt.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Presets, GoldenTest,
    ::testing::Values(GoldenCase{"tiny", "tiny.json"},
                      GoldenCase{"tiny-llama", "tiny_llama.json"}),
    [](const auto& info) {
      return std::string(info.param.preset) == "tiny" ? "Qwen3Tiny"
                                                      : "LlamaTiny";
    });

}  // namespace
}  // namespace duet::model
