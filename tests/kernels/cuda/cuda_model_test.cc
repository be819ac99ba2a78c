// The whole forward pass (model/transformer.cc, unchanged) on the CUDA
// backend against the CPU backend: the synthetic tiny checkpoints (Qwen3
// with QK-norm, and the Llama block), two sequences prefilled together in
// chunks through a shuffled paged cache, then decoded together for a few
// steps on the same tokens. Per logits row: cosine similarity >= 0.999, and
// the same argmax wherever the reference's top-2 gap exceeds 0.05 (closer
// calls may legitimately flip under bf16).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/transformer.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/testing/test_model.h"

namespace duet::kernels::testing {
namespace {

using model::SeqChunk;
using model::Transformer;

struct RowStats {
  double min_cosine = 1.0;
  double max_abs = 0.0;
  int checked_argmax = 0;
};

// Compares [rows, vocab] logits row by row.
void CompareLogits(const std::vector<float>& got, const std::vector<float>& want,
                   int64_t vocab, const std::string& what, RowStats& stats) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const int64_t rows = static_cast<int64_t>(want.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * vocab;
    const float* w = want.data() + r * vocab;
    double dot = 0, gg = 0, ww = 0;
    int64_t best = 0;
    int64_t best_got = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      ASSERT_TRUE(std::isfinite(g[i])) << what << " row " << r << " col " << i;
      dot += double{g[i]} * w[i];
      gg += double{g[i]} * g[i];
      ww += double{w[i]} * w[i];
      stats.max_abs = std::max(stats.max_abs, std::fabs(double{g[i]} - w[i]));
      if (w[i] > w[best]) best = i;
      if (g[i] > g[best_got]) best_got = i;
    }
    float second = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i) {
      if (i != best) second = std::max(second, w[i]);
    }
    const double cosine = dot / std::sqrt(gg * ww);
    stats.min_cosine = std::min(stats.min_cosine, cosine);
    EXPECT_GE(cosine, 0.999) << what << " row " << r;
    if (w[best] - second > 0.05f) {
      ++stats.checked_argmax;
      EXPECT_EQ(best_got, best) << what << " row " << r << " (gap "
                                << w[best] - second << ")";
    }
  }
}

std::unique_ptr<Transformer> LoadCuda(const std::string& dir,
                                      const CudaBackendOptions& options = {}) {
  auto backend = MakeCudaBackend(0, options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return nullptr;
  auto m = Transformer::Load(dir, std::move(*backend));
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

class CudaModelTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaModelTest, ChunkedPrefillThenDecodeMatchesCpu) {
  DUET_SKIP_WITHOUT_CUDA();
  const std::string& dir = duet::testing::SyntheticModelDir(GetParam());
  std::unique_ptr<Transformer> models[2] = {duet::testing::LoadCpuModel(dir),
                                            LoadCuda(dir)};
  ASSERT_TRUE(models[0] && models[1]);
  const int64_t vocab = models[0]->config().vocab_size;
  constexpr int32_t kBlockSize = 16;
  constexpr int32_t kBlocks = 64;
  constexpr int32_t kChunk = 48;
  constexpr int kDecodeSteps = 6;

  // Two prompts, blocks handed out in a shuffled order.
  std::vector<int32_t> prompts[2] = {duet::testing::LcgPrompt(150, 5000),
                                     duet::testing::LcgPrompt(37, 5000)};
  std::vector<BlockId> order;
  for (int32_t i = 0; i < kBlocks; ++i) order.push_back(BlockId(i));
  std::shuffle(order.begin(), order.end(), std::mt19937(5));
  const std::vector<BlockId> blocks[2] = {
      std::vector<BlockId>(order.begin(), order.begin() + 20),
      std::vector<BlockId>(order.begin() + 20, order.begin() + 40)};

  std::vector<model::KvCacheStorage> caches;
  for (auto& m : models) {
    auto cache = m->AllocateKvCache(kBlockSize, kBlocks);
    ASSERT_TRUE(cache.ok()) << cache.status();
    caches.push_back(std::move(*cache));
  }
  RowStats stats;
  auto forward_both = [&](kernels::AttentionMode mode,
                          const std::vector<SeqChunk>& chunks,
                          const std::string& what) -> std::vector<float> {
    auto step = model::BuildStep(mode, chunks, kBlockSize);
    EXPECT_TRUE(step.ok()) << step.status();
    if (!step.ok()) return {};
    std::vector<float> out[2];
    for (int i = 0; i < 2; ++i) {
      auto logits = models[i]->Forward(*step, caches[i], kBlockSize);
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return {};
      out[i] = std::move(*logits);
    }
    CompareLogits(out[1], out[0], vocab, what, stats);
    return out[0];
  };

  // Chunked prefill of both prompts, batched, logits for every token.
  int32_t done[2] = {0, 0};
  for (int round = 0; done[0] < 150 || done[1] < 37; ++round) {
    std::vector<SeqChunk> chunks;
    for (int s = 0; s < 2; ++s) {
      const int32_t len = static_cast<int32_t>(prompts[s].size());
      if (done[s] >= len) continue;
      const int32_t n = std::min(kChunk, len - done[s]);
      chunks.push_back(SeqChunk{
          std::span<const int32_t>(prompts[s]).subspan(done[s], n), done[s],
          blocks[s], /*all_logits=*/true});
      done[s] += n;
    }
    forward_both(kernels::AttentionMode::kPrefill, chunks,
                 absl::StrCat(GetParam(), " prefill round ", round));
  }

  // Decode both sequences together on the reference's greedy tokens.
  std::vector<int32_t> next[2] = {{prompts[0].back()}, {prompts[1].back()}};
  for (int s = 0; s < 2; ++s) next[s][0] = (prompts[s].back() + 1) % 5000;
  for (int step = 0; step < kDecodeSteps; ++step) {
    std::vector<SeqChunk> chunks;
    for (int s = 0; s < 2; ++s) {
      chunks.push_back(SeqChunk{next[s], done[s], blocks[s], false});
    }
    const std::vector<float> ref =
        forward_both(kernels::AttentionMode::kDecode, chunks,
                     absl::StrCat(GetParam(), " decode step ", step));
    ASSERT_EQ(static_cast<int64_t>(ref.size()), 2 * vocab);
    for (int s = 0; s < 2; ++s) {
      ++done[s];
      const float* row = ref.data() + s * vocab;
      next[s][0] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }
  std::printf("[model] %s: min cosine %.6f, max |logit diff| %.4g, argmax "
              "checked on %d rows\n",
              GetParam(), stats.min_cosine, stats.max_abs,
              stats.checked_argmax);
}

// Decode through recorded graphs (padded batch buckets, replays on new
// metadata, a bucket re-recorded when contexts outgrow its block tables)
// against the same model run op by op. The parameter is
// gemm_autotune_max_tokens: with it, the graphs' cuBLASLt GEMMs are first
// used, so tuned, while their graph is being captured.
class CudaGraphTest : public ::testing::TestWithParam<int> {};

TEST_P(CudaGraphTest, DecodeGraphsMatchEagerAcrossBucketsAndGrowth) {
  DUET_SKIP_WITHOUT_CUDA();
  const std::string& dir = duet::testing::SyntheticModelDir("tiny");
  CudaBackendOptions options;
  options.gemm_autotune_max_tokens = GetParam();
  std::unique_ptr<Transformer> models[2] = {LoadCuda(dir, options),
                                            LoadCuda(dir, options)};
  ASSERT_TRUE(models[0] && models[1]);
  models[1]->set_step_graphs(false);
  ASSERT_TRUE(models[0]->step_graphs());
  const int64_t vocab = models[0]->config().vocab_size;
  constexpr int32_t kBlockSize = 16;
  constexpr int kSeqs = 5;
  constexpr int32_t kBlocksPerSeq = 24;  // 384 tokens
  std::vector<model::KvCacheStorage> caches;
  for (auto& m : models) {
    auto cache = m->AllocateKvCache(kBlockSize, kSeqs * kBlocksPerSeq);
    ASSERT_TRUE(cache.ok()) << cache.status();
    caches.push_back(std::move(*cache));
  }
  const int32_t lengths[kSeqs] = {200, 230, 90, 17, 250};
  std::vector<int32_t> prompts[kSeqs];
  std::vector<BlockId> blocks[kSeqs];
  int32_t done[kSeqs];
  int32_t next[kSeqs];
  RowStats stats;
  auto run = [&](kernels::AttentionMode mode,
                 const std::vector<SeqChunk>& chunks, const std::string& what) {
    auto step = model::BuildStep(mode, chunks, kBlockSize);
    EXPECT_TRUE(step.ok()) << step.status();
    std::vector<float> out[2];
    for (int i = 0; i < 2; ++i) {
      auto logits = models[i]->Forward(*step, caches[i], kBlockSize);
      EXPECT_TRUE(logits.ok()) << what << ": " << logits.status();
      if (logits.ok()) out[i] = std::move(*logits);
    }
    CompareLogits(out[0], out[1], vocab, what, stats);
    return out[1];
  };
  for (int s = 0; s < kSeqs; ++s) {
    prompts[s] = duet::testing::LcgPrompt(lengths[s], 700 + s);
    for (int32_t b = 0; b < kBlocksPerSeq; ++b) {
      blocks[s].push_back(BlockId(s + kSeqs * b));  // interleaved
    }
    const SeqChunk chunk{prompts[s], 0, blocks[s]};
    const std::vector<float> ref = run(kernels::AttentionMode::kPrefill,
                                       {chunk}, absl::StrCat("prefill ", s));
    ASSERT_EQ(static_cast<int64_t>(ref.size()), vocab);
    done[s] = lengths[s];
    next[s] = static_cast<int32_t>(std::max_element(ref.begin(), ref.end()) -
                                   ref.begin());
  }
  // Batches of 1, 3 (bucket 4: one padding row) and 5 (bucket 8) in turn;
  // sequence 4 grows past 256 tokens, outgrowing 16-block tables.
  const std::vector<std::vector<int>> batches = {{4}, {0, 4, 2}, {0, 1, 2, 3, 4}};
  for (int step = 0; step < 45; ++step) {
    const std::vector<int>& batch = batches[step % 3];
    std::vector<SeqChunk> chunks;
    for (int s : batch) {
      chunks.push_back(SeqChunk{{&next[s], 1}, done[s], blocks[s]});
    }
    const std::vector<float> ref = run(kernels::AttentionMode::kDecode, chunks,
                                       absl::StrCat("decode step ", step));
    ASSERT_EQ(static_cast<int64_t>(ref.size()),
              static_cast<int64_t>(batch.size()) * vocab);
    for (size_t i = 0; i < batch.size(); ++i) {
      const float* row = ref.data() + i * vocab;
      ++done[batch[i]];
      next[batch[i]] =
          static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }
  EXPECT_GT(done[4], 256 + 8);
  // A failed capture would fall back to op by op and still match.
  EXPECT_TRUE(models[0]->step_graphs());
  std::printf("[graphs] decode graphs vs eager: min cosine %.7f, max |logit "
              "diff| %.4g, argmax checked on %d rows\n",
              stats.min_cosine, stats.max_abs, stats.checked_argmax);
  EXPECT_GT(stats.min_cosine, 0.99999);
}

INSTANTIATE_TEST_SUITE_P(Presets, CudaModelTest,
                         ::testing::Values("tiny", "tiny-llama"));
INSTANTIATE_TEST_SUITE_P(GemmAutotune, CudaGraphTest,
                         ::testing::Values(0, 256));

}  // namespace
}  // namespace duet::kernels::testing
