// duet-run: the single-process engine on one prompt. Prints the generated
// token ids and per-phase timings (each prefill chunk, each decode step).
//
//   duet-run --model DIR --prompt-ids 1,2,3 --max-tokens 16
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "common/flags.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "model/engine.h"
#include "runtime/backend_factory.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated prompt token ids");
ABSL_FLAG(int32_t, max_tokens, 16, "tokens to generate (> 0)");
ABSL_FLAG(float, temperature, 0.0f, "0 = greedy");
ABSL_FLAG(int32_t, top_k, 0, "0 = no limit");
ABSL_FLAG(float, top_p, 1.0f, "nucleus mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past EOS");
ABSL_FLAG(int32_t, block_size, 16, "KV cache block size in tokens");
ABSL_FLAG(int32_t, prefill_chunk, 2048, "prompt tokens per prefill pass");
ABSL_FLAG(std::string, backend, "auto",
          "cpu, cuda, or auto (cuda when a GPU is visible, else cpu)");
ABSL_FLAG(int32_t, device, 0,
          "CUDA device index for the cuda backend (the first of the "
          "tensor-parallel ranks)");
ABSL_FLAG(int32_t, tensor_parallel_size, 1,
          "ranks the model is split over (Megatron): CUDA devices --device "
          "onwards, or threads on the CPU backend; must divide the heads");

namespace {

int Fail(const std::string& msg, int code) {
  std::fprintf(stderr, "duet-run: %s\n", msg.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs one prompt through the single-process engine.\n"
      "Usage: duet-run --model DIR --prompt-ids 1,2,3 [--max-tokens 16]");
  duet::ParseFlags(argc, argv);
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  if (model_dir.empty()) return Fail("--model is required", 2);
  std::vector<int32_t> prompt;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_prompt_ids), ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return Fail("--prompt-ids must be comma-separated integers, got '" +
                      std::string(part) + "'",
                  2);
    }
    prompt.push_back(id);
  }
  if (prompt.empty()) return Fail("--prompt-ids is required", 2);

  duet::model::SamplingParams params;
  params.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  params.temperature = absl::GetFlag(FLAGS_temperature);
  params.top_k = absl::GetFlag(FLAGS_top_k);
  params.top_p = absl::GetFlag(FLAGS_top_p);
  params.seed = absl::GetFlag(FLAGS_seed);
  params.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  duet::model::EngineOptions options;
  options.block_size = absl::GetFlag(FLAGS_block_size);
  options.prefill_chunk_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  if (options.block_size <= 0 || options.prefill_chunk_tokens <= 0) {
    return Fail("--block-size and --prefill-chunk must be > 0", 2);
  }

  const duet::runtime::BackendRequest request{absl::GetFlag(FLAGS_backend),
                                              absl::GetFlag(FLAGS_device)};
  auto backends = duet::runtime::MakeBackends(
      request, absl::GetFlag(FLAGS_tensor_parallel_size));
  if (!backends.ok()) {
    return Fail(std::string(backends.status().message()),
                backends.status().code() == absl::StatusCode::kInvalidArgument
                    ? 2
                    : 1);
  }
  for (const auto& b : *backends) std::printf("%s\n", b.description.c_str());
  duet::Stopwatch load_clock;
  auto ranks = duet::runtime::LoadModelRanks(model_dir, *backends);
  if (!ranks.ok()) {
    return Fail(ranks.status().ToString(),
                ranks.status().code() == absl::StatusCode::kInvalidArgument
                    ? 2
                    : 1);
  }
  auto engine = duet::model::Engine::Create(std::move(*ranks), options);
  if (!engine.ok()) return Fail(engine.status().ToString(), 1);
  const auto& c = (*engine)->config();
  std::printf("loaded %s (%d layers, hidden %d, %d/%d heads, vocab %d) in "
              "%.0f ms, tensor-parallel size %d\n",
              c.model_type.c_str(), c.num_layers, c.hidden_size, c.num_heads,
              c.num_kv_heads, c.vocab_size, load_clock.ElapsedMs(),
              (*engine)->tensor_parallel_size());

  auto result = (*engine)->Generate(prompt, params);
  if (!result.ok()) return Fail(result.status().ToString(), 1);
  std::printf("prompt (%zu tokens): %s\n", prompt.size(),
              absl::StrJoin(prompt, ",").c_str());
  std::printf("generated (%zu tokens, %s): %s\n", result->tokens.size(),
              result->finish_reason == duet::model::FinishReason::kStopToken
                  ? "stop token"
                  : "max_tokens",
              absl::StrJoin(result->tokens, ",").c_str());
  std::printf("prefill: %.3f ms in %zu chunk(s) [%s ms] (time to first "
              "token)\n",
              result->prefill_ms, result->prefill_chunk_ms.size(),
              absl::StrJoin(result->prefill_chunk_ms, ", ",
                            [](std::string* out, double ms) {
                              absl::StrAppend(out, absl::StrFormat("%.3f", ms));
                            })
                  .c_str());
  double total = 0;
  for (size_t i = 0; i < result->decode_step_ms.size(); ++i) {
    std::printf("decode step %zu: %.3f ms\n", i + 1,
                result->decode_step_ms[i]);
    total += result->decode_step_ms[i];
  }
  if (!result->decode_step_ms.empty()) {
    std::printf("decode: %.3f ms/token mean over %zu steps\n",
                total / result->decode_step_ms.size(),
                result->decode_step_ms.size());
  }
  return 0;
}
