// Tensor parallelism on the CPU backend (Megatron split, model/weights.h
// TpShard; ranks are threads joined by the CPU communicator): TP=2 and TP=4
// give the logits of TP=1 within fp32 tolerance, for chunked prefill over a
// cached prefix and for decode steps, on two sequences at once; every rank
// ends with bit-identical logits; greedy choices match wherever TP=1's
// top two are apart by more than the tolerance (tie-aware). A TP size that
// does not divide the heads is refused naming both numbers, and a rank
// whose peer stops fails its step instead of hanging.
#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_communicator.h"
#include "model/transformer.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

constexpr int32_t kBlockSize = 16;
constexpr int32_t kPrefillLen = 30;
constexpr int32_t kDecodeSteps = 4;

// Two sequences: a chunked prefill (16, then 14 tokens: the second chunk
// attends to a cached prefix), then kDecodeSteps decode steps of both at
// once. Returns every logits row of every step, concatenated.
absl::StatusOr<std::vector<float>> RunScript(Transformer& m) {
  DUET_ASSIGN_OR_RETURN(KvCacheStorage cache,
                        m.AllocateKvCache(kBlockSize, 16));
  const int32_t vocab_limit = 1000;
  const std::vector<int32_t> a = testing::LcgPrompt(kPrefillLen, vocab_limit);
  std::vector<int32_t> b = testing::LcgPrompt(kPrefillLen + 7, vocab_limit);
  b.erase(b.begin(), b.begin() + 7);
  const std::vector<BlockId> blocks_a = {BlockId(0), BlockId(1), BlockId(2)};
  const std::vector<BlockId> blocks_b = {BlockId(5), BlockId(3), BlockId(9)};
  std::vector<float> out;
  for (int32_t start : {0, 16}) {
    const int32_t len = start == 0 ? 16 : kPrefillLen - 16;
    const SeqChunk chunks[] = {
        {std::span<const int32_t>(a).subspan(start, len), start, blocks_a,
         true},
        {std::span<const int32_t>(b).subspan(start, len), start, blocks_b,
         true}};
    DUET_ASSIGN_OR_RETURN(
        kernels::StepInputs step,
        BuildStep(kernels::AttentionMode::kPrefill, chunks, kBlockSize));
    DUET_ASSIGN_OR_RETURN(std::vector<float> l,
                          m.Forward(step, cache, kBlockSize));
    out.insert(out.end(), l.begin(), l.end());
  }
  for (int32_t s = 0; s < kDecodeSteps; ++s) {
    // Fixed next tokens (not sampled), so every TP size runs the same
    // inputs even where greedy choices are near ties.
    const int32_t next_a[] = {100 + s};
    const int32_t next_b[] = {200 + s};
    const SeqChunk chunks[] = {{next_a, kPrefillLen + s, blocks_a},
                               {next_b, kPrefillLen + s, blocks_b}};
    DUET_ASSIGN_OR_RETURN(
        kernels::StepInputs step,
        BuildStep(kernels::AttentionMode::kDecode, chunks, kBlockSize));
    DUET_ASSIGN_OR_RETURN(std::vector<float> l,
                          m.Forward(step, cache, kBlockSize));
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

// Loads `dir` as `size` ranks and runs the script on each, one thread per
// rank; the logits of every rank.
std::vector<absl::StatusOr<std::vector<float>>> RunTp(const std::string& dir,
                                                      int size) {
  auto comms = kernels::CreateCpuCommunicators(size, absl::Seconds(60));
  EXPECT_TRUE(comms.ok()) << comms.status();
  std::vector<absl::StatusOr<std::vector<float>>> out(
      size, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      auto m = Transformer::Load(dir, kernels::MakeCpuBackend(),
                                 TpShard{r, size}, (*comms)[r].get());
      if (!m.ok()) {
        out[r] = m.status();
        (*comms)[r]->Abort();  // the others would wait for this rank
        return;
      }
      out[r] = RunScript(**m);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

void ExpectMatchesTp1(const std::string& preset, int size) {
  SCOPED_TRACE(absl::StrCat(preset, " TP=", size));
  const std::string& dir = testing::SyntheticModelDir(preset);
  std::vector<float> want;
  int32_t vocab = 0;
  {
    auto m = Transformer::Load(dir, kernels::MakeCpuBackend());
    ASSERT_TRUE(m.ok()) << m.status();
    vocab = (*m)->config().vocab_size;
    auto l = RunScript(**m);
    ASSERT_TRUE(l.ok()) << l.status();
    want = std::move(*l);
  }
  auto ranks = RunTp(dir, size);
  float max_ref = 0.0f;
  for (float v : want) max_ref = std::max(max_ref, std::abs(v));
  const float tol = 1e-4f * (1.0f + max_ref);
  for (int r = 0; r < size; ++r) {
    ASSERT_TRUE(ranks[r].ok()) << "rank " << r << ": " << ranks[r].status();
    ASSERT_EQ(ranks[r]->size(), want.size());
    if (r > 0) {
      // Every rank holds the all-reduced activations: same bits.
      ASSERT_EQ(*ranks[r], *ranks[0]) << "rank " << r << " differs from 0";
    }
  }
  const std::vector<float>& got = *ranks[0];
  float max_diff = 0.0f;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
  }
  EXPECT_LE(max_diff, tol) << "max |logit| " << max_ref;
  // Tie-aware greedy: where TP=1's best beats its second by more than the
  // tolerance, TP=N picks the same token.
  const size_t rows = want.size() / static_cast<size_t>(vocab);
  int decided = 0;
  for (size_t row = 0; row < rows; ++row) {
    const float* w = want.data() + row * vocab;
    const float* g = got.data() + row * vocab;
    const int32_t best = static_cast<int32_t>(std::max_element(w, w + vocab) - w);
    float second = -INFINITY;
    for (int32_t v = 0; v < vocab; ++v) {
      if (v != best) second = std::max(second, w[v]);
    }
    if (w[best] - second <= 2 * tol) continue;
    ++decided;
    EXPECT_EQ(std::max_element(g, g + vocab) - g, best) << "row " << row;
  }
  EXPECT_GT(decided, static_cast<int>(rows) / 2);
}

TEST(TensorParallelTest, TinyTp2MatchesTp1) { ExpectMatchesTp1("tiny", 2); }

TEST(TensorParallelTest, Qwen3BlockTp2AndTp4MatchTp1) {
  ExpectMatchesTp1("qwen3-0.6b-2l", 2);
  ExpectMatchesTp1("qwen3-0.6b-2l", 4);
}

TEST(TensorParallelTest, SizeThatDoesNotDivideTheHeadsIsRefused) {
  // tiny has 4 heads and 2 KV heads: TP=4 cannot split the KV heads.
  auto comms = kernels::CreateCpuCommunicators(4, absl::Seconds(5));
  ASSERT_TRUE(comms.ok());
  auto m = Transformer::Load(testing::SyntheticModelDir("tiny"),
                             kernels::MakeCpuBackend(), TpShard{0, 4},
                             (*comms)[0].get());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(),
              ::testing::HasSubstr("tensor-parallel size 4 does not divide "
                                   "the model's KV heads (2)"));
  // A communicator that does not match the shard is refused too.
  auto two = kernels::CreateCpuCommunicators(2, absl::Seconds(5));
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(Transformer::Load(testing::SyntheticModelDir("tiny"),
                              kernels::MakeCpuBackend(), TpShard{1, 2},
                              (*two)[0].get())
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorParallelTest, ARankWhosePeerStopsFailsItsStep) {
  const std::string& dir = testing::SyntheticModelDir("tiny");
  auto comms = kernels::CreateCpuCommunicators(2, absl::Milliseconds(500));
  ASSERT_TRUE(comms.ok());
  auto m = Transformer::Load(dir, kernels::MakeCpuBackend(), TpShard{0, 2},
                             (*comms)[0].get());
  ASSERT_TRUE(m.ok()) << m.status();
  // Rank 1 never runs: rank 0's first all-reduce times out.
  const absl::Time start = absl::Now();
  auto l = RunScript(**m);
  EXPECT_EQ(l.status().code(), absl::StatusCode::kDeadlineExceeded)
      << l.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // And stays failed (the group is aborted), at once.
  EXPECT_EQ(RunScript(**m).status().code(), absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace duet::model
