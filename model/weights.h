// The tensors of a Qwen3 / Llama checkpoint: their Hugging Face names and
// shapes, and loading them into backend memory (fusing Q/K/V and gate/up).
#ifndef DUET_MODEL_WEIGHTS_H_
#define DUET_MODEL_WEIGHTS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace duet::model {

enum class WeightKind { kEmbedding, kLinear, kNorm };

struct WeightSpec {
  std::string name;
  Shape shape;
  WeightKind kind;
  int64_t fan_in = 0;  // for kLinear: the input dimension
};

// Every tensor a checkpoint for `config` must hold, in a fixed order
// (embedding, then each layer, then final norm and lm_head when untied).
std::vector<WeightSpec> ExpectedWeights(const ModelConfig& config);

// Which slice of the model a rank holds under tensor parallelism (Megatron
// split, DESIGN.md §5): Q/K/V and gate/up split by output rows (this
// rank's heads / intermediate columns), o_proj and down by input columns;
// embedding, norms and lm_head replicated. {0, 1} is the whole model.
struct TpShard {
  int32_t rank = 0;
  int32_t size = 1;
};

// INVALID_ARGUMENT (naming both numbers) unless `shard.size` divides the
// attention heads, the KV heads and the intermediate size, and
// 0 <= rank < size.
absl::Status CheckTpShard(const ModelConfig& config, TpShard shard);

// `config` as one rank sees it: heads, KV heads and intermediate size
// divided by the shard size (the rest unchanged).
ModelConfig ShardConfig(const ModelConfig& config, TpShard shard);

// Shapes below are of one rank: nh, nkv and I are already divided by the
// shard size.
struct LayerWeights {
  kernels::Tensor input_norm;  // [H]
  kernels::Tensor qkv;         // [(nh + 2 nkv) * hd, H]  (q; k; v)
  kernels::Tensor q_norm;      // [hd] (Qwen3 only)
  kernels::Tensor k_norm;      // [hd] (Qwen3 only)
  kernels::Tensor o_proj;      // [H, nh * hd]
  kernels::Tensor post_norm;   // [H]
  kernels::Tensor gate_up;     // [2 I, H]  (gate; up)
  kernels::Tensor down;        // [H, I]
};

struct ModelWeights {
  kernels::Tensor embed;       // [V, H]
  std::vector<LayerWeights> layers;
  kernels::Tensor final_norm;  // [H]
  kernels::Tensor lm_head;     // [V, H]; empty when tied to embed
  kernels::Tensor inv_freq;    // [hd / 2] fp32

  const TensorView& lm_head_view() const {
    return lm_head.empty() ? embed.view() : lm_head.view();
  }
};

// Checks the checkpoint holds exactly ExpectedWeights(config) (missing, extra
// and wrongly shaped tensors are InvalidArgument naming the tensor), then
// converts and uploads `shard`'s slice of them to `backend`, reading only
// that slice of the memory-mapped file (row slices are uploaded in place;
// column slices go through one host buffer per tensor).
absl::StatusOr<ModelWeights> LoadWeights(const Checkpoint& checkpoint,
                                         const ModelConfig& config,
                                         kernels::Backend& backend,
                                         TpShard shard = {});

}  // namespace duet::model

#endif  // DUET_MODEL_WEIGHTS_H_
