#include "runtime/model_runner.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "common/status.h"

namespace duet::runtime {

using kernels::AttentionMode;

kv_transfer::KvLayout KvLayoutFor(const model::ModelConfig& c,
                                  int32_t block_size, DType dtype) {
  kv_transfer::KvLayout l;
  l.num_layers = c.num_layers;
  l.num_kv_heads = c.num_kv_heads;
  l.head_dim = c.head_dim;
  l.block_size = block_size;
  l.dtype = dtype;
  return l;
}

namespace {

constexpr int64_t kMaxAutoBlocks = int64_t{1} << 20;

// Runs the largest step the node will run (max_num_batched_tokens prompt
// tokens) in a temporary cache, so the activation memory it needs is taken
// before the pool is sized from what is left (vLLM profiles the same way
// for gpu_memory_utilization).
absl::Status ProfileStep(model::Transformer& model, int32_t block_size,
                         int32_t tokens) {
  const int32_t blocks = model::BlocksForTokens(tokens, block_size);
  DUET_ASSIGN_OR_RETURN(model::KvCacheStorage cache,
                        model.AllocateKvCache(block_size, blocks));
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (int32_t i = 0; i < tokens; ++i) {
    ids[static_cast<size_t>(i)] = i % model.config().vocab_size;
  }
  std::vector<BlockId> table;
  for (int32_t b = 0; b < blocks; ++b) table.emplace_back(b);
  const model::SeqChunk chunk{ids, 0, table};
  DUET_ASSIGN_OR_RETURN(
      kernels::StepInputs step,
      model::BuildStep(AttentionMode::kPrefill, {&chunk, 1}, block_size));
  const kernels::SampleSpec spec{};
  DUET_RETURN_IF_ERROR(
      model.ForwardSample(step, cache, block_size, {&spec, 1}).status());
  return model.backend().Synchronize();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    BackendChoice backend, const std::string& model_dir,
    const ModelRunnerOptions& options) {
  std::vector<BackendChoice> one;
  one.push_back(std::move(backend));
  return Create(std::move(one), model_dir, options);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    std::vector<BackendChoice> backends, const std::string& model_dir,
    const ModelRunnerOptions& options) {
  DUET_ASSIGN_OR_RETURN(model::TpRanks ranks,
                        LoadModelRanks(model_dir, backends));
  return Finish(backends, std::move(ranks), options);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Create(
    BackendChoice backend, std::unique_ptr<model::Transformer> model,
    const ModelRunnerOptions& options) {
  std::vector<BackendChoice> one;
  one.push_back(std::move(backend));
  model::TpRanks ranks;
  ranks.models.push_back(std::move(model));
  return Finish(one, std::move(ranks), options);
}

absl::StatusOr<std::unique_ptr<ModelRunner>> ModelRunner::Finish(
    std::vector<BackendChoice>& backends, model::TpRanks ranks,
    const ModelRunnerOptions& options) {
  if (options.block_size <= 0 || options.num_kv_blocks < 0 ||
      options.max_num_batched_tokens <= 0 || options.cpu_default_blocks <= 0 ||
      !(options.kv_cache_memory_fraction > 0 &&
        options.kv_cache_memory_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model runner: block size (", options.block_size,
        ") and max-num-batched-tokens (", options.max_num_batched_tokens,
        ") must be > 0, num-kv-blocks (", options.num_kv_blocks,
        ") >= 0, kv-cache-memory-fraction (", options.kv_cache_memory_fraction,
        ") in (0, 1]"));
  }
  std::unique_ptr<ModelRunner> r(new ModelRunner());
  r->ranks_ = std::move(ranks);
  r->options_ = options;
  for (const BackendChoice& b : backends) {
    r->devices_.push_back(b.device);
    absl::StrAppend(&r->description_, r->description_.empty() ? "" : "; ",
                    b.description);
  }
  const int n = r->ranks_.size();
  const model::Transformer& first = *r->ranks_.models[0];
  // One rank's share of a block (its KV heads).
  const int64_t bytes_per_block = [&] {
    const model::ModelConfig& c = first.config();
    return int64_t{2} * c.num_layers * (c.num_kv_heads / n) * c.head_dim *
           options.block_size *
           static_cast<int64_t>(
               DTypeSize(r->ranks_.models[0]->backend().activation_dtype()));
  }();
  int32_t blocks = options.num_kv_blocks;
  if (blocks == 0 && backends[0].device < 0) {
    blocks = options.cpu_default_blocks;
  }
  // Each rank sizes its pool from its own device; the node takes the
  // smallest, since a block id means the same block on every rank.
  auto size_rank = [&](int rank) -> absl::StatusOr<int32_t> {
    model::Transformer& model = *r->ranks_.models[static_cast<size_t>(rank)];
    const BackendChoice& backend = backends[static_cast<size_t>(rank)];
    // One sequence cannot be longer than the model's context.
    DUET_RETURN_IF_ERROR(
        ProfileStep(model, options.block_size,
                    std::min(options.max_num_batched_tokens,
                             model.config().max_position_embeddings)));
    DUET_ASSIGN_OR_RETURN(const size_t free_now, FreeDeviceMemory(backend));
    // This process's own allocations (weights, activations): not the drop
    // in device free memory, which also counts nodes starting beside it on
    // the same GPU. The CUDA context and cuBLAS handles are outside it and
    // come out of the margin and the (1 - fraction) share.
    const double used_here =
        static_cast<double>(model.backend().DeviceBytesReserved());
    // What this process may take in all, less what it already holds; never
    // more than is free now, less a margin for the CUDA graphs and
    // cuBLAS workspaces that come with the first decode steps.
    const double margin = 512.0 * (1 << 20);
    const double share = options.kv_cache_memory_fraction *
                         static_cast<double>(backend.total_bytes);
    const double kv_bytes = std::min(share - std::max(used_here, 0.0),
                                     static_cast<double>(free_now) - margin);
    const int64_t count =
        kv_bytes > 0 ? static_cast<int64_t>(kv_bytes) / bytes_per_block : 0;
    if (count < 1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "no GPU memory left for a KV pool on rank %d: "
          "--kv-cache-memory-fraction %.2f of %.1f GiB is %.1f GiB, this "
          "process already holds %.1f GiB (weights, activations of a "
          "%d-token step) and %.1f GiB is free; raise the fraction, lower "
          "--max-num-batched-tokens, or set --num-kv-blocks",
          rank, options.kv_cache_memory_fraction,
          backend.total_bytes / 1073741824.0, share / 1073741824.0,
          used_here / 1073741824.0, options.max_num_batched_tokens,
          free_now / 1073741824.0));
    }
    // Past 2^20 blocks (16M tokens at block size 16) more blocks serve no
    // request of a real context length, and the free list is host memory.
    return static_cast<int32_t>(std::min<int64_t>(count, kMaxAutoBlocks));
  };
  r->caches_.resize(static_cast<size_t>(n));
  if (n == 1) {
    if (blocks == 0) {
      DUET_ASSIGN_OR_RETURN(blocks, size_rank(0));
    }
    DUET_ASSIGN_OR_RETURN(r->caches_[0],
                          r->ranks_.models[0]->AllocateKvCache(
                              options.block_size, blocks));
  } else {
    std::vector<int32_t> room(static_cast<size_t>(n), blocks);
    if (blocks == 0) {
      // Profiling runs a step: every rank at once (all-reduces).
      DUET_RETURN_IF_ERROR(r->ranks_.workers->RunAll([&](int rank) {
        absl::StatusOr<int32_t> b = size_rank(rank);
        if (!b.ok()) return b.status();
        room[static_cast<size_t>(rank)] = *b;
        return absl::OkStatus();
      }));
      blocks = *std::min_element(room.begin(), room.end());
    }
    DUET_RETURN_IF_ERROR(r->ranks_.workers->RunAll([&](int rank) {
      absl::StatusOr<model::KvCacheStorage> cache =
          r->ranks_.models[static_cast<size_t>(rank)]->AllocateKvCache(
              options.block_size, blocks);
      if (!cache.ok()) return cache.status();
      r->caches_[static_cast<size_t>(rank)] = std::move(*cache);
      return absl::OkStatus();
    }));
  }
  r->num_blocks_ = blocks;
  r->layout_ = KvLayoutFor(first.config(), options.block_size,
                           r->ranks_.models[0]->backend().activation_dtype());
  r->layout_.tp_size = n;
  return r;
}

kv_transfer::KvPoolView ModelRunner::pool_view(int32_t rank) const {
  const model::KvCacheStorage& cache = caches_[static_cast<size_t>(rank)];
  kv_transfer::KvPoolView view;
  view.layout = layout_;
  view.layout.tp_rank = rank;
  view.num_blocks = num_blocks_;
  for (int32_t l = 0; l < cache.num_layers(); ++l) {
    view.layer_base.push_back(cache.layer(l).data);
  }
  view.device = cache.layer(0).device;
  return view;
}

std::string ModelRunner::PoolSummary() const {
  return absl::StrFormat("%d KV blocks x %d tokens = %d tokens (%.2f GiB)",
                         num_blocks_, options_.block_size,
                         int64_t{num_blocks_} * options_.block_size,
                         static_cast<double>(caches_[0].bytes_per_block()) *
                             num_blocks_ * caches_.size() / 1073741824.0);
}

absl::StatusOr<std::vector<int32_t>> ModelRunner::Run(
    std::span<const RunChunk> chunks,
    const model::Transformer::LayerHook& on_layer,
    std::vector<kernels::TokenLogprobs>* logprobs) {
  if (logprobs != nullptr) logprobs->clear();
  if (chunks.empty()) return std::vector<int32_t>{};
  std::vector<model::SeqChunk> seqs;
  std::vector<kernels::SampleSpec> specs;
  std::vector<kernels::SeenToken> seen;
  std::vector<int32_t> seen_offsets = {0};
  seqs.reserve(chunks.size());
  specs.reserve(chunks.size());
  bool decode = true;
  bool any_logprobs = false;
  for (const RunChunk& c : chunks) {
    seqs.push_back(model::SeqChunk{c.tokens, c.num_cached, c.blocks});
    // Chunks that end mid-prompt get a cheap greedy draw, discarded.
    specs.push_back(c.sample.value_or(kernels::SampleSpec{}));
    if (c.sample.has_value()) {
      seen.insert(seen.end(), c.seen.begin(), c.seen.end());
      any_logprobs = any_logprobs || c.sample->num_logprobs >= 0;
    }
    seen_offsets.push_back(static_cast<int32_t>(seen.size()));
    decode = decode && c.tokens.size() == 1;
  }
  DUET_ASSIGN_OR_RETURN(kernels::StepInputs step,
                        model::BuildStep(decode ? AttentionMode::kDecode
                                                : AttentionMode::kPrefill,
                                         seqs, options_.block_size));
  std::vector<int32_t> drawn(chunks.size());
  std::vector<kernels::TokenLogprobs> drawn_logprobs(
      any_logprobs ? chunks.size() : 0);
  const kernels::SampleBatch batch{
      specs, seen,
      seen.empty() ? std::span<const int32_t>() : std::span(seen_offsets)};
  DUET_RETURN_IF_ERROR(ranks_.ForwardSample(step, caches_, options_.block_size,
                                            batch, drawn, drawn_logprobs,
                                            on_layer));
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (!chunks[i].sample.has_value()) continue;
    tokens.push_back(drawn[i]);
    if (logprobs != nullptr) {
      logprobs->push_back(any_logprobs ? drawn_logprobs[i]
                                       : kernels::TokenLogprobs{});
    }
  }
  return tokens;
}

}  // namespace duet::runtime
