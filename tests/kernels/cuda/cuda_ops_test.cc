// The CUDA backend against the CPU reference, op by op (attention has its
// own file): memory (upload/convert/download, allocator reuse, lifetime),
// embedding, RMSNorm, fused add + RMSNorm, GEMMs, SiLU * mul, QK-norm +
// RoPE, KV-cache writes, logits, and the argument errors.
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/elementwise_kernels.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace duet::kernels::testing {
namespace {

constexpr int32_t kVocab = 1000;

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

TEST_F(CudaVsCpuTest, BackendBasics) {
  EXPECT_EQ(cuda_->name(), "cuda");
  EXPECT_EQ(cuda_->device(), Device::kCuda);
  EXPECT_EQ(cuda_->activation_dtype(), DType::kBF16);
  EXPECT_EQ(MakeCudaBackend(1 << 20).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CudaVsCpuTest, UploadConvertsAndDownloadRoundTrips) {
  std::mt19937 rng(1);
  // More than two 16 MiB staging chunks, and a size that is not a multiple
  // of anything, so chunk boundaries and the tail are exercised.
  const int64_t n = (int64_t{9} << 20) + 12345;
  std::vector<float> src(n);
  std::uniform_real_distribution<float> dist(-300.0f, 300.0f);
  for (float& x : src) x = dist(rng);

  // f32 -> bf16 on the device must round exactly like the host (RNE).
  auto bf = cuda_->Upload(src.data(), DType::kF32, DType::kBF16, {n});
  ASSERT_TRUE(bf.ok()) << bf.status();
  std::vector<float> got = Download(*cuda_, *bf);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) mismatches += got[i] != RoundBf16(src[i]);
  EXPECT_EQ(mismatches, 0) << "f32 -> bf16 rounding differs from the host";

  // f32 -> f32 is exact.
  auto f = cuda_->Upload(src.data(), DType::kF32, DType::kF32, {n});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(Download(*cuda_, *f), src);

  // bf16 and f16 host sources.
  std::vector<uint16_t> b16(n), h16(n);
  ConvertFromF32(src.data(), n, DType::kBF16, b16.data());
  ConvertFromF32(src.data(), n, DType::kF16, h16.data());
  auto from_b16 = cuda_->Upload(b16.data(), DType::kBF16, DType::kBF16, {n});
  auto from_h16 = cuda_->Upload(h16.data(), DType::kF16, DType::kBF16, {n});
  ASSERT_TRUE(from_b16.ok() && from_h16.ok());
  std::vector<float> want_b(n), want_h(n);
  ConvertToF32(DType::kBF16, b16.data(), n, want_b.data());
  ConvertToF32(DType::kF16, h16.data(), n, want_h.data());
  for (float& x : want_h) x = RoundBf16(x);
  EXPECT_EQ(Download(*cuda_, *from_b16), want_b);
  EXPECT_EQ(Download(*cuda_, *from_h16), want_h);
}

TEST_F(CudaVsCpuTest, UploadConcatMixedDtypes) {
  std::mt19937 rng(2);
  const std::vector<float> a = RandomBf16(rng, 3 * 40);
  const std::vector<float> b = RandomBf16(rng, 5 * 40);
  std::vector<uint16_t> b16(b.size());
  ConvertFromF32(b.data(), b.size(), DType::kBF16, b16.data());
  const std::vector<TensorView> parts = {
      TensorView{const_cast<float*>(a.data()), DType::kF32, {3, 40},
                 Device::kCpu},
      TensorView{b16.data(), DType::kBF16, {5, 40}, Device::kCpu}};
  auto t = cuda_->UploadConcat(parts, DType::kBF16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->view().shape, Shape({8, 40}));
  std::vector<float> want = a;
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(Download(*cuda_, *t), want);

  const std::vector<TensorView> bad = {
      parts[0], TensorView{b16.data(), DType::kBF16, {5, 41}, Device::kCpu}};
  EXPECT_EQ(cuda_->UploadConcat(bad, DType::kBF16).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaVsCpuTest, AllocatorReusesFreedBlocks) {
  void* first = nullptr;
  {
    auto t = cuda_->Allocate(DType::kBF16, {37, 2560});
    ASSERT_TRUE(t.ok());
    first = t->view().data;
  }
  // The same shape comes back from the cache, not from cudaMalloc.
  auto again = cuda_->Allocate(DType::kBF16, {37, 2560});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->view().data, first);
  auto zero = cuda_->Allocate(DType::kF32, {0, 7});
  ASSERT_TRUE(zero.ok());
  EXPECT_NE(zero->view().data, nullptr);
  EXPECT_EQ(cuda_->Allocate(DType::kF32, {-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaVsCpuTest, TensorsMayOutliveTheBackend) {
  std::mt19937 rng(3);
  const std::vector<float> v = RandomBf16(rng, 1000);
  Tensor t = MustUpload(*cuda_, v, {1000});
  cuda_.reset();  // the tensor's memory stays valid until it goes
  EXPECT_FALSE(t.empty());
  t = Tensor();
}

// ---------------------------------------------------------------------------
// Row ops
// ---------------------------------------------------------------------------

TEST_F(CudaVsCpuTest, Embedding) {
  std::mt19937 rng(4);
  for (int64_t hidden : {64, 2560, 100}) {
    const std::vector<float> table = RandomBf16(rng, kVocab * hidden);
    const StepInputs step = MakeStep(AttentionMode::kPrefill,
                                     {{0, 37}, {5, 3}}, 16, 64, kVocab, rng);
    const AttentionShape shape{4, 2, 16, 16, 64};
    std::vector<float> out[2];
    Backend* backends[2] = {cpu_.get(), cuda_.get()};
    for (int i = 0; i < 2; ++i) {
      Backend& be = *backends[i];
      ASSERT_TRUE(be.BeginStep(step, shape, kVocab).ok());
      Tensor tab = MustUpload(be, table, {kVocab, hidden});
      Tensor o = Poisoned(be, {step.num_tokens(), hidden});
      ASSERT_TRUE(be.Embedding(step, tab.view(), o.view()).ok());
      out[i] = Download(be, o);
    }
    // A gather of bf16 values: exact.
    EXPECT_EQ(out[1], out[0]) << "hidden " << hidden;
  }
}

TEST_F(CudaVsCpuTest, RmsNormAndAddRmsNorm) {
  std::mt19937 rng(5);
  struct Case {
    int64_t rows, dim;
  };
  for (const Case c : {Case{1, 64}, Case{7, 2560}, Case{300, 4096},
                       Case{5, 100}, Case{3, 16384}, Case{2, 8}}) {
    const std::vector<float> x = RandomBf16(rng, c.rows * c.dim);
    const std::vector<float> r = RandomBf16(rng, c.rows * c.dim);
    const std::vector<float> w = RandomBf16(rng, c.dim, 0.5f, 1.5f);
    std::vector<float> norm[2], fused[2], resid[2];
    Backend* backends[2] = {cpu_.get(), cuda_.get()};
    for (int i = 0; i < 2; ++i) {
      Backend& be = *backends[i];
      Tensor tx = MustUpload(be, x, {c.rows, c.dim});
      Tensor tr = MustUpload(be, r, {c.rows, c.dim});
      Tensor tw = MustUpload(be, w, {c.dim});
      Tensor o1 = Poisoned(be, {c.rows, c.dim});
      Tensor o2 = Poisoned(be, {c.rows, c.dim});
      ASSERT_TRUE(be.RmsNorm(tx.view(), tw.view(), 1e-6f, o1.view()).ok());
      ASSERT_TRUE(
          be.AddRmsNorm(tx.view(), tr.view(), tw.view(), 1e-6f, o2.view())
              .ok());
      norm[i] = Download(be, o1);
      fused[i] = Download(be, o2);
      resid[i] = Download(be, tr);
    }
    const std::string tag = absl::StrCat(c.rows, "x", c.dim);
    EXPECT_TRUE(AllClose(norm[1], norm[0], kBf16Tol, "rmsnorm " + tag));
    EXPECT_TRUE(AllClose(fused[1], fused[0], kBf16Tol, "add_rmsnorm out " + tag));
    EXPECT_TRUE(
        AllClose(resid[1], resid[0], kBf16Tol, "add_rmsnorm residual " + tag));
  }
}

TEST_F(CudaVsCpuTest, RmsNormInPlace) {
  std::mt19937 rng(6);
  const std::vector<float> x = RandomBf16(rng, 9 * 2560);
  const std::vector<float> w = RandomBf16(rng, 2560);
  std::vector<float> out[2];
  Backend* backends[2] = {cpu_.get(), cuda_.get()};
  for (int i = 0; i < 2; ++i) {
    Tensor tx = MustUpload(*backends[i], x, {9, 2560});
    Tensor tw = MustUpload(*backends[i], w, {2560});
    ASSERT_TRUE(
        backends[i]->RmsNorm(tx.view(), tw.view(), 1e-5f, tx.view()).ok());
    out[i] = Download(*backends[i], tx);
  }
  EXPECT_TRUE(AllClose(out[1], out[0], kBf16Tol, "rmsnorm in place"));
}

// The L2 flush of GEMM autotuning: XOR of 32-bit words against a plain
// loop, over counts and start offsets that leave unaligned heads and tails.
TEST(CudaXorWordsTest, MatchesHostXor) {
  DUET_SKIP_WITHOUT_CUDA();
  std::mt19937 rng(21);
  constexpr int64_t kMax = (int64_t{1} << 20) + 7;
  std::vector<uint32_t> host(kMax + 8);
  for (uint32_t& w : host) w = static_cast<uint32_t>(rng());
  uint32_t* dev = nullptr;
  uint32_t* result = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dev), host.size() * 4),
            cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&result), 4), cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(dev, host.data(), host.size() * 4, cudaMemcpyHostToDevice),
      cudaSuccess);
  for (const int64_t offset : {0, 1, 2, 3, 5}) {
    for (const int64_t count : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{4},
                                int64_t{7}, int64_t{4099}, kMax}) {
      uint32_t want = 0;
      for (int64_t i = 0; i < count; ++i) want ^= host[offset + i];
      ASSERT_TRUE(
          cuda::LaunchXorWords(dev + offset, count, result, nullptr).ok());
      uint32_t got = 0xdeadbeef;
      ASSERT_EQ(cudaMemcpy(&got, result, 4, cudaMemcpyDeviceToHost),
                cudaSuccess);
      EXPECT_EQ(got, want) << "offset " << offset << " count " << count;
    }
  }
  cudaFree(dev);
  cudaFree(result);
}

TEST_F(CudaVsCpuTest, SiluMul) {
  std::mt19937 rng(7);
  for (auto [t, inter] : {std::pair<int64_t, int64_t>{5, 192}, {64, 9728},
                          {3, 100}, {1, 8}}) {
    // Gates up to +-8 reach both tails of the sigmoid.
    const std::vector<float> gu = RandomBf16(rng, t * 2 * inter, 0.05f, 8.0f);
    std::vector<float> out[2];
    Backend* backends[2] = {cpu_.get(), cuda_.get()};
    for (int i = 0; i < 2; ++i) {
      Tensor tg = MustUpload(*backends[i], gu, {t, 2 * inter});
      Tensor o = Poisoned(*backends[i], {t, inter});
      ASSERT_TRUE(backends[i]->SiluMul(tg.view(), o.view()).ok());
      out[i] = Download(*backends[i], o);
    }
    EXPECT_TRUE(AllClose(out[1], out[0], kBf16Tol,
                         absl::StrCat("silu_mul ", t, "x", inter)));
  }
}

// ---------------------------------------------------------------------------
// GEMMs
// ---------------------------------------------------------------------------

// A CUDA backend whose GEMMs of up to `small` tokens run on the small GEMM,
// of up to `skinny` on the skinny GEMM, and the rest on cuBLASLt, which
// times its candidates for GEMMs of up to `autotune` tokens.
std::unique_ptr<Backend> GemmBackend(int small, int skinny, int autotune = 0) {
  CudaBackendOptions options;
  options.small_gemm_max_tokens = small;
  options.skinny_gemm_max_tokens = skinny;
  options.gemm_autotune_max_tokens = autotune;
  auto made = MakeCudaBackend(0, options);
  EXPECT_TRUE(made.ok()) << made.status();
  return made.ok() ? std::move(*made) : nullptr;
}

TEST_F(CudaVsCpuTest, Linear) {
  std::mt19937 rng(8);
  // Also backends with the CUDA-core small GEMM up to its limit (then the
  // skinny GEMM to 32 tokens), with the skinny GEMM from 3 tokens, with
  // cuBLASLt for every GEMM, and with cuBLASLt's timed choice up to 256.
  const std::unique_ptr<Backend> wide = GemmBackend(8, 32);
  const std::unique_ptr<Backend> skinny = GemmBackend(2, 32);
  const std::unique_ptr<Backend> cublas = GemmBackend(0, 0);
  const std::unique_ptr<Backend> tuned = GemmBackend(0, 0, 256);
  ASSERT_TRUE(wide && skinny && cublas && tuned);
  struct Case {
    int64_t t, n, k;
  };
  // Tiny model, odd sizes, and Qwen3-4B's projections (qkv, o, gate_up,
  // down) at decode and prefill batch sizes. Up to 32 tokens with K a
  // multiple of 8 take the hand-written kernels, the rest cuBLASLt.
  for (const Case c :
       {Case{1, 64, 64}, Case{7, 384, 64}, Case{13, 100, 72},
        Case{1, 6144, 2560}, Case{17, 2560, 4096}, Case{64, 19456, 2560},
        Case{256, 2560, 9728}, Case{2, 2560, 4096}, Case{3, 33, 8},
        Case{4, 19456, 2560}, Case{5, 1001, 2568}, Case{6, 7, 9728},
        Case{8, 2560, 9728}, Case{9, 2560, 9728}, Case{3, 50, 36},
        Case{32, 6144, 2560}, Case{31, 2560, 9728}, Case{33, 300, 64}}) {
    const std::vector<float> x = RandomBf16(rng, c.t * c.k);
    const std::vector<float> w = RandomBf16(rng, c.n * c.k);
    std::vector<float> out[6];
    Backend* backends[6] = {cpu_.get(),   cuda_.get(),  wide.get(),
                            cublas.get(), skinny.get(), tuned.get()};
    for (int i = 0; i < 6; ++i) {
      Tensor tx = MustUpload(*backends[i], x, {c.t, c.k});
      Tensor tw = MustUpload(*backends[i], w, {c.n, c.k});
      Tensor o = Poisoned(*backends[i], {c.t, c.n});
      // Twice: the second call takes the cached cuBLASLt plan.
      for (int rep = 0; rep < 2; ++rep) {
        ASSERT_TRUE(backends[i]->Linear(tx.view(), tw.view(), o.view()).ok());
      }
      out[i] = Download(*backends[i], o);
    }
    EXPECT_TRUE(AllClose(out[1], out[0], kBf16Tol,
                         absl::StrCat("linear ", c.t, "x", c.n, "x", c.k)));
    EXPECT_TRUE(AllClose(out[2], out[0], kBf16Tol,
                         absl::StrCat("linear (small gemm to 8 tokens) ", c.t,
                                      "x", c.n, "x", c.k)));
    EXPECT_TRUE(AllClose(out[3], out[0], kBf16Tol,
                         absl::StrCat("linear (cuBLASLt only) ", c.t, "x", c.n,
                                      "x", c.k)));
    EXPECT_TRUE(AllClose(out[4], out[0], kBf16Tol,
                         absl::StrCat("linear (skinny from 3 tokens) ", c.t,
                                      "x", c.n, "x", c.k)));
    EXPECT_TRUE(AllClose(
        out[5], out[0], kBf16Tol,
        absl::StrCat("linear (cuBLASLt tuned) ", c.t, "x", c.n, "x", c.k)));
  }
}

TEST_F(CudaVsCpuTest, Logits) {
  std::mt19937 rng(9);
  // Also with cuBLASLt's timed choice (fp32 output, its own plans).
  const std::unique_ptr<Backend> tuned = GemmBackend(0, 0, 256);
  ASSERT_TRUE(tuned);
  for (int64_t hidden : {64, 2560}) {
    const int64_t vocab = 3001;
    const std::vector<SeqSpec> seqs = {{0, 9}, {4, 1}, {0, 30}};
    StepInputs step =
        MakeStep(AttentionMode::kPrefill, seqs, 16, 64, kVocab, rng);
    const AttentionShape shape{4, 2, 16, 16, 64};
    const std::vector<float> x = RandomBf16(rng, step.num_tokens() * hidden);
    const std::vector<float> head = RandomBf16(rng, vocab * hidden);
    // Gathered rows (out of order, repeated), then every row (identity).
    for (const std::vector<int32_t>& rows :
         {std::vector<int32_t>{8, 0, 39, 8, 10},
          [&] {
            std::vector<int32_t> all(step.num_tokens());
            for (int32_t r = 0; r < step.num_tokens(); ++r) all[r] = r;
            return all;
          }()}) {
      step.logits_rows = rows;
      const int64_t n_rows = static_cast<int64_t>(rows.size());
      std::vector<float> out[3];
      Backend* backends[3] = {cpu_.get(), cuda_.get(), tuned.get()};
      for (int i = 0; i < 3; ++i) {
        Backend& be = *backends[i];
        ASSERT_TRUE(be.BeginStep(step, shape, kVocab).ok());
        Tensor tx = MustUpload(be, x, {step.num_tokens(), hidden});
        Tensor th = MustUpload(be, head, {vocab, hidden});
        Tensor o = Poisoned(be, {n_rows, vocab}, DType::kF32);
        ASSERT_TRUE(be.Logits(step, tx.view(), th.view(), o.view()).ok());
        out[i] = Download(be, o);
      }
      EXPECT_TRUE(AllClose(out[1], out[0], kF32Tol,
                           absl::StrCat("logits h=", hidden, " rows=", n_rows)));
      EXPECT_TRUE(AllClose(out[2], out[0], kF32Tol,
                           absl::StrCat("logits (cuBLASLt tuned) h=", hidden,
                                        " rows=", n_rows)));
    }
  }
}

// Every launch shape of the small GEMM (1-2 tokens; warps per row 1..8,
// so K splits unevenly across lanes and segments) against the CPU
// reference, and its fused SiLU * mul against its own Linear then SiluMul
// bit for bit.
TEST_F(CudaVsCpuTest, SmallGemmShapes) {
  std::mt19937 rng(16);
  struct Case {
    int64_t t, n, k;
  };
  for (int shape = 0; shape < 11; ++shape) {
    CudaBackendOptions options;
    options.small_gemm_shape = shape;
    auto made = MakeCudaBackend(0, options);
    ASSERT_TRUE(made.ok()) << made.status();
    Backend& be = **made;
    for (const Case c : {Case{1, 6144, 2560}, Case{2, 2560, 9728},
                         Case{1, 37, 4096}, Case{2, 10, 8}, Case{1, 9, 200},
                         Case{2, 64, 1032}}) {
      const std::vector<float> x = RandomBf16(rng, c.t * c.k);
      const std::vector<float> w = RandomBf16(rng, 2 * c.n * c.k);
      const std::string tag = absl::StrCat("small gemm shape ", shape, " ",
                                           c.t, "x", c.n, "x", c.k);
      std::vector<float> lin[2], fused, unfused;
      Backend* backends[2] = {cpu_.get(), &be};
      for (int i = 0; i < 2; ++i) {
        Tensor tx = MustUpload(*backends[i], x, {c.t, c.k});
        Tensor tw = MustUpload(*backends[i], w, {2 * c.n, c.k});
        Tensor o = Poisoned(*backends[i], {c.t, 2 * c.n});
        ASSERT_TRUE(backends[i]->Linear(tx.view(), tw.view(), o.view()).ok());
        lin[i] = Download(*backends[i], o);
        if (i == 0) continue;
        Tensor act = Poisoned(be, {c.t, c.n});
        ASSERT_TRUE(be.SiluMul(o.view(), act.view()).ok());
        unfused = Download(be, act);
        Tensor act2 = Poisoned(be, {c.t, c.n});
        ASSERT_TRUE(
            be.LinearSiluMul(tx.view(), tw.view(), o.view(), act2.view()).ok());
        fused = Download(be, act2);
      }
      EXPECT_TRUE(AllClose(lin[1], lin[0], kBf16Tol, tag));
      EXPECT_EQ(fused, unfused) << tag;
    }
  }
}

// Every launch shape of the skinny GEMM (3..32 tokens: partial 8-token
// tiles, rows past a 16-row tile, K not a multiple of its 32-element chunk,
// K split unevenly over 1-8 warps) against the CPU reference, and its fused
// SiLU * mul against its own Linear then SiluMul bit for bit.
TEST_F(CudaVsCpuTest, SkinnyGemmShapes) {
  std::mt19937 rng(17);
  struct Case {
    int64_t t, n, k;
  };
  const std::vector<Case> cases = {
      {8, 3072, 2560}, {32, 1280, 9728}, {3, 37, 4096}, {16, 10, 8},
      {9, 9, 200},     {24, 64, 1032},   {31, 100, 264}, {5, 2048, 4096}};
  std::vector<std::unique_ptr<Backend>> shaped;
  for (int shape = -1; shape < 11; ++shape) {
    CudaBackendOptions options;
    options.skinny_gemm_max_tokens = 32;
    options.skinny_gemm_shape = shape;
    auto made = MakeCudaBackend(0, options);
    ASSERT_TRUE(made.ok()) << made.status();
    shaped.push_back(std::move(*made));
  }
  for (const Case c : cases) {
    const std::vector<float> x = RandomBf16(rng, c.t * c.k);
    const std::vector<float> w = RandomBf16(rng, 2 * c.n * c.k);
    Tensor cx = MustUpload(*cpu_, x, {c.t, c.k});
    Tensor cw = MustUpload(*cpu_, w, {2 * c.n, c.k});
    Tensor co = Poisoned(*cpu_, {c.t, 2 * c.n});
    ASSERT_TRUE(cpu_->Linear(cx.view(), cw.view(), co.view()).ok());
    const std::vector<float> want = Download(*cpu_, co);
    for (size_t s = 0; s < shaped.size(); ++s) {
      Backend& be = *shaped[s];
      const std::string tag =
          absl::StrCat("skinny gemm shape ", static_cast<int>(s) - 1, " ",
                       c.t, "x", c.n, "x", c.k);
      Tensor tx = MustUpload(be, x, {c.t, c.k});
      Tensor tw = MustUpload(be, w, {2 * c.n, c.k});
      Tensor o = Poisoned(be, {c.t, 2 * c.n});
      ASSERT_TRUE(be.Linear(tx.view(), tw.view(), o.view()).ok()) << tag;
      EXPECT_TRUE(AllClose(Download(be, o), want, kBf16Tol, tag));
      Tensor act = Poisoned(be, {c.t, c.n});
      ASSERT_TRUE(be.SiluMul(o.view(), act.view()).ok());
      Tensor act2 = Poisoned(be, {c.t, c.n});
      ASSERT_TRUE(
          be.LinearSiluMul(tx.view(), tw.view(), o.view(), act2.view()).ok());
      EXPECT_EQ(Download(be, act2), Download(be, act)) << tag;
    }
  }
}

// Checked before any GPU is touched, so this runs everywhere.
TEST(CudaBackendOptionsTest, GemmOptionsMustFit) {
  EXPECT_TRUE(CheckCudaBackendOptions({}).ok());
  CudaBackendOptions most;
  most.gemm_autotune_max_tokens = 4096;
  EXPECT_TRUE(CheckCudaBackendOptions(most).ok());
  for (const auto& [field, value] : {std::pair<int, int>{0, -2},
                                     {0, 11},
                                     {1, 33},
                                     {1, -1},
                                     {2, 9},
                                     {3, 11},
                                     {4, -1},
                                     {4, 4097}}) {
    CudaBackendOptions options;
    if (field == 0) options.skinny_gemm_shape = value;
    if (field == 1) options.skinny_gemm_max_tokens = value;
    if (field == 2) options.small_gemm_max_tokens = value;
    if (field == 3) options.small_gemm_shape = value;
    if (field == 4) options.gemm_autotune_max_tokens = value;
    const absl::Status st = CheckCudaBackendOptions(options);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    const char* name = field == 0   ? "skinny_gemm_shape"
                       : field == 3 ? "small_gemm_shape"
                       : field == 4 ? "gemm_autotune_max_tokens"
                                    : "max_tokens";
    EXPECT_NE(st.message().find(name), std::string::npos) << st;
  }
}

TEST_F(CudaVsCpuTest, SmallGemmShapeMustExist) {
  for (const int shape : {-2, 11}) {
    CudaBackendOptions options;
    options.small_gemm_shape = shape;
    const absl::Status st = MakeCudaBackend(0, options).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("small_gemm_shape"), std::string::npos) << st;
  }
}

// LinearSiluMul: the fused small-GEMM path (1-2 tokens by default, up to 8
// on a second backend) and the fused skinny-GEMM path (3-32 tokens on a
// third) must equal Linear then SiluMul on the same backend bit for bit,
// and the CPU reference within bf16 tolerance; larger batches take the
// unfused path through the scratch tensor.
TEST_F(CudaVsCpuTest, LinearSiluMul) {
  std::mt19937 rng(14);
  const std::unique_ptr<Backend> wide = GemmBackend(8, 0);
  const std::unique_ptr<Backend> skinny = GemmBackend(2, 32);
  ASSERT_TRUE(wide && skinny);
  struct Case {
    int64_t t, inter, k;
  };
  for (const Case c : {Case{1, 9728, 2560}, Case{2, 9728, 2560},
                       Case{1, 100, 72}, Case{5, 333, 64}, Case{8, 96, 8},
                       Case{17, 384, 128}, Case{32, 9728, 2560},
                       Case{24, 1000, 264}, Case{40, 200, 64}}) {
    const std::vector<float> x = RandomBf16(rng, c.t * c.k, 0.05f, 2.0f);
    const std::vector<float> w = RandomBf16(rng, 2 * c.inter * c.k);
    std::vector<float> fused[4], unfused[4];
    Backend* backends[4] = {cpu_.get(), cuda_.get(), wide.get(),
                            skinny.get()};
    for (int i = 0; i < 4; ++i) {
      Backend& be = *backends[i];
      Tensor tx = MustUpload(be, x, {c.t, c.k});
      Tensor tw = MustUpload(be, w, {2 * c.inter, c.k});
      Tensor scratch = Poisoned(be, {c.t, 2 * c.inter});
      Tensor o = Poisoned(be, {c.t, c.inter});
      const absl::Status st =
          be.LinearSiluMul(tx.view(), tw.view(), scratch.view(), o.view());
      ASSERT_TRUE(st.ok()) << st;
      fused[i] = Download(be, o);
      Tensor o2 = Poisoned(be, {c.t, c.inter});
      ASSERT_TRUE(be.Linear(tx.view(), tw.view(), scratch.view()).ok());
      ASSERT_TRUE(be.SiluMul(scratch.view(), o2.view()).ok());
      unfused[i] = Download(be, o2);
    }
    const std::string tag =
        absl::StrCat("linear_silu_mul ", c.t, "x", c.inter, "x", c.k);
    EXPECT_EQ(fused[1], unfused[1]) << tag;
    EXPECT_EQ(fused[2], unfused[2]) << tag << " (small gemm to 8)";
    EXPECT_TRUE(AllClose(fused[1], fused[0], kBf16Tol, tag));
    EXPECT_TRUE(AllClose(fused[2], fused[0], kBf16Tol, tag + " wide"));
    EXPECT_EQ(fused[3], unfused[3]) << tag << " (skinny gemm to 32)";
    EXPECT_TRUE(AllClose(fused[3], fused[0], kBf16Tol, tag + " skinny"));
  }
}

// ---------------------------------------------------------------------------
// QK-norm + RoPE and the KV-cache write
// ---------------------------------------------------------------------------

// Llama-style 500000 and Qwen-style 1000000 bases; the positions reach
// 40000, where accurate range reduction of the angle matters.
std::vector<float> InvFreq(int32_t head_dim, double theta) {
  std::vector<float> f(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) {
    f[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / head_dim));
  }
  return f;
}

TEST_F(CudaVsCpuTest, QkNormRope) {
  std::mt19937 rng(10);
  for (int32_t hd : {16, 64, 128}) {
    for (int32_t group : {1, 2, 4, 8}) {
      for (bool norm : {true, false}) {
        const AttentionShape shape{2 * group, 2, hd, 16, 4000};
        const StepInputs step =
            MakeStep(AttentionMode::kPrefill,
                     {{0, 5}, {40000, 3}, {1234, 9}}, 16, 4000, kVocab, rng);
        const int64_t t = step.num_tokens();
        const std::vector<float> qkv = RandomBf16(rng, t * shape.qkv_width());
        const std::vector<float> qn = RandomBf16(rng, hd, 0.5f, 1.5f);
        const std::vector<float> kn = RandomBf16(rng, hd, 0.5f, 1.5f);
        const std::vector<float> inv_freq = InvFreq(hd, 1e6);
        std::vector<float> out[2];
        Backend* backends[2] = {cpu_.get(), cuda_.get()};
        for (int i = 0; i < 2; ++i) {
          Backend& be = *backends[i];
          ASSERT_TRUE(be.BeginStep(step, shape, kVocab).ok());
          Tensor tq = MustUpload(be, qkv, {t, shape.qkv_width()});
          Tensor tqn = MustUpload(be, qn, {hd});
          Tensor tkn = MustUpload(be, kn, {hd});
          Tensor tf = MustUpload(be, inv_freq, {hd / 2}, DType::kF32);
          const absl::Status s = be.QkNormRope(
              step, shape, tq.view(), norm ? &tqn.view() : nullptr,
              norm ? &tkn.view() : nullptr, 1e-6f, tf.view());
          ASSERT_TRUE(s.ok()) << s;
          out[i] = Download(be, tq);
        }
        // Element-wise rel tolerance on the rotated values; V must be
        // untouched (bit-exact), which the same comparison covers.
        EXPECT_TRUE(AllClose(out[1], out[0], kBf16Tol,
                             absl::StrCat("qk_norm_rope hd=", hd, " g=", group,
                                          norm ? " norm" : " no-norm")));
      }
    }
  }
}

TEST_F(CudaVsCpuTest, WriteKvCache) {
  std::mt19937 rng(11);
  for (int32_t hd : {16, 64, 128}) {
    for (int32_t bs : {16, 32}) {
      const std::vector<SeqSpec> seqs = {{0, 37}, {100, 1}, {31, 70}};
      const int32_t blocks = BlocksFor(seqs, bs) + 3;
      const AttentionShape shape{8, 4, hd, bs, blocks};
      const StepInputs step =
          MakeStep(AttentionMode::kPrefill, seqs, bs, blocks, kVocab, rng);
      const int64_t t = step.num_tokens();
      const Shape cache_shape = {blocks, 2, 4, bs, hd};
      const std::vector<float> qkv = RandomBf16(rng, t * shape.qkv_width());
      // The cache starts random (identical on both): a slot the kernel
      // failed to write keeps a value the reference overwrote.
      const std::vector<float> cache0 = RandomBf16(rng, Numel(cache_shape));
      std::vector<float> out[2];
      Backend* backends[2] = {cpu_.get(), cuda_.get()};
      for (int i = 0; i < 2; ++i) {
        Backend& be = *backends[i];
        ASSERT_TRUE(be.BeginStep(step, shape, kVocab).ok());
        Tensor tq = MustUpload(be, qkv, {t, shape.qkv_width()});
        Tensor tc = MustUpload(be, cache0, cache_shape);
        ASSERT_TRUE(be.WriteKvCache(step, shape, tq.view(), tc.view()).ok());
        out[i] = Download(be, tc);
      }
      EXPECT_EQ(out[1], out[0]) << "hd " << hd << " bs " << bs;
    }
  }
}

// The fused kernel against the CPU backend's two separate ops: qkv (Q, K
// rotated; V untouched) and the cache (K rotated, V copied) must both
// agree, and slots of other tokens must keep their random contents.
TEST_F(CudaVsCpuTest, QkNormRopeWriteKvFused) {
  std::mt19937 rng(13);
  for (int32_t hd : {16, 64, 128}) {
    for (int32_t group : {1, 4, 8}) {
      for (bool norm : {true, false}) {
        const int32_t bs = hd == 64 ? 32 : 16;
        const std::vector<SeqSpec> seqs = {{0, 37}, {40000, 1}, {31, 9}};
        const int32_t blocks = BlocksFor(seqs, bs) + 3;
        const AttentionShape shape{2 * group, 2, hd, bs, blocks};
        const StepInputs step =
            MakeStep(AttentionMode::kPrefill, seqs, bs, blocks, kVocab, rng);
        const int64_t t = step.num_tokens();
        const Shape cache_shape = {blocks, 2, 2, bs, hd};
        const std::vector<float> qkv = RandomBf16(rng, t * shape.qkv_width());
        const std::vector<float> cache0 = RandomBf16(rng, Numel(cache_shape));
        const std::vector<float> qn = RandomBf16(rng, hd, 0.5f, 1.5f);
        const std::vector<float> kn = RandomBf16(rng, hd, 0.5f, 1.5f);
        const std::vector<float> inv_freq = InvFreq(hd, 5e5);
        std::vector<float> out_qkv[2], out_cache[2];
        Backend* backends[2] = {cpu_.get(), cuda_.get()};
        for (int i = 0; i < 2; ++i) {
          Backend& be = *backends[i];
          ASSERT_TRUE(be.BeginStep(step, shape, kVocab).ok());
          Tensor tq = MustUpload(be, qkv, {t, shape.qkv_width()});
          Tensor tc = MustUpload(be, cache0, cache_shape);
          Tensor tqn = MustUpload(be, qn, {hd});
          Tensor tkn = MustUpload(be, kn, {hd});
          Tensor tf = MustUpload(be, inv_freq, {hd / 2}, DType::kF32);
          const absl::Status s = be.QkNormRopeWriteKv(
              step, shape, tq.view(), norm ? &tqn.view() : nullptr,
              norm ? &tkn.view() : nullptr, 1e-6f, tf.view(), tc.view());
          ASSERT_TRUE(s.ok()) << s;
          out_qkv[i] = Download(be, tq);
          out_cache[i] = Download(be, tc);
        }
        const std::string tag = absl::StrCat("hd=", hd, " g=", group,
                                             norm ? " norm" : " no-norm");
        EXPECT_TRUE(AllClose(out_qkv[1], out_qkv[0], kBf16Tol,
                             "fused qkv " + tag));
        EXPECT_TRUE(AllClose(out_cache[1], out_cache[0], kBf16Tol,
                             "fused cache " + tag));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Errors: InvalidArgument / FailedPrecondition, never a launch.
// ---------------------------------------------------------------------------

TEST_F(CudaVsCpuTest, ArgumentErrors) {
  std::mt19937 rng(12);
  const AttentionShape shape{4, 2, 64, 16, 8};
  const StepInputs step =
      MakeStep(AttentionMode::kPrefill, {{0, 5}}, 16, 8, kVocab, rng);
  Tensor qkv = Poisoned(*cuda_, {5, shape.qkv_width()});
  Tensor cache = Poisoned(*cuda_, {8, 2, 2, 16, 64});
  Tensor out = Poisoned(*cuda_, {5, 4 * 64});

  // No BeginStep yet.
  EXPECT_EQ(cuda_->Attention(step, shape, qkv.view(), cache.view(), 1.0f,
                             out.view())
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(cuda_->BeginStep(step, shape, kVocab).ok());
  // A different step or shape than BeginStep's.
  const StepInputs other =
      MakeStep(AttentionMode::kPrefill, {{0, 6}}, 16, 8, kVocab, rng);
  EXPECT_EQ(cuda_->WriteKvCache(other, shape, qkv.view(), cache.view()).code(),
            absl::StatusCode::kFailedPrecondition);
  AttentionShape bigger = shape;
  bigger.num_blocks = 9;
  EXPECT_EQ(cuda_->WriteKvCache(step, bigger, qkv.view(), cache.view()).code(),
            absl::StatusCode::kFailedPrecondition);
  // Wrong dtype / device / shape.
  Tensor f32 = Poisoned(*cuda_, {5, shape.qkv_width()}, DType::kF32);
  EXPECT_EQ(cuda_->WriteKvCache(step, shape, f32.view(), cache.view()).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> host(5 * shape.qkv_width());
  const TensorView host_view{host.data(), DType::kBF16,
                             {5, shape.qkv_width()}, Device::kCpu};
  EXPECT_EQ(cuda_->WriteKvCache(step, shape, host_view, cache.view()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda_->SiluMul(out.view(), qkv.view()).code(),
            absl::StatusCode::kInvalidArgument);
  // A failed BeginStep leaves no step behind.
  StepInputs broken = step;
  broken.positions[0] = 3;
  EXPECT_EQ(cuda_->BeginStep(broken, shape, kVocab).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda_->WriteKvCache(step, shape, qkv.view(), cache.view()).code(),
            absl::StatusCode::kFailedPrecondition);

  // Unsupported head_dim and group size are InvalidArgument at the op.
  for (const AttentionShape& s :
       {AttentionShape{4, 2, 96, 16, 8}, AttentionShape{6, 2, 64, 16, 8},
        AttentionShape{32, 2, 64, 16, 8}}) {
    ASSERT_TRUE(cuda_->BeginStep(step, s, kVocab).ok());
    Tensor q = Poisoned(*cuda_, {5, s.qkv_width()});
    Tensor c = Poisoned(*cuda_, {8, 2, s.num_kv_heads, 16, s.head_dim});
    Tensor o = Poisoned(*cuda_, {5, int64_t{s.num_heads} * s.head_dim});
    const absl::Status st =
        cuda_->Attention(step, s, q.view(), c.view(), 1.0f, o.view());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  }
  EXPECT_TRUE(cuda_->Synchronize().ok());
}

}  // namespace
}  // namespace duet::kernels::testing
