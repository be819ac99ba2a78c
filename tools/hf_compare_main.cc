// duet-hf-compare: the whole model on a backend against Hugging Face
// transformers goldens made by scripts/make_golden.py on the same weights.
// Checks the cosine similarity of the logits at every recorded position
// (on the recorded vocabulary sample) and the greedy continuation.
//
//   duet-hf-compare --model DIR --golden FILE [--backend cuda]
//                   [--min-cosine 0.999] [--greedy-tokens 16]
//                   [--min-greedy-prompts 9]
// Exit 0 when every position reaches --min-cosine and at least
// --min-greedy-prompts prompts continue identically for --greedy-tokens.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "common/flags.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#ifdef DUET_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

ABSL_FLAG(std::string, model, "", "model directory (required)");
ABSL_FLAG(std::string, golden, "", "goldens from scripts/make_golden.py");
ABSL_FLAG(std::string, backend, "cuda", "cpu or cuda");
ABSL_FLAG(double, min_cosine, 0.999, "per-position logits cosine floor");
ABSL_FLAG(int32_t, greedy_tokens, 16, "greedy tokens compared per prompt");
ABSL_FLAG(int32_t, min_greedy_prompts, 9,
          "prompts whose greedy continuation must match exactly");

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "duet-hf-compare: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Compares the model on a backend with transformers goldens.\n"
      "Usage: duet-hf-compare --model DIR --golden FILE");
  duet::ParseFlags(argc, argv);
  std::ifstream in(absl::GetFlag(FLAGS_golden));
  if (!in) return Fail("cannot read --golden");
  const nlohmann::json golden =
      nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (golden.is_discarded()) return Fail("--golden is not JSON");
  std::unique_ptr<duet::kernels::Backend> backend;
  if (absl::GetFlag(FLAGS_backend) == "cpu") {
    backend = duet::kernels::MakeCpuBackend();
  } else {
#ifdef DUET_HAVE_CUDA
    auto b = duet::kernels::MakeCudaBackend(0);
    if (!b.ok()) return Fail(b.status().ToString());
    backend = std::move(*b);
#else
    return Fail("built without CUDA");
#endif
  }
  auto model = duet::model::Transformer::Load(absl::GetFlag(FLAGS_model),
                                              std::move(backend));
  if (!model.ok()) return Fail(model.status().ToString());
  auto engine = duet::model::Engine::Create(std::move(*model), {});
  if (!engine.ok()) return Fail(engine.status().ToString());
  duet::model::Transformer& m = (*engine)->model();
  const int32_t vocab = m.config().vocab_size;
  const int32_t stride = golden["vocab_stride"].get<int32_t>();
  constexpr int32_t kBlock = 16;
  auto cache = m.AllocateKvCache(kBlock, 64);
  if (!cache.ok()) return Fail(cache.status().ToString());
  std::vector<duet::BlockId> blocks;
  for (int32_t b = 0; b < 64; ++b) blocks.push_back(duet::BlockId(b));

  double worst_cosine = 1.0;
  int greedy_ok = 0, prompts = 0;
  const int32_t greedy_n = absl::GetFlag(FLAGS_greedy_tokens);
  for (const auto& c : golden["cases"]) {
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    const auto positions = c["positions"].get<std::vector<int32_t>>();
    const duet::model::SeqChunk chunk{prompt, 0, blocks, /*all_logits=*/true};
    auto step = duet::model::BuildStep(duet::kernels::AttentionMode::kPrefill,
                                       {&chunk, 1}, kBlock);
    if (!step.ok()) return Fail(step.status().ToString());
    step->logits_rows = positions;  // only the recorded positions
    auto logits = m.Forward(*step, *cache, kBlock);
    if (!logits.ok()) return Fail(logits.status().ToString());
    double case_worst = 1.0;
    for (size_t i = 0; i < positions.size(); ++i) {
      const auto ref = c["logits"][i]["stride_values"].get<std::vector<double>>();
      double dot = 0, na = 0, nb = 0;
      for (size_t k = 0; k < ref.size(); ++k) {
        const double a = (*logits)[i * vocab + k * stride];
        dot += a * ref[k];
        na += a * a;
        nb += ref[k] * ref[k];
      }
      case_worst = std::min(case_worst, dot / std::sqrt(na * nb));
    }
    worst_cosine = std::min(worst_cosine, case_worst);
    duet::model::SamplingParams params;
    params.max_tokens = greedy_n;
    params.ignore_eos = true;
    auto gen = (*engine)->Generate(prompt, params);
    if (!gen.ok()) return Fail(gen.status().ToString());
    const auto want = c["greedy"].get<std::vector<int32_t>>();
    int32_t same = 0;
    while (same < greedy_n && same < static_cast<int32_t>(want.size()) &&
           gen->tokens[same] == want[same]) {
      ++same;
    }
    greedy_ok += same >= greedy_n;
    ++prompts;
    std::printf("prompt %4zu tokens: min logits cosine %.6f, greedy matches "
                "for %d/%d tokens\n",
                prompt.size(), case_worst, same, greedy_n);
  }
  const bool pass = worst_cosine >= absl::GetFlag(FLAGS_min_cosine) &&
                    greedy_ok >= absl::GetFlag(FLAGS_min_greedy_prompts);
  std::printf("%s: min cosine %.6f (need %.4f), greedy identical on %d/%d "
              "prompts (need %d)\n",
              pass ? "PASS" : "FAIL", worst_cosine,
              absl::GetFlag(FLAGS_min_cosine), greedy_ok, prompts,
              absl::GetFlag(FLAGS_min_greedy_prompts));
  return pass ? 0 : 1;
}
