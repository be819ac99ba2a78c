// Loading a checkpoint that does not fit its config.json fails with a clear
// error naming the tensor: missing, extra, wrongly shaped tensors.
#include "model/weights.h"

#include <cstring>
#include <filesystem>
#include <functional>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/transformer.h"
#include "tests/testing/scratch.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

using ::testing::HasSubstr;

// Copies the tiny checkpoint into a new directory, letting `edit` change the
// tensor list (drop, add, reshape) before writing.
std::string RewriteTiny(
    const std::string& name,
    const std::function<void(std::vector<TensorSpec>&)>& edit) {
  const std::string& src = testing::SyntheticModelDir("tiny");
  const std::string dir =
      absl::StrCat(::duet::testing::ScratchModelsDir(), "/duet_weights_", name);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto ckpt = Checkpoint::Open(src);
  EXPECT_TRUE(ckpt.ok());
  std::vector<TensorSpec> specs;
  for (const std::string& n : (*ckpt)->Names()) {
    const TensorInfo* info = *(*ckpt)->Find(n);
    specs.push_back({n, info->dtype, info->shape});
  }
  edit(specs);
  auto fill = [&](size_t i, std::span<std::byte> out) -> absl::Status {
    auto info = (*ckpt)->Find(specs[i].name);
    if (info.ok() && (*info)->nbytes == out.size()) {
      std::memcpy(out.data(), (*info)->data, out.size());
    } else {
      for (size_t b = 0; b < out.size(); ++b) out[b] = std::byte(b * 7 + 1);
    }
    return absl::OkStatus();
  };
  const absl::Status s = WriteCheckpoint(dir, specs, fill, 0);
  EXPECT_TRUE(s.ok()) << s;
  return dir;
}

absl::Status LoadStatus(const std::string& dir) {
  return Transformer::Load(dir, kernels::MakeCpuBackend()).status();
}

TEST(WeightsTest, ExpectedWeightsCountsForQwen3AndLlama) {
  ModelConfig c;
  c.vocab_size = 10;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.qk_norm = true;
  c.tie_word_embeddings = true;
  EXPECT_EQ(ExpectedWeights(c).size(), 1u + 2 * 11 + 1);
  c.qk_norm = false;
  c.tie_word_embeddings = false;
  EXPECT_EQ(ExpectedWeights(c).size(), 1u + 2 * 9 + 2);
}

TEST(WeightsTest, MissingTensorIsNamed) {
  const std::string dir = RewriteTiny("missing", [](auto& specs) {
    std::erase_if(specs, [](const TensorSpec& s) {
      return s.name == "model.layers.1.self_attn.k_norm.weight";
    });
  });
  const absl::Status s = LoadStatus(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("missing tensor "
                                     "'model.layers.1.self_attn.k_norm."
                                     "weight'"));
}

TEST(WeightsTest, ExtraTensorIsNamed) {
  const std::string dir = RewriteTiny("extra", [](auto& specs) {
    specs.push_back(
        {"model.layers.0.self_attn.q_proj.bias", DType::kBF16, {64}});
  });
  const absl::Status s = LoadStatus(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("unexpected tensor 'model.layers.0.self_attn.q_proj."
                        "bias'"));
}

TEST(WeightsTest, WrongShapeIsNamedWithBothShapes) {
  const std::string dir = RewriteTiny("shape", [](auto& specs) {
    for (TensorSpec& s : specs) {
      if (s.name == "model.layers.0.mlp.down_proj.weight") s.shape = {64, 190};
    }
  });
  const absl::Status s = LoadStatus(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.layers.0.mlp.down_proj.weight"));
  EXPECT_THAT(s.message(), HasSubstr("[64, 190]"));
  EXPECT_THAT(s.message(), HasSubstr("[64, 192]"));
}

TEST(WeightsTest, Fp32AndFp16CheckpointsLoadToo) {
  // The same weights stored as f32 give the same logits as bf16 (bf16 values
  // are exact in f32).
  const std::string dir = RewriteTiny("f32", [](auto& specs) {
    for (TensorSpec& s : specs) s.dtype = DType::kF32;
  });
  // RewriteTiny copies bytes only when sizes match; convert explicitly.
  auto src = Checkpoint::Open(testing::SyntheticModelDir("tiny"));
  ASSERT_TRUE(src.ok());
  std::vector<TensorSpec> specs;
  for (const std::string& n : (*src)->Names()) {
    specs.push_back({n, DType::kF32, (*(*src)->Find(n))->shape});
  }
  ASSERT_TRUE(WriteCheckpoint(
                  dir, specs,
                  [&](size_t i, std::span<std::byte> out) {
                    const TensorInfo* info = *(*src)->Find(specs[i].name);
                    ConvertToF32(info->dtype, info->data, out.size() / 4,
                                 reinterpret_cast<float*>(out.data()));
                    return absl::OkStatus();
                  },
                  0)
                  .ok());
  auto a = testing::LoadCpuModel(testing::SyntheticModelDir("tiny"));
  auto b = testing::LoadCpuModel(dir);
  ASSERT_TRUE(a && b);
  const std::vector<int32_t> prompt = testing::LcgPrompt(5, 1000);
  std::vector<BlockId> blocks = {BlockId(0)};
  auto ca = a->AllocateKvCache(16, 1);
  auto cb = b->AllocateKvCache(16, 1);
  const auto la = testing::PrefillAllLogits(*a, *ca, prompt, 5, blocks, 16);
  const auto lb = testing::PrefillAllLogits(*b, *cb, prompt, 5, blocks, 16);
  EXPECT_EQ(la, lb);
}

}  // namespace
}  // namespace duet::model
