// Model hyper-parameters from a Hugging Face config.json (Qwen3 and
// Llama-3 families: the same decoder block, Qwen3 adds per-head QK RMSNorm).
#ifndef DUET_MODEL_CONFIG_H_
#define DUET_MODEL_CONFIG_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace duet::model {

enum class Architecture { kQwen3, kLlama };

// rope_scaling from config.json. kLlama3 is Llama-3.1's frequency-dependent
// scaling ("rope_type": "llama3"); other types are rejected at parse time.
struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kQwen3;
  std::string model_type;  // "qwen3", "llama"
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;
  int32_t intermediate_size = 0;
  int32_t num_layers = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qk_norm = false;  // true for Qwen3
  DType dtype = DType::kBF16;  // torch_dtype / dtype of the checkpoint
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;

  int32_t q_size() const { return num_heads * head_dim; }
  int32_t kv_size() const { return num_kv_heads * head_dim; }
};

// Parses and validates config.json text. Errors are InvalidArgument naming the
// field and what is wrong (missing, wrong type, out of range, unsupported).
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);
// Adds generation_config.json's eos_token_id (int or list) to
// config.eos_token_ids. InvalidArgument for malformed JSON or ids.
absl::Status MergeGenerationConfig(absl::string_view json_text,
                                   ModelConfig& config);
// Reads `<dir>/config.json`, and `<dir>/generation_config.json` when present.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

// RoPE inverse frequencies [head_dim / 2] as Hugging Face computes them
// (including llama3 scaling), rounded to fp32.
std::vector<float> RopeInvFreq(const ModelConfig& config);

// Reads a whole (small) file; NotFound / Internal with the path on failure.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace duet::model

#endif  // DUET_MODEL_CONFIG_H_
