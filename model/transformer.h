// The Qwen3 / Llama decoder forward pass, written once against
// kernels::Backend. Stateless between steps apart from the KV cache, which
// the caller owns (KvCacheStorage) and addresses through block tables.
#ifndef DUET_MODEL_TRANSFORMER_H_
#define DUET_MODEL_TRANSFORMER_H_

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/strong_id.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace duet::model {

// One sequence's share of a forward step: `tokens` are appended after the
// `num_cached` tokens already in its cache blocks `blocks`.
struct SeqChunk {
  std::span<const int32_t> tokens;
  int32_t num_cached = 0;
  std::span<const BlockId> blocks;
  // Logits for every new token (tests) instead of only the last one.
  bool all_logits = false;
};

// Builds the step metadata (positions, slots, block tables, logits rows) for
// `chunks`. InvalidArgument if a sequence has no tokens or too few blocks.
absl::StatusOr<kernels::StepInputs> BuildStep(kernels::AttentionMode mode,
                                              std::span<const SeqChunk> chunks,
                                              int32_t block_size);

// Decode steps run as recorded graphs per batch bucket (where the backend
// has them): the bucket of a step of `num_seqs` sequences.
int32_t DecodeGraphBucket(int32_t num_seqs);

// `step` (a decode step) widened to `num_seqs` sequences, the extra ones
// repeating sequence 0, and to `max_blocks_per_seq` block-table columns.
absl::StatusOr<kernels::StepInputs> PadDecodeStep(
    const kernels::StepInputs& step, int32_t num_seqs,
    int32_t max_blocks_per_seq);

class Transformer {
 public:
  // Loads config.json and the safetensors checkpoint in `model_dir` into
  // `backend`: the whole model, or under tensor parallelism `shard`'s slice
  // of it, with `comm` (of shard.size ranks, this one shard.rank; not
  // owned) all-reducing the partial sums after o_proj and down. Every rank
  // then runs the same steps in the same order, each on its own thread.
  static absl::StatusOr<std::unique_ptr<Transformer>> Load(
      const std::string& model_dir, std::unique_ptr<kernels::Backend> backend,
      TpShard shard = {}, kernels::Communicator* comm = nullptr);

  // The whole model's configuration (not divided by the shard).
  const ModelConfig& config() const { return config_; }
  TpShard tp_shard() const { return shard_; }
  kernels::Backend& backend() { return *backend_; }

  // Attention geometry of a KV cache with this rank's heads.
  kernels::AttentionShape attention_shape(int32_t block_size,
                                          int32_t num_blocks) const;
  // Allocates a KV cache of `num_blocks` blocks of `block_size` tokens.
  absl::StatusOr<KvCacheStorage> AllocateKvCache(int32_t block_size,
                                                 int32_t num_blocks);

  // Runs one step: writes the new tokens' K/V into `cache` and returns the
  // logits of step.logits_rows as a row-major [rows, vocab] fp32 host array.
  absl::StatusOr<std::vector<float>> Forward(const kernels::StepInputs& step,
                                             const KvCacheStorage& cache,
                                             int32_t block_size);
  // Called once per layer, in order, as soon as the ops that write that
  // layer's KV are queued on the backend (under tensor parallelism: after
  // the layer's first all-reduce, which every rank's KV writes precede) (a device backend may not have run
  // them yet: take a Backend::Mark). Steps replayed from a graph call it
  // for every layer after the whole step is queued. An error stops the
  // step with it.
  using LayerHook = std::function<absl::Status(int32_t layer)>;

  // Runs one step like Forward and draws one token per logits row on the
  // backend (specs[r] for step.logits_rows[r]); only the token ids come back
  // to the host.
  absl::StatusOr<std::vector<int32_t>> ForwardSample(
      const kernels::StepInputs& step, const KvCacheStorage& cache,
      int32_t block_size, std::span<const kernels::SampleSpec> specs,
      const LayerHook& on_layer = nullptr);
  // The same with penalties (batch.seen) and logprobs: tokens and (when a
  // row asks) logprobs have one entry per logits row.
  absl::Status ForwardSample(const kernels::StepInputs& step,
                             const KvCacheStorage& cache, int32_t block_size,
                             const kernels::SampleBatch& batch,
                             std::span<int32_t> tokens,
                             std::span<kernels::TokenLogprobs> logprobs,
                             const LayerHook& on_layer = nullptr);

  // Decode steps through recorded graphs (default on; ignored by backends
  // without graphs). Off: every step runs op by op.
  void set_step_graphs(bool enabled) {
    graphs_enabled_ = enabled && shard_.size == 1;  // see the constructor
    decode_graphs_.clear();
  }
  bool step_graphs() const { return graphs_enabled_; }

 private:
  struct DecodeGraph {
    std::unique_ptr<kernels::StepGraph> graph;
    TensorView logits;  // [bucket, vocab], owned by the graph
    int32_t max_blocks = 0;
    const void* cache = nullptr;  // the KV cache the graph was recorded on
    int32_t block_size = 0;
  };

  // The logits of `step` [rows, vocab] fp32 in backend memory, valid until
  // the next step: through a graph for decode steps when enabled.
  absl::StatusOr<TensorView> RunStep(const kernels::StepInputs& step,
                                     const KvCacheStorage& cache,
                                     int32_t block_size,
                                     const LayerHook& on_layer);
  // *capture_failed is set when recording (not replaying) failed.
  absl::StatusOr<TensorView> RunDecodeGraph(const kernels::StepInputs& step,
                                            const KvCacheStorage& cache,
                                            int32_t block_size,
                                            bool* capture_failed);
  // The ops of one step after BeginStep (or inside a graph capture).
  absl::StatusOr<kernels::Tensor> RunOps(const kernels::StepInputs& step,
                                         const KvCacheStorage& cache,
                                         const kernels::AttentionShape& shape,
                                         const LayerHook& on_layer = nullptr);
  // The step's logits [rows, vocab] fp32, in backend memory.
  absl::StatusOr<kernels::Tensor> ForwardLogits(
      const kernels::StepInputs& step, const KvCacheStorage& cache,
      int32_t block_size, const LayerHook& on_layer = nullptr);

  Transformer(ModelConfig config, std::unique_ptr<kernels::Backend> backend,
              ModelWeights weights, TpShard shard,
              kernels::Communicator* comm);

  ModelConfig config_;
  ModelConfig local_;  // this rank's share: heads and intermediate divided
  TpShard shard_;
  kernels::Communicator* comm_ = nullptr;  // set when shard_.size > 1
  std::unique_ptr<kernels::Backend> backend_;
  ModelWeights weights_;
  bool graphs_enabled_ = true;
  // Declared after backend_: graphs go first. By bucket.
  std::map<int32_t, DecodeGraph> decode_graphs_;
  kernels::Tensor eager_logits_;  // the last eager step's logits
};

}  // namespace duet::model

#endif  // DUET_MODEL_TRANSFORMER_H_
