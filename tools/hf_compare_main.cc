// duet-hf-compare: the whole model on a backend against Hugging Face
// transformers goldens made by scripts/make_golden.py on the same weights.
// Checks the cosine similarity of the logits at every recorded position
// (on the recorded vocabulary sample) and the greedy continuation.
//
//   duet-hf-compare --model DIR --golden FILE [--backend cuda]
//                   [--min-cosine 0.999] [--greedy-tokens 16]
//                   [--min-greedy-prompts 9]
//                   [--continuations-out FILE] [--tie-aware-scores FILE]
// Exit 0 when every position reaches --min-cosine and at least
// --min-greedy-prompts prompts continue identically for --greedy-tokens.
//
// Tie-aware greedy check (random-weight models with flat distributions, see
// tools/README.md): --continuations-out writes duet's continuations,
// scripts/hf_score_continuations.py scores them with transformers, and a run
// with --tie-aware-scores also counts a prompt whose every differing token is
// transformers' argmax or tied with it in bf16 (tools/greedy_verdict.h).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "common/flags.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/engine.h"
#include "tools/greedy_verdict.h"
#ifdef DUET_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

ABSL_FLAG(std::string, model, "", "model directory (required)");
ABSL_FLAG(std::string, golden, "", "goldens from scripts/make_golden.py");
ABSL_FLAG(std::string, backend, "cuda", "cpu or cuda");
ABSL_FLAG(double, min_cosine, 0.999, "per-position logits cosine floor");
ABSL_FLAG(int32_t, greedy_tokens, 16, "greedy tokens compared per prompt");
ABSL_FLAG(int32_t, min_greedy_prompts, 9,
          "prompts whose greedy continuation must match exactly (or be "
          "tie-valid, with --tie_aware_scores)");
ABSL_FLAG(std::string, continuations_out, "",
          "write duet's greedy continuations as JSON {\"cases\":[{\"prompt\":"
          "[...],\"greedy\":[...]}]} for scripts/hf_score_continuations.py");
ABSL_FLAG(std::string, tie_aware_scores, "",
          "scores from scripts/hf_score_continuations.py: a prompt also "
          "counts when its continuation is a transformers greedy path up to "
          "bf16 ties");

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
  std::vector<std::vector<int32_t>> golden_prompts;
  for (const auto& c : golden["cases"]) {
    golden_prompts.push_back(c["prompt"].get<std::vector<int32_t>>());
  }
  std::vector<duet::tools::PromptScores> scores;
  const bool tie_aware = !absl::GetFlag(FLAGS_tie_aware_scores).empty();
  if (tie_aware) {
    std::ifstream sin(absl::GetFlag(FLAGS_tie_aware_scores));
    if (!sin) return Fail("cannot read --tie_aware_scores");
    std::stringstream text;
    text << sin.rdbuf();
    auto parsed = duet::tools::ParseTieAwareScores(text.str(), golden_prompts);
    if (!parsed.ok()) return Fail(parsed.status().ToString());
    scores = std::move(*parsed);
  }
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
  int greedy_ok = 0, greedy_identical = 0, greedy_tie_valid = 0, prompts = 0;
  nlohmann::json continuations = nlohmann::json::array();
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
    continuations.push_back({{"prompt", prompt}, {"greedy", gen->tokens}});
    const auto want = c["greedy"].get<std::vector<int32_t>>();
    auto verdict = duet::tools::JudgeGreedy(
        want, gen->tokens, greedy_n,
        tie_aware ? &scores[static_cast<size_t>(prompts)] : nullptr);
    if (!verdict.ok()) return Fail(verdict.status().ToString());
    const int32_t same = verdict->identical_prefix;
    greedy_identical +=
        verdict->kind == duet::tools::GreedyVerdictKind::kIdentical;
    greedy_tie_valid +=
        verdict->kind == duet::tools::GreedyVerdictKind::kTieValid;
    ++prompts;
    std::printf(
        "prompt %4zu tokens: min logits cosine %.6f, greedy matches "
        "for %d/%d tokens%s%s\n",
        prompt.size(), case_worst, same, greedy_n, tie_aware ? ": " : "",
        tie_aware ? duet::tools::DescribeVerdict(*verdict).c_str() : "");
  }
  greedy_ok = greedy_identical + greedy_tie_valid;
  if (!absl::GetFlag(FLAGS_continuations_out).empty()) {
    std::ofstream out(absl::GetFlag(FLAGS_continuations_out));
    out << nlohmann::json{{"generator", "duet-hf-compare"},
                          {"cases", continuations}}
               .dump()
        << "\n";
    if (!out) return Fail("cannot write --continuations_out");
    std::printf("wrote %zu continuations to %s\n", continuations.size(),
                absl::GetFlag(FLAGS_continuations_out).c_str());
  }
  const bool pass = worst_cosine >= absl::GetFlag(FLAGS_min_cosine) &&
                    greedy_ok >= absl::GetFlag(FLAGS_min_greedy_prompts);
  if (!tie_aware) {
    std::printf("%s: min cosine %.6f (need %.4f), greedy identical on %d/%d "
                "prompts (need %d)\n",
                pass ? "PASS" : "FAIL", worst_cosine,
                absl::GetFlag(FLAGS_min_cosine), greedy_ok, prompts,
                absl::GetFlag(FLAGS_min_greedy_prompts));
  } else {
    std::printf("%s: min cosine %.6f (need %.4f), greedy identical on %d/%d "
                "prompts + tie-valid on %d = %d/%d (need %d, tie-aware)\n",
                pass ? "PASS" : "FAIL", worst_cosine,
                absl::GetFlag(FLAGS_min_cosine), greedy_identical, prompts,
                greedy_tie_valid, greedy_ok, prompts,
                absl::GetFlag(FLAGS_min_greedy_prompts));
  }
  return pass ? 0 : 1;
}
