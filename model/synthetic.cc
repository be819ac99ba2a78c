#include "model/synthetic.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/status.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace duet::model {
namespace {

struct Preset {
  const char* name;
  int hidden, intermediate, layers, heads, kv_heads, head_dim, max_pos;
  bool tied;
  bool llama = false;  // Llama-3.1 block (no QK-norm, llama3 RoPE scaling)
};

// Shapes of the real Qwen3 models (their config.json), plus a tiny one with
// the real vocabulary so the real Qwen3 tokenizer works with it. tiny has an
// untied lm_head: with random tied weights every token's own embedding
// dominates its logits, so greedy decoding would just repeat the last token
// and golden tests would not exercise attention.
constexpr Preset kPresets[] = {
    {"tiny", 64, 192, 2, 4, 2, 16, 4096, false},
    {"qwen3-0.6b", 1024, 3072, 28, 16, 8, 128, 40960, true},
    {"qwen3-4b", 2560, 9728, 36, 32, 8, 128, 40960, true},
    {"qwen3-8b", 4096, 12288, 36, 32, 8, 128, 40960, false},
    {"tiny-llama", 64, 192, 2, 4, 2, 16, 4096, false, true},
    // The Qwen3-0.6B block (16 heads, 8 KV heads, head_dim 128,
    // intermediate 3072, tied vocabulary) with 2 layers: tensor-parallel
    // tests at TP 2 and 4 on the real head geometry, small enough for CI.
    {"qwen3-0.6b-2l", 1024, 3072, 2, 16, 8, 128, 40960, true},
};
constexpr int kQwenVocab = 151936;
constexpr int kLlamaVocab = 128256;

const Preset* FindPreset(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name == p.name) return &p;
  }
  return nullptr;
}

uint64_t HashName(const std::string& s) {  // FNV-1a
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

// Uniform in [-1, 1) with 24 random bits: exact in fp32.
float UniformSigned(uint64_t key, uint64_t index) {
  const uint64_t bits = SplitMix64(key + SplitMix64(index));
  const float u = static_cast<float>(bits >> 40) * 0x1.0p-24f;  // [0, 1)
  return 2.0f * u - 1.0f;
}

// Half-width of the uniform distribution per tensor kind. Embedding rows have
// rms 4/sqrt(3H)·sqrt(H) so logits have a spread of a few units (a clear
// argmax); linears are 1/sqrt(fan_in) so activations keep their scale; norm
// weights are 1 +- 0.1 so every norm actually scales.
float Amplitude(const WeightSpec& spec, int hidden) {
  switch (spec.kind) {
    case WeightKind::kEmbedding:
      return 4.0f / std::sqrt(static_cast<float>(hidden));
    case WeightKind::kLinear:
      return 1.0f / std::sqrt(static_cast<float>(spec.fan_in));
    case WeightKind::kNorm:
      return 0.1f;
  }
  return 0.0f;
}

nlohmann::ordered_json ConfigJson(const Preset& p) {
  nlohmann::ordered_json j;
  j["architectures"] = {p.llama ? "LlamaForCausalLM" : "Qwen3ForCausalLM"};
  j["model_type"] = p.llama ? "llama" : "qwen3";
  j["vocab_size"] = p.llama ? kLlamaVocab : kQwenVocab;
  j["hidden_size"] = p.hidden;
  j["intermediate_size"] = p.intermediate;
  j["num_hidden_layers"] = p.layers;
  j["num_attention_heads"] = p.heads;
  j["num_key_value_heads"] = p.kv_heads;
  j["head_dim"] = p.head_dim;
  j["max_position_embeddings"] = p.max_pos;
  j["rms_norm_eps"] = 1e-06;
  if (p.llama) {
    j["rope_theta"] = 500000;
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
  } else {
    j["rope_theta"] = 1000000;
    j["rope_scaling"] = nullptr;
  }
  j["hidden_act"] = "silu";
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["tie_word_embeddings"] = p.tied;
  j["torch_dtype"] = "bfloat16";
  j["bos_token_id"] = p.llama ? 128000 : 151643;
  j["eos_token_id"] = p.llama ? 128001 : 151645;
  j["use_cache"] = true;
  if (p.llama) {
    j["mlp_bias"] = false;
  } else {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = p.layers;
  }
  j["initializer_range"] = 0.02;
  return j;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> SyntheticPresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

absl::StatusOr<std::string> SyntheticConfigJson(const std::string& preset) {
  const Preset* p = FindPreset(preset);
  if (p == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown preset '", preset,
        "' (known: ", absl::StrJoin(SyntheticPresetNames(), ", "), ")"));
  }
  return ConfigJson(*p).dump(2) + "\n";
}

absl::Status WriteSyntheticCheckpoint(const std::string& dir,
                                      const SyntheticOptions& options) {
  DUET_ASSIGN_OR_RETURN(const std::string config_text,
                        SyntheticConfigJson(options.preset));
  DUET_ASSIGN_OR_RETURN(const ModelConfig config,
                        ParseModelConfig(config_text));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  DUET_RETURN_IF_ERROR(WriteText(dir + "/config.json", config_text));
  nlohmann::ordered_json gen;
  gen["bos_token_id"] = config.bos_token_id;
  gen["eos_token_id"] = config.eos_token_ids.front();
  gen["do_sample"] = false;
  DUET_RETURN_IF_ERROR(
      WriteText(dir + "/generation_config.json", gen.dump(2) + "\n"));

  const std::vector<WeightSpec> weights = ExpectedWeights(config);
  std::vector<TensorSpec> specs;
  for (const WeightSpec& w : weights) {
    specs.push_back({w.name, DType::kBF16, w.shape});
  }
  const uint64_t seed = options.seed;
  const int hidden = config.hidden_size;
  auto fill = [&](size_t index, std::span<std::byte> out) -> absl::Status {
    const WeightSpec& w = weights[index];
    const uint64_t key = SplitMix64(seed ^ HashName(w.name));
    const float amp = Amplitude(w, hidden);
    const float center = w.kind == WeightKind::kNorm ? 1.0f : 0.0f;
    auto* dst = reinterpret_cast<uint16_t*>(out.data());
    const size_t n = out.size() / 2;
    for (size_t i = 0; i < n; ++i) {
      dst[i] = FloatToBf16(center + amp * UniformSigned(key, i));
    }
    return absl::OkStatus();
  };
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"duet_preset", options.preset},
      {"duet_seed", std::to_string(seed)}};
  return WriteCheckpoint(dir, specs, fill, options.max_shard_bytes, metadata);
}

}  // namespace duet::model
