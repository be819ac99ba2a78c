// Deterministic synthetic checkpoints in Hugging Face layout (config.json +
// bf16 safetensors) for named model shapes. Same preset + seed gives
// byte-identical files on any machine: values come from integer hashing and
// exact float arithmetic only (no libm, no std distributions).
#ifndef DUET_MODEL_SYNTHETIC_H_
#define DUET_MODEL_SYNTHETIC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"

namespace duet::model {

// "tiny", "qwen3-0.6b", "qwen3-4b", "qwen3-8b", "tiny-llama" (the
// Llama-3.1 block at tiny size, for checking the Llama path) and
// "qwen3-0.6b-2l" (the 0.6B block with 2 layers, for tensor parallelism).
std::vector<std::string> SyntheticPresetNames();
// config.json contents for a preset; InvalidArgument for an unknown name.
absl::StatusOr<std::string> SyntheticConfigJson(const std::string& preset);

struct SyntheticOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  // 0 = one model.safetensors; else shards of at most this many bytes.
  uint64_t max_shard_bytes = 0;
};

// Writes config.json, generation_config.json and the weights into `dir`
// (created if missing).
absl::Status WriteSyntheticCheckpoint(const std::string& dir,
                                      const SyntheticOptions& options);

}  // namespace duet::model

#endif  // DUET_MODEL_SYNTHETIC_H_
