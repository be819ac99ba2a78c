#include "model/engine.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status.h"

namespace duet::model {

using kernels::AttentionMode;

Engine::Engine(TpRanks ranks, const EngineOptions& options,
               std::vector<KvCacheStorage> caches)
    : ranks_(std::move(ranks)),
      options_(options),
      caches_(std::move(caches)),
      pool_(options.num_blocks) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::unique_ptr<Transformer> model, const EngineOptions& options) {
  TpRanks ranks;
  ranks.models.push_back(std::move(model));
  return Create(std::move(ranks), options);
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    TpRanks ranks, const EngineOptions& options) {
  if (ranks.models.empty() || ranks.models[0] == nullptr ||
      (ranks.size() > 1 && ranks.workers == nullptr)) {
    return absl::InvalidArgumentError("engine: no model");
  }
  const Transformer* model = ranks.models[0].get();
  EngineOptions opts = options;
  if (opts.block_size <= 0 || opts.prefill_chunk_tokens <= 0 ||
      opts.num_blocks < 0) {
    return absl::InvalidArgumentError(
        "engine: block_size and prefill_chunk_tokens must be > 0, num_blocks "
        ">= 0");
  }
  if (opts.num_blocks == 0) {
    opts.num_blocks = BlocksForTokens(
        model->config().max_position_embeddings, opts.block_size);
  }
  std::vector<KvCacheStorage> caches;
  for (auto& m : ranks.models) {
    DUET_ASSIGN_OR_RETURN(KvCacheStorage cache,
                          m->AllocateKvCache(opts.block_size, opts.num_blocks));
    caches.push_back(std::move(cache));
  }
  return std::unique_ptr<Engine>(
      new Engine(std::move(ranks), opts, std::move(caches)));
}

absl::StatusOr<int32_t> Engine::Step(const kernels::StepInputs& step,
                                     const kernels::SampleSpec& spec,
                                     std::span<const kernels::SeenToken> seen,
                                     kernels::TokenLogprobs* logprobs) {
  const int32_t offsets[2] = {0, static_cast<int32_t>(seen.size())};
  int32_t token = 0;
  DUET_RETURN_IF_ERROR(ranks_.ForwardSample(
      step, caches_, options_.block_size,
      kernels::SampleBatch{{&spec, 1}, seen, offsets}, {&token, 1},
      spec.num_logprobs >= 0 ? std::span<kernels::TokenLogprobs>(logprobs, 1)
                             : std::span<kernels::TokenLogprobs>()));
  return token;
}

absl::Status ValidateRequest(std::span<const int32_t> prompt,
                             const SamplingParams& params,
                             const ModelConfig& c) {
  if (prompt.empty()) {
    return absl::InvalidArgumentError("prompt must hold at least one token");
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt token id ", id, " is outside the vocabulary [0, ",
          c.vocab_size, ")"));
    }
  }
  DUET_RETURN_IF_ERROR(ValidateSamplingParams(params, c.vocab_size));
  const int64_t total = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (total > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), " tokens) + max_tokens (",
        params.max_tokens, ") exceeds the model context of ",
        c.max_position_embeddings, " tokens"));
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerateResult> Engine::Generate(
    std::span<const int32_t> prompt, const SamplingParams& params) {
  const ModelConfig& c = config();
  DUET_RETURN_IF_ERROR(ValidateRequest(prompt, params, c));
  const int64_t total = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  // The last generated token is never fed back, so total - 1 positions.
  const int32_t bs = options_.block_size;
  DUET_ASSIGN_OR_RETURN(std::vector<BlockId> blocks,
                        pool_.Allocate(BlocksForTokens(total - 1, bs)));
  absl::Cleanup free_blocks = [&] { (void)pool_.Free(blocks); };

  GenerateResult result;
  Stopwatch prefill_clock;
  SeenTokens seen(params, prompt, {});
  int32_t drawn = 0;
  kernels::TokenLogprobs logprobs;
  for (size_t start = 0; start < prompt.size();
       start += options_.prefill_chunk_tokens) {
    Stopwatch chunk_clock;
    const size_t len = std::min<size_t>(options_.prefill_chunk_tokens,
                                        prompt.size() - start);
    const SeqChunk chunk{prompt.subspan(start, len),
                         static_cast<int32_t>(start), blocks};
    DUET_ASSIGN_OR_RETURN(
        auto step, BuildStep(AttentionMode::kPrefill, {&chunk, 1}, bs));
    // Only the last chunk's draw is used (the first generated token); the
    // others get a cheap greedy one.
    const bool last = start + len == prompt.size();
    const kernels::SampleSpec spec =
        last ? ToSampleSpec(params, 0) : kernels::SampleSpec{};
    DUET_ASSIGN_OR_RETURN(
        drawn,
        Step(step, spec,
             last ? seen.tokens() : std::span<const kernels::SeenToken>(),
             &logprobs));
    result.prefill_chunk_ms.push_back(chunk_clock.ElapsedMs());
  }

  std::vector<int32_t> stops = params.stop_token_ids;
  if (!params.ignore_eos) {
    stops.insert(stops.end(), c.eos_token_ids.begin(), c.eos_token_ids.end());
  }
  int32_t num_cached = static_cast<int32_t>(prompt.size());
  for (int32_t i = 0; i < params.max_tokens; ++i) {
    Stopwatch step_clock;
    if (i > 0) {
      const int32_t last = result.tokens.back();
      const SeqChunk chunk{{&last, 1}, num_cached, blocks};
      DUET_ASSIGN_OR_RETURN(
          auto step, BuildStep(AttentionMode::kDecode, {&chunk, 1}, bs));
      const kernels::SampleSpec spec =
          ToSampleSpec(params, static_cast<uint64_t>(i));
      DUET_ASSIGN_OR_RETURN(drawn, Step(step, spec, seen.tokens(), &logprobs));
      ++num_cached;
    }
    const int32_t token = drawn;
    result.tokens.push_back(token);
    seen.Add(token);
    if (params.logprobs) result.logprobs.push_back(logprobs);
    if (i == 0) {
      result.prefill_ms = prefill_clock.ElapsedMs();
    } else {
      result.decode_step_ms.push_back(step_clock.ElapsedMs());
    }
    if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
      result.finish_reason = FinishReason::kStopToken;
      return result;
    }
  }
  result.finish_reason = FinishReason::kMaxTokens;
  return result;
}

}  // namespace duet::model
