// Paged attention on the CUDA backend against the CPU reference: prefill
// (tensor-core kernel with 16 and with 32 query rows per warp, with keys
// split over CTAs where a step has few query tiles and without, and the
// per-query path as a second implementation) and decode (flash-decoding
// with and without context splits), over head_dim 16/64/128, GQA group
// sizes 1/2/4/8, block sizes 16/32, contexts from 1 to 8192 and decode
// batches up to 256. Inputs are random bf16 values; the KV cache is random
// everywhere (also in blocks no sequence owns) and block tables are
// shuffled. One decode test runs behind the kernel that writes the newest
// keys, as in the model, to check the early-start ordering.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
// GCC 12 reports a false -Wmaybe-uninitialized inside absl::InlinedVector's
// move (Tensor's move assignment, via MustUpload) whenever it emits
// MustUpload out of line, which depends on inlining decisions in this file.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "kernels/backend.h"
#include "kernels/cuda/attention.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#pragma GCC diagnostic pop

namespace duet::kernels::testing {
namespace {

constexpr int32_t kVocab = 1000;

struct Geometry {
  int32_t head_dim;
  int32_t group;
  int32_t num_kv_heads;
  int32_t block_size;
};

std::string Tag(const char* what, const Geometry& g) {
  return absl::StrCat(what, " hd=", g.head_dim, " g=", g.group,
                      " kv=", g.num_kv_heads, " bs=", g.block_size);
}

class AttentionTest : public CudaVsCpuTest {
 protected:
  void SetUp() override {
    CudaVsCpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    CudaBackendOptions options;
    options.tensor_core_prefill = false;
    auto be = MakeCudaBackend(0, options);
    ASSERT_TRUE(be.ok()) << be.status();
    cuda_per_query_ = std::move(*be);
    CudaBackendOptions narrow;
    narrow.prefill_warp_rows = 16;
    narrow.prefill_split_kv = true;
    be = MakeCudaBackend(0, narrow);
    ASSERT_TRUE(be.ok()) << be.status();
    cuda_narrow_ = std::move(*be);
    for (const bool split : {false, true}) {
      CudaBackendOptions o;
      o.prefill_split_kv = split;
      be = MakeCudaBackend(0, o);
      ASSERT_TRUE(be.ok()) << be.status();
      (split ? cuda_split_ : cuda_unsplit_) = std::move(*be);
    }
  }

  // One attention call on `be` with fresh uploads and a poisoned output.
  std::vector<float> Run(Backend& be, const StepInputs& step,
                         const AttentionShape& s,
                         const std::vector<float>& qkv,
                         const std::vector<float>& cache) {
    const int64_t t = step.num_tokens();
    const absl::Status begin = be.BeginStep(step, s, kVocab);
    EXPECT_TRUE(begin.ok()) << begin;
    Tensor tq = MustUpload(be, qkv, {t, s.qkv_width()});
    Tensor tc = MustUpload(
        be, cache, {s.num_blocks, 2, s.num_kv_heads, s.block_size, s.head_dim});
    Tensor out = Poisoned(be, {t, int64_t{s.num_heads} * s.head_dim});
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    const absl::Status st =
        be.Attention(step, s, tq.view(), tc.view(), scale, out.view());
    EXPECT_TRUE(st.ok()) << st;
    return Download(be, out);
  }

  // Random inputs for `seqs`, the CPU reference, and every CUDA path that
  // applies to `mode`, compared element by element.
  void Check(const Geometry& g, AttentionMode mode,
             const std::vector<SeqSpec>& seqs, uint32_t seed,
             float q_max = 1.0f) {
    std::mt19937 rng(seed);
    const int32_t blocks = BlocksFor(seqs, g.block_size) + 5;
    const AttentionShape s{g.group * g.num_kv_heads, g.num_kv_heads,
                           g.head_dim, g.block_size, blocks};
    const StepInputs step =
        MakeStep(mode, seqs, g.block_size, blocks, kVocab, rng);
    std::vector<float> qkv =
        RandomBf16(rng, int64_t{step.num_tokens()} * s.qkv_width());
    if (q_max != 1.0f) {  // larger queries: sharper, more peaked softmax
      const std::vector<float> q = RandomBf16(
          rng, int64_t{step.num_tokens()} * s.qkv_width(), 0.5f, q_max);
      const int64_t q_width = int64_t{s.num_heads} * s.head_dim;
      for (int64_t t = 0; t < step.num_tokens(); ++t) {
        for (int64_t i = 0; i < q_width; ++i) {
          qkv[t * s.qkv_width() + i] = q[t * s.qkv_width() + i];
        }
      }
    }
    const std::vector<float> cache = RandomBf16(
        rng, int64_t{blocks} * 2 * s.num_kv_heads * g.block_size * g.head_dim);
    const std::vector<float> want = Run(*cpu_, step, s, qkv, cache);
    const bool prefill = mode == AttentionMode::kPrefill;
    const Tolerance tol = AttentionTol(g.head_dim);
    EXPECT_TRUE(AllClose(Run(*cuda_, step, s, qkv, cache), want, tol,
                         Tag(prefill ? "prefill 32 rows/warp" : "decode", g)));
    if (prefill) {
      EXPECT_TRUE(AllClose(Run(*cuda_narrow_, step, s, qkv, cache), want, tol,
                           Tag("prefill 16 rows/warp", g)));
      EXPECT_TRUE(AllClose(Run(*cuda_unsplit_, step, s, qkv, cache), want, tol,
                           Tag("prefill 32 rows/warp, keys unsplit", g)));
      EXPECT_TRUE(AllClose(Run(*cuda_split_, step, s, qkv, cache), want, tol,
                           Tag("prefill 32 rows/warp, keys split", g)));
      EXPECT_TRUE(AllClose(Run(*cuda_per_query_, step, s, qkv, cache), want,
                           tol, Tag("prefill per-query", g)));
    }
  }

  std::unique_ptr<Backend> cuda_per_query_;
  // Tensor-core prefill with 16 query rows per warp (cuda_ has the
  // default, 32), so both variants are checked on every shape.
  std::unique_ptr<Backend> cuda_narrow_;
  // Tensor-core prefill that never splits keys, and one that splits them
  // when a step has few query tiles (as most tests here have), whatever
  // the default.
  std::unique_ptr<Backend> cuda_unsplit_;
  std::unique_ptr<Backend> cuda_split_;
};

// Sequences of one step: a fresh prompt, a chunk after a cached prefix, a
// single-token chunk, and one that ends exactly on a block boundary.
const std::vector<SeqSpec> kMixedPrefill = {
    {0, 100}, {300, 77}, {5, 1}, {16, 16}};

TEST_F(AttentionTest, PrefillGrid) {
  uint32_t seed = 100;
  for (int32_t hd : {16, 64, 128}) {
    for (int32_t group : {1, 2, 4, 8}) {
      for (int32_t bs : {16, 32}) {
        Check({hd, group, 2, bs}, AttentionMode::kPrefill, kMixedPrefill,
              ++seed);
      }
    }
  }
}

TEST_F(AttentionTest, PrefillLongPrefix) {
  // A chunk at the end of a ~8k context, and several sequences at once.
  Check({128, 4, 1, 16}, AttentionMode::kPrefill, {{7900, 292}}, 201);
  Check({64, 8, 1, 32}, AttentionMode::kPrefill,
        {{4000, 200}, {0, 33}, {2047, 129}}, 202);
  Check({128, 1, 2, 32}, AttentionMode::kPrefill, {{1000, 64}, {63, 65}},
        203);
}

// Chunk lengths around the 128-row CTA of the 32-rows-per-warp kernel (128 /
// group tokens) and prefixes off the 64-key tile grid, so that CTAs end
// mid-warp, whole warps fall past the last token, and the causal diagonal
// crosses key tiles at every offset.
TEST_F(AttentionTest, PrefillTileBoundaries) {
  uint32_t seed = 250;
  for (int32_t group : {1, 2, 4, 8}) {
    const int32_t tokens = 128 / group;  // per CTA of the 32-row kernel
    Check({128, group, 2, 16}, AttentionMode::kPrefill,
          {{0, tokens - 1}, {33, tokens}, {64, tokens + 1},
           {1, 2 * tokens + 7}, {100, 3 * tokens - 5}},
          ++seed);
  }
  Check({64, 1, 1, 32}, AttentionMode::kPrefill, {{0, 300}, {17, 129}},
        ++seed);
  Check({16, 4, 2, 16}, AttentionMode::kPrefill, {{0, 97}, {63, 200}},
        ++seed);
}

// A prefix-cache hit's prefill step on the Qwen3-4B head shape on 132 SMs:
// 100 new tokens over 2,000 cached, with the split on.
cuda::PagedAttentionParams HitStep() {
  cuda::PagedAttentionParams p;
  p.num_heads = 32;
  p.num_kv_heads = 8;
  p.head_dim = 128;
  p.num_tokens = 100;
  p.num_seqs = 1;
  p.max_query_len = 100;
  p.max_seq_len = 2100;
  p.num_sms = 132;
  p.prefill_split_kv = true;
  return p;
}

// The split plan is host code: checked without a GPU (CI runs it). It
// splits a prefix-cache hit's step (4 query tiles x 8 KV heads) into whole
// 64-key tiles, never a step whose tiles fill the GPU, a short context, or
// with the option off.
TEST(PrefillSplitPlanTest, SplitsOnlyFewTilesOverLongContexts) {
  cuda::PagedAttentionParams p = HitStep();
  const size_t per_split = size_t{100} * 32 * (128 + 2) * sizeof(float);
  const size_t bytes = cuda::PrefillAttentionWorkspaceBytes(p);
  // ceil(2100 / 8 splits) rounds up to 320 keys: 7 splits.
  EXPECT_EQ(bytes, 7 * per_split);
  p.prefill_warp_rows = 16;  // 7 tiles of 16 tokens: 56 CTAs, 5 splits
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 5 * per_split);
  p.prefill_warp_rows = 32;
  p.prefill_split_kv = false;
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 0u);
  p.prefill_split_kv = true;
  p.max_seq_len = 500;  // under two splits of 256 keys
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 0u);
  p.num_tokens = p.max_query_len = p.max_seq_len = 8192;  // 2,048 CTAs
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 0u);
  p.num_tokens = p.max_query_len = 600;  // 19 tiles x 8 heads = 152 CTAs
  p.max_seq_len = 8192;
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 0u);
}

// A mixed step: the hit's 100 tokens beside 3 decode tokens. The grid has
// 4 tiles for every sequence (128 CTAs), but the decode tokens' tiles past
// their one token exit at once: counted from the host's query_start, the
// work is (4 + 3) tiles x 8 KV heads = 56 CTAs, so ceil(264 / 56) = 5
// splits of ceil(2200 / 5) -> 448 keys; counted from the grid it would be
// 128 CTAs and 3 splits.
TEST(PrefillSplitPlanTest, CountsOnlyTilesWithTokensInMixedSteps) {
  cuda::PagedAttentionParams p = HitStep();
  p.num_tokens = 103;
  p.num_seqs = 4;
  p.max_seq_len = 2200;
  const size_t per_split = size_t{103} * 32 * (128 + 2) * sizeof(float);
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 3 * per_split);
  const std::vector<int32_t> query_start = {0, 100, 101, 102, 103};
  p.host_query_start = query_start.data();
  EXPECT_EQ(cuda::PrefillAttentionWorkspaceBytes(p), 5 * per_split);
}

// A prefix-cache hit's step and others with few query tiles over long
// contexts, so that the split backends split (see the plan test above), plus
// splits whose keys a tile never reaches (the early tiles of a long
// suffix, a short sequence next to a long one) and sharp scores, where the
// merge's max weights matter most.
TEST_F(AttentionTest, PrefillSplitKeysAfterCachedPrefix) {
  Check({128, 4, 8, 16}, AttentionMode::kPrefill, {{2000, 100}}, 401);
  Check({128, 4, 2, 16}, AttentionMode::kPrefill, {{1000, 300}, {3000, 7}},
        402);
  Check({64, 2, 2, 32}, AttentionMode::kPrefill, {{5000, 1}, {777, 64}}, 403,
        8.0f);
  Check({16, 8, 1, 16}, AttentionMode::kPrefill, {{600, 130}}, 404);
  // A colocated node's mixed step: a prefix-cache hit's chunk beside decode
  // tokens of long contexts (split by the real tiles, see the plan test).
  Check({128, 4, 8, 16}, AttentionMode::kPrefill,
        {{2000, 100}, {2150, 1}, {1900, 1}, {2199, 1}}, 405);
}

TEST_F(AttentionTest, PrefillSharpScores) {
  Check({128, 2, 2, 16}, AttentionMode::kPrefill, kMixedPrefill, 301, 8.0f);
  Check({64, 4, 2, 32}, AttentionMode::kPrefill, {{1500, 90}}, 302, 8.0f);
}

// A whole 8192-token prompt in one chunk: the tensor-core kernel against
// the per-query kernel on every row, and against the CPU on sampled rows
// (the full CPU reference would take minutes). The CPU computes a sampled
// token as a one-token "sequence" that shares the prompt's block table.
TEST_F(AttentionTest, PrefillFull8kPrompt) {
  const Geometry g{128, 4, 2, 16};
  const int32_t len = 8192;
  std::mt19937 rng(401);
  const int32_t blocks = len / g.block_size + 3;
  const AttentionShape s{g.group * g.num_kv_heads, g.num_kv_heads, g.head_dim,
                         g.block_size, blocks};
  const StepInputs step = MakeStep(AttentionMode::kPrefill, {{0, len}},
                                   g.block_size, blocks, kVocab, rng);
  const std::vector<float> qkv = RandomBf16(rng, int64_t{len} * s.qkv_width());
  const std::vector<float> cache = RandomBf16(
      rng, int64_t{blocks} * 2 * s.num_kv_heads * g.block_size * g.head_dim);
  const std::vector<float> per_query = Run(*cuda_per_query_, step, s, qkv, cache);
  const Tolerance tol = AttentionTol(g.head_dim);

  std::vector<int32_t> rows = {0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129,
                               1000, 4095, 4096, 8190, 8191};
  for (int i = 0; i < 32; ++i) rows.push_back(static_cast<int32_t>(rng() % len));
  StepInputs sampled;
  sampled.mode = AttentionMode::kDecode;
  sampled.max_blocks_per_seq = step.max_blocks_per_seq;
  sampled.query_start.push_back(0);
  std::vector<float> sampled_qkv;
  for (int32_t r : rows) {
    sampled.token_ids.push_back(step.token_ids[r]);
    sampled.positions.push_back(r);
    sampled.slot_mapping.push_back(step.slot_mapping[r]);
    sampled.seq_lens.push_back(r + 1);
    sampled.query_start.push_back(sampled.num_tokens());
    sampled.block_tables.insert(sampled.block_tables.end(),
                                step.block_tables.begin(),
                                step.block_tables.end());
    sampled.logits_rows.push_back(sampled.num_tokens() - 1);
    sampled_qkv.insert(sampled_qkv.end(), qkv.begin() + int64_t{r} * s.qkv_width(),
                       qkv.begin() + int64_t{r + 1} * s.qkv_width());
  }
  const std::vector<float> cpu_rows = Run(*cpu_, sampled, s, sampled_qkv, cache);

  const int64_t out_width = int64_t{s.num_heads} * s.head_dim;
  for (Backend* be : {cuda_.get(), cuda_narrow_.get()}) {
    const std::string what = absl::StrCat(
        "8k prompt tc ", be == cuda_.get() ? "32" : "16", " rows/warp vs ");
    const std::vector<float> tc = Run(*be, step, s, qkv, cache);
    EXPECT_TRUE(AllClose(tc, per_query, tol,
                         Tag((what + "per-query").c_str(), g)));
    std::vector<float> got_rows;
    for (int32_t r : rows) {
      got_rows.insert(got_rows.end(), tc.begin() + r * out_width,
                      tc.begin() + (r + 1) * out_width);
    }
    EXPECT_TRUE(AllClose(got_rows, cpu_rows, tol,
                         Tag((what + "cpu (48 rows)").c_str(), g)));
  }
}

TEST_F(AttentionTest, PrefillWarpRowsMustBe16Or32) {
  CudaBackendOptions options;
  options.prefill_warp_rows = 24;
  EXPECT_EQ(MakeCudaBackend(0, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

std::vector<SeqSpec> DecodeSeqs(const std::vector<int32_t>& contexts) {
  std::vector<SeqSpec> seqs;
  for (int32_t c : contexts) seqs.push_back({c - 1, 1});
  return seqs;
}

TEST_F(AttentionTest, DecodeGrid) {
  uint32_t seed = 500;
  // Block-boundary contexts, a 1-token context, and ones past one 256-key
  // chunk of the kernel.
  const std::vector<SeqSpec> seqs =
      DecodeSeqs({1, 15, 16, 17, 255, 257, 700});
  for (int32_t hd : {16, 64, 128}) {
    for (int32_t group : {1, 2, 4, 8}) {
      for (int32_t bs : {16, 32}) {
        Check({hd, group, 2, bs}, AttentionMode::kDecode, seqs, ++seed);
      }
    }
  }
}

TEST_F(AttentionTest, DecodeLongContextsSplit) {
  // Few CTAs: the context is split across CTAs and merged.
  for (int32_t group : {1, 4, 8}) {
    Check({128, group, 2, 16}, AttentionMode::kDecode, DecodeSeqs({8192}),
          600 + group);
    Check({128, group, 8, 32}, AttentionMode::kDecode,
          DecodeSeqs({8192, 1, 4097, 300}), 610 + group);
  }
  Check({64, 2, 2, 16}, AttentionMode::kDecode, DecodeSeqs({8000, 2049}), 620);
  Check({16, 2, 2, 16}, AttentionMode::kDecode, DecodeSeqs({5000}), 621);
  Check({128, 2, 2, 16}, AttentionMode::kDecode, DecodeSeqs({6000, 33}), 622,
        8.0f);
}

TEST_F(AttentionTest, DecodeLargeBatch) {
  std::mt19937 rng(700);
  for (int32_t batch : {64, 256}) {
    std::vector<int32_t> contexts(batch);
    for (int32_t& c : contexts) c = 1 + static_cast<int32_t>(rng() % 1024);
    Check({128, batch == 256 ? 8 : 4, 1, 16}, AttentionMode::kDecode,
          DecodeSeqs(contexts), 700 + batch);
  }
  std::vector<int32_t> contexts(128);
  for (int32_t& c : contexts) c = 1 + static_cast<int32_t>(rng() % 600);
  Check({64, 8, 1, 32}, AttentionMode::kDecode, DecodeSeqs(contexts), 710);
}

// At decode the attention kernel starts its K/V copies before its
// predecessor finishes (kernels/cuda/pdl.h); only Q and the newest key wait.
// Here the predecessor is the fused QK-norm/RoPE + KV write (a programmatic
// dependent launch, as in the model) and the newest keys' slots hold NaN
// until it writes them: an early read of one would poison the output.
// Contexts put the newest key first, mid and last in a 16-key tile, in the
// first prologue tile and past it, with and without context splits.
TEST_F(AttentionTest, DecodeWaitsForTheKeyItsPredecessorWrites) {
  std::mt19937 rng(800);
  for (const Geometry g : {Geometry{128, 4, 2, 16}, Geometry{64, 8, 1, 32}}) {
    const std::vector<SeqSpec> seqs =
        DecodeSeqs({1, 16, 17, 64, 65, 129, 300, 2049});
    const int32_t blocks = BlocksFor(seqs, g.block_size) + 5;
    const AttentionShape s{g.group * g.num_kv_heads, g.num_kv_heads,
                           g.head_dim, g.block_size, blocks};
    const StepInputs step =
        MakeStep(AttentionMode::kDecode, seqs, g.block_size, blocks, kVocab,
                 rng);
    const int64_t t = step.num_tokens();
    const std::vector<float> qkv = RandomBf16(rng, t * s.qkv_width());
    std::vector<float> cache = RandomBf16(
        rng, int64_t{blocks} * 2 * s.num_kv_heads * g.block_size * g.head_dim);
    for (const int64_t slot : step.slot_mapping) {
      const int64_t block = slot / g.block_size;
      const int64_t off = slot % g.block_size;
      for (int64_t kv = 0; kv < 2; ++kv) {
        for (int64_t h = 0; h < s.num_kv_heads; ++h) {
          const int64_t row =
              ((block * 2 + kv) * s.num_kv_heads + h) * g.block_size + off;
          for (int64_t d = 0; d < g.head_dim; ++d) {
            cache[row * g.head_dim + d] = kNaN;
          }
        }
      }
    }
    std::vector<float> inv_freq(g.head_dim / 2);
    for (int32_t i = 0; i < g.head_dim / 2; ++i) {
      inv_freq[i] = static_cast<float>(
          1.0 / std::pow(1e6, 2.0 * i / static_cast<double>(g.head_dim)));
    }
    std::vector<float> out[2];
    Backend* backends[2] = {cpu_.get(), cuda_.get()};
    for (int i = 0; i < 2; ++i) {
      Backend& be = *backends[i];
      const absl::Status begin = be.BeginStep(step, s, kVocab);
      ASSERT_TRUE(begin.ok()) << begin;
      Tensor tq = MustUpload(be, qkv, {t, s.qkv_width()});
      Tensor tc = MustUpload(be, cache,
                             {s.num_blocks, 2, s.num_kv_heads, s.block_size,
                              s.head_dim});
      Tensor tf = MustUpload(be, inv_freq, {g.head_dim / 2}, DType::kF32);
      Tensor o = Poisoned(be, {t, int64_t{s.num_heads} * s.head_dim});
      ASSERT_TRUE(be.QkNormRopeWriteKv(step, s, tq.view(), nullptr, nullptr,
                                       1e-6f, tf.view(), tc.view())
                      .ok());
      const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
      ASSERT_TRUE(
          be.Attention(step, s, tq.view(), tc.view(), scale, o.view()).ok());
      out[i] = Download(be, o);
    }
    EXPECT_TRUE(AllClose(out[1], out[0], AttentionTol(g.head_dim),
                         Tag("decode after its KV write", g)));
  }
}

}  // namespace
}  // namespace duet::kernels::testing
