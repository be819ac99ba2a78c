// duet-make-model: writes a deterministic synthetic Hugging Face checkpoint.
//
//   duet-make-model --preset tiny --out /tmp/tiny [--seed 0]
//                   [--max-shard-bytes N]
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "common/flags.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "common/clock.h"
#include "model/synthetic.h"

ABSL_FLAG(std::string, preset, "tiny",
          "model shape: tiny, qwen3-0.6b, qwen3-4b, qwen3-8b, tiny-llama");
ABSL_FLAG(std::string, out, "", "output directory (created if missing)");
ABSL_FLAG(uint64_t, seed, 0, "weight seed; same preset + seed => same bytes");
ABSL_FLAG(uint64_t, max_shard_bytes, 0,
          "0 = one model.safetensors; else shard into files of at most N "
          "bytes with model.safetensors.index.json");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes a synthetic Qwen3-shaped checkpoint (config.json + bf16 "
      "safetensors).\nUsage: duet-make-model --preset tiny --out DIR");
  duet::ParseFlags(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) {
    std::fprintf(stderr, "duet-make-model: --out is required\n");
    return 2;
  }
  duet::model::SyntheticOptions options;
  options.preset = absl::GetFlag(FLAGS_preset);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.max_shard_bytes = absl::GetFlag(FLAGS_max_shard_bytes);
  if (!duet::model::SyntheticConfigJson(options.preset).ok()) {
    std::fprintf(stderr, "duet-make-model: unknown --preset '%s' (known: %s)\n",
                 options.preset.c_str(),
                 absl::StrJoin(duet::model::SyntheticPresetNames(), ", ")
                     .c_str());
    return 2;
  }
  duet::Stopwatch clock;
  const absl::Status status =
      duet::model::WriteSyntheticCheckpoint(out, options);
  if (!status.ok()) {
    std::fprintf(stderr, "duet-make-model: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s checkpoint (seed %llu) to %s in %.0f ms\n",
              options.preset.c_str(),
              static_cast<unsigned long long>(options.seed), out.c_str(),
              clock.ElapsedMs());
  return 0;
}
