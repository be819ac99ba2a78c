#include "model/synthetic.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/transformer.h"
#include "tests/testing/scratch.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

std::string TempDir(const std::string& name) {
  return absl::StrCat(::duet::testing::ScratchModelsDir(), "/duet_synth_", name,
                      "_", ::getpid());
}

TEST(SyntheticTest, SamePresetAndSeedGiveIdenticalBytes) {
  SyntheticOptions o;
  o.preset = "tiny";
  ASSERT_TRUE(WriteSyntheticCheckpoint(TempDir("a"), o).ok());
  ASSERT_TRUE(WriteSyntheticCheckpoint(TempDir("b"), o).ok());
  for (const char* f :
       {"config.json", "generation_config.json", "model.safetensors"}) {
    EXPECT_EQ(testing::Fnv1a64File(TempDir("a") + "/" + f),
              testing::Fnv1a64File(TempDir("b") + "/" + f))
        << f;
  }
  o.seed = 1;
  ASSERT_TRUE(WriteSyntheticCheckpoint(TempDir("c"), o).ok());
  EXPECT_NE(testing::Fnv1a64File(TempDir("a") + "/model.safetensors"),
            testing::Fnv1a64File(TempDir("c") + "/model.safetensors"));
}

TEST(SyntheticTest, ShardedCheckpointLoadsAndMatchesSingleFile) {
  SyntheticOptions o;
  o.preset = "tiny";
  o.max_shard_bytes = 8 << 20;  // tiny is ~39 MB: several shards
  const std::string dir = TempDir("sharded");
  ASSERT_TRUE(WriteSyntheticCheckpoint(dir, o).ok());
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));
  auto sharded = testing::LoadCpuModel(dir);
  auto single = testing::LoadCpuModel(testing::SyntheticModelDir("tiny"));
  ASSERT_TRUE(sharded && single);
  const auto prompt = testing::LcgPrompt(8, 100000);
  const std::vector<BlockId> blocks = {BlockId(0)};
  auto c1 = sharded->AllocateKvCache(16, 1);
  auto c2 = single->AllocateKvCache(16, 1);
  EXPECT_EQ(testing::PrefillAllLogits(*sharded, *c1, prompt, 8, blocks, 16),
            testing::PrefillAllLogits(*single, *c2, prompt, 8, blocks, 16));
}

TEST(SyntheticTest, PresetsMatchTheRealModelShapes) {
  struct Want {
    const char* preset;
    int hidden, layers, heads, kv, head_dim, inter;
    bool tied;
  } wants[] = {{"qwen3-0.6b", 1024, 28, 16, 8, 128, 3072, true},
               {"qwen3-4b", 2560, 36, 32, 8, 128, 9728, true},
               {"qwen3-8b", 4096, 36, 32, 8, 128, 12288, false},
               {"tiny", 64, 2, 4, 2, 16, 192, false}};
  for (const Want& w : wants) {
    auto text = SyntheticConfigJson(w.preset);
    ASSERT_TRUE(text.ok());
    auto c = ParseModelConfig(*text);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->hidden_size, w.hidden) << w.preset;
    EXPECT_EQ(c->num_layers, w.layers) << w.preset;
    EXPECT_EQ(c->num_heads, w.heads) << w.preset;
    EXPECT_EQ(c->num_kv_heads, w.kv) << w.preset;
    EXPECT_EQ(c->head_dim, w.head_dim) << w.preset;
    EXPECT_EQ(c->intermediate_size, w.inter) << w.preset;
    EXPECT_EQ(c->tie_word_embeddings, w.tied) << w.preset;
    EXPECT_EQ(c->vocab_size, 151936) << w.preset;
  }
  EXPECT_EQ(SyntheticConfigJson("qwen3-70b").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::model
