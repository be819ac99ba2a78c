// Paging and chunking must not change the math: chunked prefill equals
// unchunked, physical block order does not matter, decode after prefill
// reproduces a full forward, and a batch equals its sequences run alone.
#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_model.h"

namespace duet::model {
namespace {

using kernels::AttentionMode;
constexpr int32_t kNumBlocks = 128;  // 100 tokens at block size 1

class TransformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadCpuModel(testing::SyntheticModelDir("tiny"));
    ASSERT_NE(model_, nullptr);
    vocab_ = model_->config().vocab_size;
  }

  KvCacheStorage NewCache(int32_t block_size) {
    auto cache = model_->AllocateKvCache(block_size, kNumBlocks);
    EXPECT_TRUE(cache.ok()) << cache.status();
    return std::move(*cache);
  }

  static std::vector<BlockId> Blocks(bool shuffled, uint32_t seed = 1) {
    std::vector<BlockId> blocks;
    for (int32_t i = 0; i < kNumBlocks; ++i) blocks.push_back(BlockId(i));
    if (shuffled) std::shuffle(blocks.begin(), blocks.end(), std::mt19937(seed));
    return blocks;
  }

  // Max |a - b| relative to the largest |b|.
  static double RelDiff(const std::vector<float>& a,
                        const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    double diff = 0, scale = 0;
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      diff = std::max(diff, double{std::abs(a[i] - b[i])});
      scale = std::max(scale, double{std::abs(b[i])});
    }
    return diff / scale;
  }

  std::unique_ptr<Transformer> model_;
  int32_t vocab_ = 0;
};

TEST_F(TransformerTest, ChunkedPrefillEqualsUnchunked) {
  const auto prompt = testing::LcgPrompt(150, 100000);
  auto cache = NewCache(16);
  const auto blocks = Blocks(false);
  const auto whole = testing::PrefillAllLogits(*model_, cache, prompt, 150,
                                               blocks, 16);
  ASSERT_EQ(whole.size(), 150u * vocab_);
  for (int32_t chunk : {1, 7, 64}) {
    auto other = NewCache(16);
    const auto chunked = testing::PrefillAllLogits(*model_, other, prompt,
                                                   chunk, blocks, 16);
    EXPECT_LT(RelDiff(chunked, whole), 1e-5) << "chunk " << chunk;
  }
}

TEST_F(TransformerTest, RandomPhysicalBlockOrderEqualsContiguous) {
  const auto prompt = testing::LcgPrompt(100, 100000);
  for (int32_t block_size : {1, 16, 32}) {
    auto a = NewCache(block_size);
    auto b = NewCache(block_size);
    const auto contiguous = testing::PrefillAllLogits(
        *model_, a, prompt, 33, Blocks(false), block_size);
    const auto shuffled = testing::PrefillAllLogits(
        *model_, b, prompt, 33, Blocks(true, block_size), block_size);
    EXPECT_LT(RelDiff(shuffled, contiguous), 1e-5) << "block " << block_size;
  }
}

TEST_F(TransformerTest, DecodeAfterPrefillReproducesFullForward) {
  const auto tokens = testing::LcgPrompt(60, 100000);
  auto full_cache = NewCache(16);
  const auto full = testing::PrefillAllLogits(*model_, full_cache, tokens, 60,
                                              Blocks(false), 16);
  // Prefill 20 tokens, then decode the remaining 40 one at a time on
  // shuffled blocks; every decode step's logits equal the full forward's.
  auto cache = NewCache(16);
  const auto blocks = Blocks(true, 9);
  const std::vector<int32_t> head(tokens.begin(), tokens.begin() + 20);
  const auto prefill =
      testing::PrefillAllLogits(*model_, cache, head, 20, blocks, 16);
  const std::vector<float> full_head(full.begin(), full.begin() + 20 * vocab_);
  EXPECT_LT(RelDiff(prefill, full_head), 1e-5);
  for (int32_t pos = 20; pos < 60; ++pos) {
    const SeqChunk chunk{{&tokens[pos], 1}, pos, blocks};
    auto step = BuildStep(AttentionMode::kDecode, {&chunk, 1}, 16);
    ASSERT_TRUE(step.ok());
    auto logits = model_->Forward(*step, cache, 16);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const std::vector<float> want(full.begin() + int64_t{pos} * vocab_,
                                  full.begin() + int64_t{pos + 1} * vocab_);
    ASSERT_LT(RelDiff(*logits, want), 1e-5) << "position " << pos;
  }
}

TEST_F(TransformerTest, BatchedStepEqualsSequencesAlone) {
  // Three sequences of different lengths in one prefill step, then one
  // batched decode step, against each run alone.
  const std::vector<std::vector<int32_t>> prompts = {
      testing::LcgPrompt(5, 100000), testing::LcgPrompt(40, 100000),
      testing::LcgPrompt(17, 100000)};
  const auto all = Blocks(true, 3);
  std::vector<std::vector<BlockId>> tables = {
      {all.begin(), all.begin() + 10},
      {all.begin() + 10, all.begin() + 20},
      {all.begin() + 20, all.begin() + 30}};
  auto cache = NewCache(16);
  std::vector<SeqChunk> chunks;
  for (size_t s = 0; s < prompts.size(); ++s) {
    chunks.push_back({prompts[s], 0, tables[s]});
  }
  auto step = BuildStep(AttentionMode::kPrefill, chunks, 16);
  ASSERT_TRUE(step.ok());
  auto batched = model_->Forward(*step, cache, 16);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_EQ(batched->size(), 3u * vocab_);

  const std::vector<int32_t> next = {11, 22, 33};
  std::vector<SeqChunk> decode;
  for (size_t s = 0; s < prompts.size(); ++s) {
    decode.push_back({{&next[s], 1}, static_cast<int32_t>(prompts[s].size()),
                      tables[s]});
  }
  auto dstep = BuildStep(AttentionMode::kDecode, decode, 16);
  ASSERT_TRUE(dstep.ok());
  auto batched_decode = model_->Forward(*dstep, cache, 16);
  ASSERT_TRUE(batched_decode.ok());

  for (size_t s = 0; s < prompts.size(); ++s) {
    std::vector<int32_t> seq = prompts[s];
    seq.push_back(next[s]);
    auto alone_cache = NewCache(16);
    const auto alone = testing::PrefillAllLogits(
        *model_, alone_cache, seq, static_cast<int32_t>(seq.size()),
        Blocks(false), 16);
    const size_t n = prompts[s].size();
    const std::vector<float> want_prefill(
        alone.begin() + (n - 1) * vocab_, alone.begin() + n * vocab_);
    const std::vector<float> got_prefill(batched->begin() + s * vocab_,
                                         batched->begin() + (s + 1) * vocab_);
    EXPECT_LT(RelDiff(got_prefill, want_prefill), 1e-5) << "seq " << s;
    const std::vector<float> want_decode(alone.begin() + n * vocab_,
                                         alone.begin() + (n + 1) * vocab_);
    const std::vector<float> got_decode(
        batched_decode->begin() + s * vocab_,
        batched_decode->begin() + (s + 1) * vocab_);
    EXPECT_LT(RelDiff(got_decode, want_decode), 1e-5) << "seq " << s;
  }
}

TEST_F(TransformerTest, BuildStepRejectsBadChunks) {
  const std::vector<int32_t> tokens = {1, 2, 3};
  const std::vector<BlockId> one = {BlockId(0)};
  SeqChunk too_long{tokens, 15, one};  // 18 tokens need 2 blocks of 16
  EXPECT_EQ(BuildStep(AttentionMode::kPrefill, {&too_long, 1}, 16)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  SeqChunk empty{{}, 0, one};
  EXPECT_EQ(BuildStep(AttentionMode::kPrefill, {&empty, 1}, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildStep(AttentionMode::kPrefill, {}, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TransformerTest, ForwardRejectsInvalidSteps) {
  auto cache = NewCache(16);
  const std::vector<BlockId> blocks = {BlockId(0)};
  const std::vector<int32_t> bad_token = {vocab_};
  SeqChunk c{bad_token, 0, blocks};
  auto step = BuildStep(AttentionMode::kPrefill, {&c, 1}, 16);
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(model_->Forward(*step, cache, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A block id beyond the cache.
  const std::vector<int32_t> ok_token = {5};
  const std::vector<BlockId> far = {BlockId(kNumBlocks + 3)};
  SeqChunk d{ok_token, 0, far};
  step = BuildStep(AttentionMode::kPrefill, {&d, 1}, 16);
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(model_->Forward(*step, cache, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Decode with two tokens in a sequence.
  const std::vector<int32_t> two = {5, 6};
  SeqChunk e{two, 0, blocks};
  step = BuildStep(AttentionMode::kDecode, {&e, 1}, 16);
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(model_->Forward(*step, cache, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::model

namespace duet::model {
namespace {

TEST(DecodeGraphBucketTest, BucketsCoverEveryBatchWithBoundedPadding) {
  EXPECT_EQ(DecodeGraphBucket(1), 1);
  EXPECT_EQ(DecodeGraphBucket(3), 4);
  EXPECT_EQ(DecodeGraphBucket(8), 8);
  EXPECT_EQ(DecodeGraphBucket(9), 16);
  EXPECT_EQ(DecodeGraphBucket(65), 80);
  EXPECT_EQ(DecodeGraphBucket(257), 288);
  for (int32_t n = 1; n <= 512; ++n) {
    const int32_t b = DecodeGraphBucket(n);
    ASSERT_GE(b, n);
    if (n > 8) ASSERT_LT(b - n, n / 4 + 8) << n;
  }
}

// What the CUDA graph path runs (padding rows repeat sequence 0, wider block
// tables) must give the real rows the same logits and leave the cache as
// the unpadded step would: checked on the CPU backend, no GPU needed.
TEST_F(TransformerTest, PaddedDecodeStepChangesNothingForTheRealRows) {
  const std::vector<std::vector<int32_t>> prompts = {
      testing::LcgPrompt(20, 100000), testing::LcgPrompt(33, 100000),
      testing::LcgPrompt(7, 100000)};
  const auto all = Blocks(true, 9);
  std::vector<std::vector<BlockId>> tables = {
      {all.begin(), all.begin() + 4},
      {all.begin() + 4, all.begin() + 8},
      {all.begin() + 8, all.begin() + 12}};
  KvCacheStorage caches[2] = {NewCache(16), NewCache(16)};
  std::vector<SeqChunk> prefill;
  for (size_t s = 0; s < prompts.size(); ++s) {
    prefill.push_back({prompts[s], 0, tables[s]});
  }
  auto pstep = BuildStep(AttentionMode::kPrefill, prefill, 16);
  ASSERT_TRUE(pstep.ok());
  for (auto& cache : caches) ASSERT_TRUE(model_->Forward(*pstep, cache, 16).ok());

  const std::vector<int32_t> next = {5, 6, 7};
  for (int round = 0; round < 2; ++round) {
    std::vector<SeqChunk> decode;
    for (size_t s = 0; s < prompts.size(); ++s) {
      decode.push_back({{&next[s], 1},
                        static_cast<int32_t>(prompts[s].size()) + round,
                        tables[s]});
    }
    auto step = BuildStep(AttentionMode::kDecode, decode, 16);
    ASSERT_TRUE(step.ok());
    auto padded = PadDecodeStep(*step, 8, 16);
    ASSERT_TRUE(padded.ok()) << padded.status();
    EXPECT_EQ(padded->num_seqs(), 8);
    EXPECT_EQ(padded->max_blocks_per_seq, 16);
    auto plain = model_->Forward(*step, caches[0], 16);
    auto wide = model_->Forward(*padded, caches[1], 16);
    ASSERT_TRUE(plain.ok() && wide.ok());
    ASSERT_EQ(wide->size(), 8u * vocab_);
    wide->resize(plain->size());
    EXPECT_LT(RelDiff(*wide, *plain), 1e-5) << "round " << round;
  }
  // Wrong shapes are refused, not padded.
  std::vector<SeqChunk> one = {{{&next[0], 1}, 21, tables[0]}};
  auto step = BuildStep(AttentionMode::kDecode, one, 16);
  ASSERT_TRUE(step.ok());
  EXPECT_FALSE(PadDecodeStep(*step, 0, 16).ok());
  EXPECT_FALSE(PadDecodeStep(*step, 2, step->max_blocks_per_seq - 1).ok());
  EXPECT_FALSE(PadDecodeStep(*pstep, 4, 16).ok());
}

}  // namespace
}  // namespace duet::model
