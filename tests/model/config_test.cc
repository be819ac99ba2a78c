#include "model/config.h"

#include <cmath>
#include <numbers>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/synthetic.h"

namespace duet::model {
namespace {

using ::testing::HasSubstr;

nlohmann::json Qwen3Json() {
  return nlohmann::json::parse(*SyntheticConfigJson("qwen3-4b"));
}

absl::Status ParseStatus(const nlohmann::json& j) {
  return ParseModelConfig(j.dump()).status();
}

TEST(ConfigTest, ParsesQwen3) {
  auto c = ParseModelConfig(Qwen3Json().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen3);
  EXPECT_TRUE(c->qk_norm);
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->num_layers, 36);
  EXPECT_EQ(c->num_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->intermediate_size, 9728);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{151645});
}

TEST(ConfigTest, LlamaHasNoQkNormAndDefaultsHeadDim) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}},
                      {"vocab_size", 128256},
                      {"hidden_size", 4096},
                      {"intermediate_size", 14336},
                      {"num_hidden_layers", 32},
                      {"num_attention_heads", 32},
                      {"num_key_value_heads", 8},
                      {"max_position_embeddings", 131072},
                      {"rope_theta", 500000.0},
                      {"eos_token_id", {128001, 128008, 128009}}};
  auto c = ParseModelConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kLlama);
  EXPECT_FALSE(c->qk_norm);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->eos_token_ids.size(), 3u);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(ConfigTest, MissingFieldIsNamed) {
  for (const char* key : {"hidden_size", "num_hidden_layers", "vocab_size",
                          "num_attention_heads", "intermediate_size",
                          "max_position_embeddings"}) {
    nlohmann::json j = Qwen3Json();
    j.erase(key);
    const absl::Status s = ParseStatus(j);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(s.message(), HasSubstr(key));
  }
}

TEST(ConfigTest, RejectsBadValues) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* phrase;
  } cases[] = {
      {"hidden_size", "64", "must be an integer"},
      {"hidden_size", 0, "out of range"},
      {"num_hidden_layers", -1, "out of range"},
      {"num_key_value_heads", 7, "multiple of num_key_value_heads"},
      {"head_dim", 15, "even"},
      {"rms_norm_eps", "x", "must be a number"},
      {"rope_theta", 0, "finite number >= 1"},
      {"rope_theta", 1e-300, "finite number >= 1"},
      {"rms_norm_eps", 1e39, "positive finite float"},
      {"eos_token_id", 2147483648LL, "[0, 2^31)"},
      {"eos_token_id", {151645, 4294967296LL + 5}, "[0, 2^31)"},
      {"hidden_act", "gelu", "only silu"},
      {"attention_bias", true, "not supported"},
      {"torch_dtype", "float8", "unsupported dtype"},
      {"eos_token_id", 999999999, "outside the vocabulary"},
      {"tie_word_embeddings", "yes", "boolean"},
      {"rope_scaling", {{"rope_type", "yarn"}}, "not supported"},
      {"architectures", {"MistralForCausalLM"}, "not supported"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = Qwen3Json();
    j[c.key] = c.value;
    const absl::Status s = ParseStatus(j);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.key;
    EXPECT_THAT(s.message(), HasSubstr(c.phrase)) << c.key;
  }
}

TEST(ConfigTest, RejectsMalformedJson) {
  EXPECT_EQ(ParseModelConfig("{not json").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("[1, 2]").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, LoadModelConfigNamesMissingFile) {
  const absl::Status s = LoadModelConfig("/nonexistent/dir").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/dir/config.json"));
}

TEST(ConfigTest, GenerationConfigAddsEosIds) {
  auto c = ParseModelConfig(Qwen3Json().dump());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(
      MergeGenerationConfig(R"({"eos_token_id": [151645, 151643]})", *c).ok());
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{151645, 151643}));
  EXPECT_EQ(MergeGenerationConfig(R"({"eos_token_id": 999999999})", *c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeGenerationConfig(R"({"eos_token_id": 2147483648})", *c).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MergeGenerationConfig("nope", *c).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConfigTest, RopeInvFreqDefault) {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 1e6;
  const std::vector<float> f = RopeInvFreq(c);
  ASSERT_EQ(f.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    const double want = std::pow(1e6, -2.0 * i / 128.0);
    EXPECT_NEAR(f[i], want, want * 1e-6) << i;
  }
}

TEST(ConfigTest, RopeInvFreqLlama3Scaling) {
  // Llama-3.1 8B: theta 5e5, factor 8, low 1, high 4, original 8192.
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  c.rope_scaling.type = RopeScaling::Type::kLlama3;
  c.rope_scaling.factor = 8;
  c.rope_scaling.low_freq_factor = 1;
  c.rope_scaling.high_freq_factor = 4;
  c.rope_scaling.original_max_position_embeddings = 8192;
  const std::vector<float> f = RopeInvFreq(c);
  int low = 0, mid = 0, high = 0;
  for (int i = 0; i < 64; ++i) {
    const double base = std::pow(500000.0, -2.0 * i / 128.0);
    const double wavelen = 2 * std::numbers::pi / base;
    if (wavelen < 8192.0 / 4) {  // high frequency: unchanged
      EXPECT_NEAR(f[i], base, base * 1e-6);
      ++high;
    } else if (wavelen > 8192.0) {  // low frequency: divided by factor
      EXPECT_NEAR(f[i], base / 8, base / 8 * 1e-6);
      ++low;
    } else {  // smooth interpolation between the two
      EXPECT_LT(f[i], base * (1 + 1e-6));
      EXPECT_GT(f[i], base / 8 * (1 - 1e-6));
      ++mid;
    }
  }
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);
}

}  // namespace
}  // namespace duet::model
