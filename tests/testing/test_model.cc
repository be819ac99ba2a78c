#include "tests/testing/test_model.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/synthetic.h"
#include "tests/testing/scratch.h"

namespace duet::testing {

const std::string& SyntheticModelDir(const std::string& preset) {
  static std::mutex mu;
  static auto* dirs = new std::map<std::string, std::string>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = dirs->find(preset);
  if (it != dirs->end()) return it->second;
  const std::string dir = absl::StrCat(::duet::testing::ScratchModelsDir(),
                                       "/duet_model_", preset, "_", ::getpid());
  model::SyntheticOptions options;
  options.preset = preset;
  const absl::Status status = model::WriteSyntheticCheckpoint(dir, options);
  EXPECT_TRUE(status.ok()) << status;
  return dirs->emplace(preset, dir).first->second;
}

std::unique_ptr<model::Transformer> LoadCpuModel(const std::string& dir) {
  auto model = model::Transformer::Load(dir, kernels::MakeCpuBackend());
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

std::unique_ptr<runtime::ModelRunner> MakeCpuRunner(const std::string& dir,
                                                    int32_t num_blocks,
                                                    int32_t block_size) {
  runtime::BackendChoice cpu;
  cpu.backend = kernels::MakeCpuBackend();
  runtime::ModelRunnerOptions o;
  o.num_kv_blocks = num_blocks;
  o.block_size = block_size;
  auto runner = runtime::ModelRunner::Create(std::move(cpu), dir, o);
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? std::move(*runner) : nullptr;
}

std::string Fnv1a64File(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 0xcbf29ce484222325ull;
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof(buf));
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[i])) * 0x100000001b3ull;
    }
  }
  return absl::StrFormat("%016x", h);
}

std::vector<int32_t> LcgPrompt(int32_t length, int32_t vocab_limit) {
  uint64_t x = 12345 + static_cast<uint64_t>(length);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < length; ++i) {
    x = (1103515245ull * x + 12345ull) & 0x7fffffffull;
    ids.push_back(static_cast<int32_t>(x % vocab_limit));
  }
  return ids;
}

std::vector<float> PrefillAllLogits(model::Transformer& m,
                                    const model::KvCacheStorage& cache,
                                    const std::vector<int32_t>& tokens,
                                    int32_t chunk,
                                    const std::vector<BlockId>& blocks,
                                    int32_t block_size) {
  std::vector<float> all;
  for (size_t start = 0; start < tokens.size(); start += chunk) {
    const size_t len = std::min<size_t>(chunk, tokens.size() - start);
    const model::SeqChunk c{
        std::span<const int32_t>(tokens).subspan(start, len),
        static_cast<int32_t>(start), blocks, /*all_logits=*/true};
    auto step =
        model::BuildStep(kernels::AttentionMode::kPrefill, {&c, 1}, block_size);
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) return {};
    auto logits = m.Forward(*step, cache, block_size);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    all.insert(all.end(), logits->begin(), logits->end());
  }
  return all;
}

}  // namespace duet::testing
