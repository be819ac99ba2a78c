// The model runner: one backend (CPU or one CUDA device), the weights on it,
// the paged KV pool and (inside the Transformer) the decode CUDA graphs. It
// runs one planned step and returns the sampled tokens; it keeps no request
// state, so any role's loop can drive it.
#ifndef DUET_RUNTIME_MODEL_RUNNER_H_
#define DUET_RUNTIME_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/strong_id.h"
#include "kernels/sampling.h"
#include "kv_transfer/kv_transfer.h"
#include "model/kv_cache.h"
#include "model/tp_ranks.h"
#include "model/transformer.h"
#include "runtime/backend_factory.h"

namespace duet::runtime {

struct ModelRunnerOptions {
  int32_t block_size = 16;
  // KV pool size in blocks; 0 = sized from memory: on a GPU, a
  // kv_cache_memory_fraction share of the device's memory minus what this
  // process already uses (weights, the activations of a
  // max_num_batched_tokens step, the CUDA context); on the CPU backend,
  // cpu_default_blocks.
  int32_t num_kv_blocks = 0;
  double kv_cache_memory_fraction = 0.9;
  // The largest step the caller will run (the memory profile runs one).
  int32_t max_num_batched_tokens = 2048;
  int32_t cpu_default_blocks = 1024;
};

// One sequence's share of a step: `tokens` go after the `num_cached`
// tokens already in `blocks`; `sample` draws the token after the last one,
// its penalties reading `seen` (model::SeenTokens).
struct RunChunk {
  std::span<const int32_t> tokens;
  int32_t num_cached = 0;
  std::span<const BlockId> blocks;
  std::optional<kernels::SampleSpec> sample;
  std::span<const kernels::SeenToken> seen;
};

class ModelRunner {
 public:
  // Loads the checkpoint in `model_dir` onto `backend` and allocates the KV
  // pool. InvalidArgument for bad options, RESOURCE_EXHAUSTED when the
  // memory share leaves no room for a KV pool (the message says how much
  // is used and free and what to change).
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(
      BackendChoice backend, const std::string& model_dir,
      const ModelRunnerOptions& options);
  // An already loaded model (tests): the pool is sized like Create's.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(
      BackendChoice backend, std::unique_ptr<model::Transformer> model,
      const ModelRunnerOptions& options);
  // Tensor parallelism: one rank per backend (MakeBackends), each with its
  // slice of the model and its own KV pool of the same number of blocks
  // (the smallest any rank has room for); every step runs on all ranks.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Create(
      std::vector<BackendChoice> backends, const std::string& model_dir,
      const ModelRunnerOptions& options);

  // Runs one step over `chunks` and returns one token per chunk with a
  // sample spec, in order. A step whose chunks all have one token runs as a
  // decode step (CUDA graphs), any other as a prefill step. `on_layer` (may
  // be null) is called as each layer's KV writes are queued (see
  // model::Transformer::LayerHook). `logprobs` (may be null) gets one entry
  // per token returned, set where the chunk's spec asks (num_logprobs >= 0).
  absl::StatusOr<std::vector<int32_t>> Run(
      std::span<const RunChunk> chunks,
      const model::Transformer::LayerHook& on_layer = nullptr,
      std::vector<kernels::TokenLogprobs>* logprobs = nullptr);

  const model::ModelConfig& config() const {
    return ranks_.models[0]->config();
  }
  // Rank 0's backend: marks taken on it after a layer's all-reduce cover
  // every rank's KV writes of that layer (see Transformer::LayerHook).
  kernels::Backend& backend() { return ranks_.models[0]->backend(); }
  int32_t block_size() const { return options_.block_size; }
  int32_t num_blocks() const { return num_blocks_; }
  // Rank 0's CUDA device, -1 on the CPU.
  int32_t device() const { return devices_[0]; }
  const std::string& backend_description() const { return description_; }
  // The node's layout: tp_size ranks, tp_rank 0.
  const kv_transfer::KvLayout& layout() const { return layout_; }
  int32_t tensor_parallel_size() const { return ranks_.size(); }
  kernels::Backend& rank_backend(int32_t rank) {
    return ranks_.models[static_cast<size_t>(rank)]->backend();
  }
  int32_t rank_device(int32_t rank) const {
    return devices_[static_cast<size_t>(rank)];
  }
  // Rank `rank`'s pool as kv_transfer sees it (layout.tp_rank = rank).
  kv_transfer::KvPoolView pool_view(int32_t rank = 0) const;
  // "4096 KV blocks x 16 tokens = 65536 tokens (9.0 GiB)".
  std::string PoolSummary() const;

 private:
  ModelRunner() = default;
  // Sizes and allocates every rank's pool.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Finish(
      std::vector<BackendChoice>& backends, model::TpRanks ranks,
      const ModelRunnerOptions& options);

  model::TpRanks ranks_;
  ModelRunnerOptions options_;
  std::vector<int32_t> devices_;  // per rank
  std::string description_;
  int32_t num_blocks_ = 0;
  std::vector<model::KvCacheStorage> caches_;  // per rank, freed first
  kv_transfer::KvLayout layout_;
};

// The TP=1 layout of a `config` cache in blocks of `block_size`.
kv_transfer::KvLayout KvLayoutFor(const model::ModelConfig& config,
                                  int32_t block_size, DType dtype);

}  // namespace duet::runtime

#endif  // DUET_RUNTIME_MODEL_RUNNER_H_
