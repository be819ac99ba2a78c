#include "model/transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "model/safetensors.h"

namespace duet::model {

using kernels::AttentionMode;
using kernels::StepInputs;
using kernels::Tensor;

absl::StatusOr<StepInputs> BuildStep(AttentionMode mode,
                                     std::span<const SeqChunk> chunks,
                                     int32_t block_size) {
  if (chunks.empty()) {
    return absl::InvalidArgumentError("a step needs at least one sequence");
  }
  StepInputs step;
  step.mode = mode;
  int32_t max_blocks = 1;
  for (const SeqChunk& c : chunks) {
    const int64_t seq_len = int64_t{c.num_cached} + c.tokens.size();
    const int32_t need = BlocksForTokens(seq_len, block_size);
    if (c.tokens.empty() || c.num_cached < 0) {
      return absl::InvalidArgumentError(
          "every sequence in a step needs at least one new token");
    }
    if (static_cast<int32_t>(c.blocks.size()) < need) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence of ", seq_len, " tokens needs ", need,
                       " blocks, has ", c.blocks.size()));
    }
    max_blocks = std::max(max_blocks, need);
  }
  step.max_blocks_per_seq = max_blocks;
  step.block_tables.assign(chunks.size() * max_blocks, 0);
  step.query_start.push_back(0);
  for (size_t s = 0; s < chunks.size(); ++s) {
    const SeqChunk& c = chunks[s];
    const int32_t seq_len =
        c.num_cached + static_cast<int32_t>(c.tokens.size());
    const int32_t need = BlocksForTokens(seq_len, block_size);
    for (int32_t b = 0; b < need; ++b) {
      step.block_tables[s * max_blocks + b] = c.blocks[b].value();
    }
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const int32_t pos = c.num_cached + static_cast<int32_t>(i);
      if (c.all_logits) step.logits_rows.push_back(step.num_tokens());
      step.token_ids.push_back(c.tokens[i]);
      step.positions.push_back(pos);
      step.slot_mapping.push_back(
          static_cast<int64_t>(c.blocks[pos / block_size].value()) *
              block_size +
          pos % block_size);
    }
    if (!c.all_logits) step.logits_rows.push_back(step.num_tokens() - 1);
    step.query_start.push_back(step.num_tokens());
    step.seq_lens.push_back(seq_len);
  }
  return step;
}

Transformer::Transformer(ModelConfig config,
                         std::unique_ptr<kernels::Backend> backend,
                         ModelWeights weights, TpShard shard,
                         kernels::Communicator* comm)
    : config_(std::move(config)),
      local_(ShardConfig(config_, shard)),
      shard_(shard),
      comm_(comm),
      backend_(std::move(backend)),
      weights_(std::move(weights)) {
  // A step with all-reduces is not captured as a graph: the CPU
  // communicator's rendezvous cannot be recorded, and NCCL capture is
  // future work.
  if (shard_.size > 1) graphs_enabled_ = false;
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(
    const std::string& model_dir, std::unique_ptr<kernels::Backend> backend,
    TpShard shard, kernels::Communicator* comm) {
  DUET_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  DUET_RETURN_IF_ERROR(CheckTpShard(config, shard));
  if (shard.size > 1 &&
      (comm == nullptr || comm->size() != shard.size ||
       comm->rank() != shard.rank)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor-parallel rank ", shard.rank, " of ", shard.size,
        " needs a communicator of that rank and size"));
  }
  DUET_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt,
                        Checkpoint::Open(model_dir));
  DUET_ASSIGN_OR_RETURN(ModelWeights weights,
                        LoadWeights(*ckpt, config, *backend, shard));
  // The mapping is released here: weights now live in backend memory.
  return std::unique_ptr<Transformer>(
      new Transformer(std::move(config), std::move(backend),
                      std::move(weights), shard, comm));
}

kernels::AttentionShape Transformer::attention_shape(int32_t block_size,
                                                     int32_t num_blocks) const {
  return kernels::AttentionShape{local_.num_heads, local_.num_kv_heads,
                                 local_.head_dim, block_size, num_blocks};
}

absl::StatusOr<KvCacheStorage> Transformer::AllocateKvCache(
    int32_t block_size, int32_t num_blocks) {
  return KvCacheStorage::Create(*backend_, config_.num_layers,
                                attention_shape(block_size, num_blocks));
}

absl::StatusOr<std::vector<float>> Transformer::Forward(
    const StepInputs& step, const KvCacheStorage& cache, int32_t block_size) {
  DUET_ASSIGN_OR_RETURN(const TensorView logits,
                        RunStep(step, cache, block_size, nullptr));
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  DUET_RETURN_IF_ERROR(backend_->DownloadF32(logits, host.data()));
  return host;
}

int32_t DecodeGraphBucket(int32_t num_seqs) {
  if (num_seqs <= 8) {
    int32_t b = 1;
    while (b < num_seqs) b *= 2;
    return b;
  }
  // Steps of 8 up to 64, of 16 up to 256, then 32: at most ~12% padding
  // past 64 sequences, and few graphs.
  const int32_t step = num_seqs <= 64 ? 8 : num_seqs <= 256 ? 16 : 32;
  return (num_seqs + step - 1) / step * step;
}

absl::StatusOr<StepInputs> PadDecodeStep(const StepInputs& step,
                                         int32_t num_seqs,
                                         int32_t max_blocks_per_seq) {
  const int32_t n = step.num_seqs();
  if (step.mode != AttentionMode::kDecode || n == 0 || num_seqs < n ||
      max_blocks_per_seq < step.max_blocks_per_seq || step.num_tokens() != n) {
    return absl::InvalidArgumentError(
        "PadDecodeStep: needs a non-empty decode step no larger than the "
        "padded shape");
  }
  StepInputs out;
  out.mode = AttentionMode::kDecode;
  out.max_blocks_per_seq = max_blocks_per_seq;
  out.block_tables.assign(static_cast<size_t>(num_seqs) * max_blocks_per_seq,
                          0);
  out.query_start.push_back(0);
  for (int32_t s = 0; s < num_seqs; ++s) {
    // Padding repeats sequence 0: the same token at the same position writes
    // the same K/V bytes into the same slot, so it changes nothing.
    const int32_t src = s < n ? s : 0;
    out.token_ids.push_back(step.token_ids[src]);
    out.positions.push_back(step.positions[src]);
    out.slot_mapping.push_back(step.slot_mapping[src]);
    out.seq_lens.push_back(step.seq_lens[src]);
    out.query_start.push_back(s + 1);
    out.logits_rows.push_back(s);
    std::copy_n(
        step.block_tables.begin() +
            static_cast<size_t>(src) * step.max_blocks_per_seq,
        step.max_blocks_per_seq,
        out.block_tables.begin() + static_cast<size_t>(s) * max_blocks_per_seq);
  }
  return out;
}

absl::StatusOr<TensorView> Transformer::RunStep(const StepInputs& step,
                                                const KvCacheStorage& cache,
                                                int32_t block_size,
                                                const LayerHook& on_layer) {
  const bool one_per_seq =
      step.logits_rows.size() == static_cast<size_t>(step.num_seqs());
  if (graphs_enabled_ && step.mode == AttentionMode::kDecode && one_per_seq &&
      step.num_seqs() > 0 && step.num_tokens() == step.num_seqs()) {
    bool capture_failed = false;
    absl::StatusOr<TensorView> v =
        RunDecodeGraph(step, cache, block_size, &capture_failed);
    if (v.ok() && on_layer) {
      for (int32_t l = 0; l < config_.num_layers; ++l) {
        DUET_RETURN_IF_ERROR(on_layer(l));
      }
    }
    if (v.ok() || !capture_failed) return v;
    // No graphs on this backend (UNIMPLEMENTED), or no memory left for one:
    // run op by op from now on.
    if (v.status().code() != absl::StatusCode::kUnimplemented) {
      DUET_LOG(WARNING) << "decode graphs disabled: " << v.status();
    }
    graphs_enabled_ = false;
    decode_graphs_.clear();
  }
  eager_logits_ = kernels::Tensor();
  DUET_ASSIGN_OR_RETURN(eager_logits_,
                        ForwardLogits(step, cache, block_size, on_layer));
  return eager_logits_.view();
}

absl::StatusOr<TensorView> Transformer::RunDecodeGraph(
    const StepInputs& step, const KvCacheStorage& cache, int32_t block_size,
    bool* capture_failed) {
  if (cache.num_layers() != config_.num_layers) {
    return absl::InvalidArgumentError("KV cache has the wrong layer count");
  }
  const int32_t bucket = DecodeGraphBucket(step.num_seqs());
  const auto shape =
      attention_shape(block_size, static_cast<int32_t>(cache.layer(0).dim(0)));
  DecodeGraph& g = decode_graphs_[bucket];
  const bool stale =
      g.graph == nullptr || g.max_blocks < step.max_blocks_per_seq ||
      g.cache != cache.layer(0).data || g.block_size != block_size;
  // Block tables padded to a power of two: contexts that grow re-record a
  // bucket's graph only log2 times.
  int32_t max_blocks = g.max_blocks;
  if (stale) {
    const bool same_cache = g.graph != nullptr &&
                            g.cache == cache.layer(0).data &&
                            g.block_size == block_size;
    if (!same_cache) max_blocks = 16;
    while (max_blocks < step.max_blocks_per_seq) max_blocks *= 2;
  }
  DUET_ASSIGN_OR_RETURN(StepInputs padded,
                        PadDecodeStep(step, bucket, max_blocks));
  if (stale) {
    g = DecodeGraph{};
    // The step once op by op first where the backend settles per-shape
    // choices only outside a capture (the CUDA backend timing cuBLASLt's
    // candidates); the padded step is idempotent (padding repeats sequence
    // 0's K/V write), so running it twice changes nothing.
    if (backend_->WantsEagerStepBeforeCapture()) {
      DUET_RETURN_IF_ERROR(
          ForwardLogits(padded, cache, block_size, {}).status());
    }
    kernels::Tensor logits;
    auto graph = backend_->CaptureStep(
        padded, shape, config_.vocab_size, [&]() -> absl::Status {
          DUET_ASSIGN_OR_RETURN(logits, RunOps(padded, cache, shape));
          return absl::OkStatus();
        });
    if (!graph.ok()) {
      decode_graphs_.erase(bucket);
      *capture_failed = true;
      return graph.status();
    }
    g.graph = std::move(*graph);
    g.logits = logits.view();  // memory owned by the graph from here on
    g.max_blocks = max_blocks;
    g.cache = cache.layer(0).data;
    g.block_size = block_size;
  }
  DUET_RETURN_IF_ERROR(g.graph->Replay(padded));
  TensorView rows = g.logits;
  rows.shape = {step.num_seqs(), config_.vocab_size};
  return rows;
}

absl::StatusOr<std::vector<int32_t>> Transformer::ForwardSample(
    const StepInputs& step, const KvCacheStorage& cache, int32_t block_size,
    std::span<const kernels::SampleSpec> specs, const LayerHook& on_layer) {
  if (specs.size() != step.logits_rows.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ForwardSample: ", specs.size(), " sampling specs for ",
                     step.logits_rows.size(), " logits rows"));
  }
  std::vector<int32_t> tokens(specs.size());
  DUET_RETURN_IF_ERROR(ForwardSample(step, cache, block_size,
                                     kernels::SampleBatch{specs, {}, {}},
                                     tokens, {}, on_layer));
  return tokens;
}

absl::Status Transformer::ForwardSample(
    const StepInputs& step, const KvCacheStorage& cache, int32_t block_size,
    const kernels::SampleBatch& batch, std::span<int32_t> tokens,
    std::span<kernels::TokenLogprobs> logprobs, const LayerHook& on_layer) {
  if (batch.specs.size() != step.logits_rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForwardSample: ", batch.specs.size(), " sampling specs for ",
        step.logits_rows.size(), " logits rows"));
  }
  DUET_ASSIGN_OR_RETURN(const TensorView logits,
                        RunStep(step, cache, block_size, on_layer));
  return backend_->Sample(logits, batch, tokens, logprobs);
}

absl::StatusOr<Tensor> Transformer::ForwardLogits(const StepInputs& step,
                                                  const KvCacheStorage& cache,
                                                  int32_t block_size,
                                                  const LayerHook& on_layer) {
  const ModelConfig& c = config_;
  kernels::Backend& be = *backend_;
  if (cache.num_layers() != c.num_layers) {
    return absl::InvalidArgumentError("KV cache has the wrong layer count");
  }
  const auto shape =
      attention_shape(block_size, static_cast<int32_t>(cache.layer(0).dim(0)));
  DUET_RETURN_IF_ERROR(be.BeginStep(step, shape, c.vocab_size));
  return RunOps(step, cache, shape, on_layer);
}

absl::StatusOr<Tensor> Transformer::RunOps(const StepInputs& step,
                                           const KvCacheStorage& cache,
                                           const kernels::AttentionShape& shape,
                                           const LayerHook& on_layer) {
  const ModelConfig& c = local_;
  // Row-parallel outputs are partial sums over this rank's heads or
  // intermediate columns until summed over the ranks.
  auto all_reduce = [&](const TensorView& partial) -> absl::Status {
    return comm_ == nullptr ? absl::OkStatus() : comm_->AllReduceSum(partial);
  };
  kernels::Backend& be = *backend_;
  const int64_t t = step.num_tokens();
  const DType dt = be.activation_dtype();
  DUET_ASSIGN_OR_RETURN(Tensor residual, be.Allocate(dt, {t, c.hidden_size}));
  DUET_ASSIGN_OR_RETURN(Tensor hidden, be.Allocate(dt, {t, c.hidden_size}));
  DUET_ASSIGN_OR_RETURN(Tensor qkv, be.Allocate(dt, {t, shape.qkv_width()}));
  DUET_ASSIGN_OR_RETURN(Tensor attn, be.Allocate(dt, {t, c.q_size()}));
  DUET_ASSIGN_OR_RETURN(Tensor proj, be.Allocate(dt, {t, c.hidden_size}));
  DUET_ASSIGN_OR_RETURN(Tensor gate_up,
                        be.Allocate(dt, {t, 2 * int64_t{c.intermediate_size}}));
  DUET_ASSIGN_OR_RETURN(Tensor act, be.Allocate(dt, {t, c.intermediate_size}));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const float eps = c.rms_norm_eps;

  DUET_RETURN_IF_ERROR(
      be.Embedding(step, weights_.embed.view(), residual.view()));
  DUET_RETURN_IF_ERROR(be.RmsNorm(residual.view(),
                                  weights_.layers[0].input_norm.view(), eps,
                                  hidden.view()));
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    DUET_RETURN_IF_ERROR(be.Linear(hidden.view(), w.qkv.view(), qkv.view()));
    DUET_RETURN_IF_ERROR(be.QkNormRopeWriteKv(
        step, shape, qkv.view(), c.qk_norm ? &w.q_norm.view() : nullptr,
        c.qk_norm ? &w.k_norm.view() : nullptr, eps, weights_.inv_freq.view(),
        cache.layer(l)));
    if (on_layer && comm_ == nullptr) DUET_RETURN_IF_ERROR(on_layer(l));
    DUET_RETURN_IF_ERROR(be.Attention(step, shape, qkv.view(), cache.layer(l),
                                      scale, attn.view()));
    DUET_RETURN_IF_ERROR(be.Linear(attn.view(), w.o_proj.view(), proj.view()));
    DUET_RETURN_IF_ERROR(all_reduce(proj.view()));
    // Under TP the hook waits for the all-reduce: no rank reaches it before
    // every rank has written this layer's KV, so what the hook sees as done
    // on this rank (a mark on its stream) is done on all of them.
    if (on_layer && comm_ != nullptr) DUET_RETURN_IF_ERROR(on_layer(l));
    DUET_RETURN_IF_ERROR(be.AddRmsNorm(proj.view(), residual.view(),
                                       w.post_norm.view(), eps, hidden.view()));
    DUET_RETURN_IF_ERROR(be.LinearSiluMul(hidden.view(), w.gate_up.view(),
                                          gate_up.view(), act.view()));
    DUET_RETURN_IF_ERROR(be.Linear(act.view(), w.down.view(), proj.view()));
    DUET_RETURN_IF_ERROR(all_reduce(proj.view()));
    // The next layer's input norm, or the final norm after the last layer.
    const TensorView& next_norm = l + 1 < c.num_layers
                                      ? weights_.layers[l + 1].input_norm.view()
                                      : weights_.final_norm.view();
    DUET_RETURN_IF_ERROR(be.AddRmsNorm(proj.view(), residual.view(), next_norm,
                                       eps, hidden.view()));
  }
  const int64_t rows = static_cast<int64_t>(step.logits_rows.size());
  DUET_ASSIGN_OR_RETURN(Tensor logits,
                        be.Allocate(DType::kF32, {rows, c.vocab_size}));
  DUET_RETURN_IF_ERROR(
      be.Logits(step, hidden.view(), weights_.lm_head_view(), logits.view()));
  return logits;
}

}  // namespace duet::model
