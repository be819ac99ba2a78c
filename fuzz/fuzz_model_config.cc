// Fuzzes config.json and generation_config.json parsing: ParseModelConfig,
// then MergeGenerationConfig and RopeInvFreq on what it accepted, as
// LoadModelConfig and the model loader do.
//
// Input: config.json text, optionally followed by a NUL byte and
// generation_config.json text (valid JSON text never holds a raw NUL).
//
// Invariants checked on success: the sizes are positive, head_dim is even,
// num_attention_heads is a multiple of num_key_value_heads, rope_theta and
// rms_norm_eps are positive, and every EOS id lies in [0, vocab_size).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_util.h"
#include "model/config.h"

namespace {

using duet::fuzz::Check;
using duet::model::ModelConfig;

void CheckConfig(const ModelConfig& c, absl::string_view stage) {
  Check(c.vocab_size >= 1 && c.hidden_size >= 1 && c.intermediate_size >= 1 &&
            c.num_layers >= 1 && c.num_heads >= 1 && c.num_kv_heads >= 1 &&
            c.max_position_embeddings >= 1,
        "accepted a non-positive size", stage);
  Check(c.head_dim >= 2 && c.head_dim % 2 == 0, "accepted an odd head_dim",
        stage);
  Check(c.num_heads % c.num_kv_heads == 0,
        "num_attention_heads not a multiple of num_key_value_heads", stage);
  Check(c.rope_theta > 0 && c.rms_norm_eps > 0,
        "accepted a non-positive rope_theta or rms_norm_eps", stage);
  Check(c.bos_token_id >= -1, "bos_token_id below -1", stage);
  for (int32_t id : c.eos_token_ids) {
    Check(id >= 0 && id < c.vocab_size,
          "accepted an EOS id outside the vocabulary",
          absl::StrCat(stage, ": ", id));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const absl::string_view config_text = input.substr(0, nul);
  auto config = duet::model::ParseModelConfig(config_text);
  if (!config.ok()) {
    duet::fuzz::Note("config.json rejected", config.status().ToString());
    Check(absl::IsInvalidArgument(config.status()),
          "a rejected config.json must be InvalidArgument",
          config.status().ToString());
    return 0;
  }
  duet::fuzz::Note("config.json accepted");
  CheckConfig(*config, "config.json");
  (void)config->q_size();
  (void)config->kv_size();

  if (nul != absl::string_view::npos) {
    const absl::Status merged =
        duet::model::MergeGenerationConfig(input.substr(nul + 1), *config);
    duet::fuzz::Note("generation_config.json", merged.ToString());
    if (merged.ok()) {
      CheckConfig(*config, "after generation_config.json");
    } else {
      Check(absl::IsInvalidArgument(merged),
            "a rejected generation_config.json must be InvalidArgument",
            merged.ToString());
    }
  }

  // The transformer computes the RoPE table from every config it loads.
  // head_dim is only bounded by int32 here (the checkpoint's shapes bound it
  // at load time), so skip tables beyond any real model to stay within the
  // fuzzer's memory limit.
  if (config->head_dim <= (1 << 16)) {
    const auto inv_freq = duet::model::RopeInvFreq(*config);
    Check(inv_freq.size() == static_cast<size_t>(config->head_dim / 2),
          "RopeInvFreq size != head_dim / 2");
  }
  return 0;
}
