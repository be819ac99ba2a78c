// Single-process engine: chunked prefill then decode of one request at a time
// on one Transformer. It is the reference the disaggregated cluster must equal
// token for token, and what the no-GPU demo runs.
#ifndef DUET_MODEL_ENGINE_H_
#define DUET_MODEL_ENGINE_H_

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "model/tp_ranks.h"
#include "model/transformer.h"

namespace duet::model {

struct EngineOptions {
  int32_t block_size = 16;
  // KV blocks to allocate; 0 = enough for one max_position_embeddings request.
  int32_t num_blocks = 0;
  // Prompt tokens per prefill forward pass (chunked prefill).
  int32_t prefill_chunk_tokens = 2048;
};

enum class FinishReason { kStopToken, kMaxTokens };

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (a stop token included)
  // One per token when params.logprobs, else empty.
  std::vector<kernels::TokenLogprobs> logprobs;
  FinishReason finish_reason = FinishReason::kMaxTokens;
  double prefill_ms = 0.0;
  std::vector<double> prefill_chunk_ms;
  std::vector<double> decode_step_ms;  // one per token after the first
};

// Checks a request against the model: a non-empty prompt of in-vocabulary
// ids, valid sampling params, and prompt + max_tokens within
// max_position_embeddings. InvalidArgument saying what to fix. Shared by the
// single-process engine and the prefill node.
absl::Status ValidateRequest(std::span<const int32_t> prompt,
                             const SamplingParams& params,
                             const ModelConfig& config);

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::unique_ptr<Transformer> model, const EngineOptions& options);
  // A tensor-parallel model (LoadTpRanks): every step runs on all ranks,
  // each with its own KV cache; rank 0's draw is the token.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      TpRanks ranks, const EngineOptions& options);

  const ModelConfig& config() const { return ranks_.models[0]->config(); }
  Transformer& model() { return *ranks_.models[0]; }
  int tensor_parallel_size() const { return ranks_.size(); }
  const BlockPool& block_pool() const { return pool_; }

  // Validates the request (non-empty prompt of in-vocabulary ids, sampling
  // params, prompt + max_tokens within max_position_embeddings; all
  // InvalidArgument), then prefills and decodes. KV blocks are returned to the
  // pool whatever happens.
  absl::StatusOr<GenerateResult> Generate(std::span<const int32_t> prompt,
                                          const SamplingParams& params);

 private:
  Engine(TpRanks ranks, const EngineOptions& options,
         std::vector<KvCacheStorage> caches);

  // One step on every rank, one logits row drawn with `spec` and `seen`;
  // rank 0's token (and logprobs when spec asks).
  absl::StatusOr<int32_t> Step(const kernels::StepInputs& step,
                               const kernels::SampleSpec& spec,
                               std::span<const kernels::SeenToken> seen,
                               kernels::TokenLogprobs* logprobs);

  TpRanks ranks_;
  EngineOptions options_;
  std::vector<KvCacheStorage> caches_;  // per rank; freed before the models
  BlockPool pool_;
};

}  // namespace duet::model

#endif  // DUET_MODEL_ENGINE_H_
