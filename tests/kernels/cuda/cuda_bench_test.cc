// Timings of the CUDA backend's hot ops at Qwen3-4B shapes (32 query heads,
// 8 KV heads, head_dim 128, hidden 2560, intermediate 9728). Not a test:
// skipped unless DUET_CUDA_BENCH=1 (and a GPU is present). Each number is
// the median over 5 batches of back-to-back calls, one Synchronize per batch,
// so launch gaps are included but the host round trip is amortized.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace duet::kernels::testing {
namespace {

constexpr int32_t kVocab = 1000;
constexpr int32_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

class CudaBench : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = std::getenv("DUET_CUDA_BENCH");
    if (env == nullptr || std::string(env) != "1") {
      GTEST_SKIP() << "timing only with DUET_CUDA_BENCH=1";
    }
    DUET_SKIP_WITHOUT_CUDA();
    auto be = MakeCudaBackend(0);
    ASSERT_TRUE(be.ok()) << be.status();
    be_ = std::move(*be);
  }

  // Median milliseconds per call of `op`, which runs on `be` (be_ if null).
  double TimeMs(const std::function<absl::Status()>& op, int per_batch = 20,
                Backend* be = nullptr) {
    Backend& b = be != nullptr ? *be : *be_;
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(op().ok());
    EXPECT_TRUE(b.Synchronize().ok());
    std::vector<double> ms;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < per_batch; ++i) {
        const absl::Status s = op();
        EXPECT_TRUE(s.ok()) << s;
      }
      EXPECT_TRUE(b.Synchronize().ok());
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() /
                   per_batch);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  // Fills every slot of `cache` with random (non-zero) K/V by writing a
  // random 4096-token qkv block over and over through WriteKvCache.
  void FillCache(Backend& be, const AttentionShape& s, const Tensor& cache) {
    std::mt19937 rng(1);
    const int32_t chunk = 4096;
    const std::vector<float> qkv = RandomBf16(rng, int64_t{chunk} * s.qkv_width());
    Tensor tq = MustUpload(be, qkv, {chunk, s.qkv_width()});
    const int64_t slots = int64_t{s.num_blocks} * s.block_size;
    for (int64_t start = 0; start < slots; start += chunk) {
      StepInputs step;
      step.mode = AttentionMode::kPrefill;
      const int32_t n = static_cast<int32_t>(std::min<int64_t>(chunk, slots - start));
      const int32_t first_block = static_cast<int32_t>(start / s.block_size);
      const int32_t nb = (n + s.block_size - 1) / s.block_size;
      for (int32_t i = 0; i < n; ++i) {
        step.token_ids.push_back(0);
        step.positions.push_back(i);
        step.slot_mapping.push_back(start + i);
      }
      step.query_start = {0, n};
      step.seq_lens = {n};
      step.max_blocks_per_seq = nb;
      for (int32_t b = 0; b < nb; ++b) step.block_tables.push_back(first_block + b);
      ASSERT_TRUE(be.BeginStep(step, s, kVocab).ok());
      const TensorView rows{tq.view().data, DType::kBF16, {n, s.qkv_width()},
                            Device::kCuda};
      ASSERT_TRUE(be.WriteKvCache(step, s, rows, cache.view()).ok());
    }
  }

  std::unique_ptr<Backend> be_;
};

TEST_F(CudaBench, DecodeAttention) {
  std::printf("\n[bench] decode attention, 32/8 heads x 128, block 16\n");
  std::printf("[bench] %6s %7s %10s %10s\n", "batch", "context", "us", "GB/s");
  for (int32_t ctx : {1024, 4096, 8192}) {
    for (int32_t batch : {1, 8, 32, 64, 128, 256}) {
      if (int64_t{batch} * ctx > 256 * 4096) continue;  // <= 4 GiB of KV
      std::mt19937 rng(2);
      std::vector<SeqSpec> seqs(batch, SeqSpec{ctx - 1, 1});
      const int32_t blocks = BlocksFor(seqs, kBlock);
      const AttentionShape s{kHeads, kKvHeads, kHeadDim, kBlock, blocks};
      auto cache = be_->Allocate(DType::kBF16, {blocks, 2, kKvHeads, kBlock, kHeadDim});
      ASSERT_TRUE(cache.ok());
      FillCache(*be_, s, *cache);
      const StepInputs step =
          MakeStep(AttentionMode::kDecode, seqs, kBlock, blocks, kVocab, rng);
      ASSERT_TRUE(be_->BeginStep(step, s, kVocab).ok());
      Tensor qkv = MustUpload(*be_, RandomBf16(rng, int64_t{batch} * s.qkv_width()),
                              {batch, s.qkv_width()});
      auto out = be_->Allocate(DType::kBF16, {batch, kHeads * kHeadDim});
      ASSERT_TRUE(out.ok());
      const double ms = TimeMs([&] {
        return be_->Attention(step, s, qkv.view(), cache->view(), 0.088f,
                              out->view());
      });
      const double bytes = static_cast<double>(batch) * ctx * kKvHeads * kHeadDim * 2 * 2;
      std::printf("[bench] %6d %7d %10.1f %10.0f\n", batch, ctx, ms * 1e3,
                  bytes / (ms * 1e-3) / 1e9);
    }
  }
}

// Both tensor-core prefill variants (CudaBackendOptions::prefill_warp_rows
// 16 and 32) on the same inputs.
TEST_F(CudaBench, PrefillAttention) {
  // Both built with explicit options: the default is one of them.
  CudaBackendOptions narrow_options;
  narrow_options.prefill_warp_rows = 16;
  auto narrow = MakeCudaBackend(0, narrow_options);
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  CudaBackendOptions wide_options;
  wide_options.prefill_warp_rows = 32;
  auto wide = MakeCudaBackend(0, wide_options);
  ASSERT_TRUE(wide.ok()) << wide.status();
  Backend* const variants[] = {narrow->get(), wide->get()};
  std::printf("\n[bench] prefill attention (causal), 32/8 heads x 128, "
              "16 and 32 query rows per warp\n");
  std::printf("[bench] %-26s %10s %10s %10s %10s\n", "sequences", "ms(16)",
              "TFLOP/s", "ms(32)", "TFLOP/s");
  struct Case {
    const char* name;
    std::vector<SeqSpec> seqs;
  };
  const Case cases[] = {
      {"1 x 4096 fresh", {{0, 4096}}},
      {"1 x 8192 fresh", {{0, 8192}}},
      {"4 x 2048 after 2048", {{2048, 2048}, {2048, 2048}, {2048, 2048}, {2048, 2048}}},
      {"16 x 512 fresh", std::vector<SeqSpec>(16, SeqSpec{0, 512})},
  };
  for (const Case& c : cases) {
    double pairs = 0;  // (query, visible key) pairs
    for (const SeqSpec& q : c.seqs) {
      pairs += static_cast<double>(q.q_len) * q.prefix +
               static_cast<double>(q.q_len) * (q.q_len + 1) / 2;
    }
    const double flops = 4.0 * pairs * kHeads * kHeadDim;
    double ms[2] = {0, 0};
    for (int v = 0; v < 2; ++v) {
      Backend& be = *variants[v];
      std::mt19937 rng(3);  // the same inputs for both variants
      const int32_t blocks = BlocksFor(c.seqs, kBlock);
      const AttentionShape s{kHeads, kKvHeads, kHeadDim, kBlock, blocks};
      auto cache = be.Allocate(DType::kBF16, {blocks, 2, kKvHeads, kBlock, kHeadDim});
      ASSERT_TRUE(cache.ok());
      FillCache(be, s, *cache);
      const StepInputs step =
          MakeStep(AttentionMode::kPrefill, c.seqs, kBlock, blocks, kVocab, rng);
      ASSERT_TRUE(be.BeginStep(step, s, kVocab).ok());
      const int64_t t = step.num_tokens();
      Tensor qkv = MustUpload(be, RandomBf16(rng, t * s.qkv_width()), {t, s.qkv_width()});
      auto out = be.Allocate(DType::kBF16, {t, kHeads * kHeadDim});
      ASSERT_TRUE(out.ok());
      ms[v] = TimeMs(
          [&] {
            return be.Attention(step, s, qkv.view(), cache->view(), 0.088f,
                                out->view());
          },
          5, &be);
    }
    std::printf("[bench] %-26s %10.3f %10.1f %10.3f %10.1f\n", c.name, ms[0],
                flops / (ms[0] * 1e-3) / 1e12, ms[1],
                flops / (ms[1] * 1e-3) / 1e12);
  }
}

TEST_F(CudaBench, LinearAndElementwise) {
  std::printf("\n[bench] Qwen3-4B GEMMs (bf16, fp32 accumulate)\n");
  std::printf("[bench] %-10s %6s %10s %10s %10s\n", "weight", "tokens", "us",
              "TFLOP/s", "GB/s(w)");
  std::mt19937 rng(4);
  struct W {
    const char* name;
    int64_t n, k;
  };
  for (const W w : {W{"qkv", 6144, 2560}, W{"o_proj", 2560, 4096},
                    W{"gate_up", 19456, 2560}, W{"down", 2560, 9728}}) {
    Tensor tw = MustUpload(*be_, RandomBf16(rng, w.n * w.k), {w.n, w.k});
    for (int64_t t : {1, 16, 64, 256, 2048}) {
      Tensor tx = MustUpload(*be_, RandomBf16(rng, t * w.k), {t, w.k});
      auto out = be_->Allocate(DType::kBF16, {t, w.n});
      ASSERT_TRUE(out.ok());
      const double ms =
          TimeMs([&] { return be_->Linear(tx.view(), tw.view(), out->view()); });
      std::printf("[bench] %-10s %6lld %10.1f %10.1f %10.0f\n", w.name,
                  static_cast<long long>(t), ms * 1e3,
                  2.0 * t * w.n * w.k / (ms * 1e-3) / 1e12,
                  2.0 * w.n * w.k / (ms * 1e-3) / 1e9);
    }
  }

  std::printf("\n[bench] memory-bound ops at 2048 tokens\n");
  const int64_t t = 2048, h = 2560, inter = 9728;
  Tensor x = MustUpload(*be_, RandomBf16(rng, t * h), {t, h});
  Tensor r = MustUpload(*be_, RandomBf16(rng, t * h), {t, h});
  Tensor w = MustUpload(*be_, RandomBf16(rng, h), {h});
  auto o = be_->Allocate(DType::kBF16, {t, h});
  Tensor gu = MustUpload(*be_, RandomBf16(rng, t * 2 * inter), {t, 2 * inter});
  auto act = be_->Allocate(DType::kBF16, {t, inter});
  ASSERT_TRUE(o.ok() && act.ok());
  const double rms = TimeMs([&] { return be_->RmsNorm(x.view(), w.view(), 1e-6f, o->view()); });
  const double add = TimeMs([&] {
    return be_->AddRmsNorm(x.view(), r.view(), w.view(), 1e-6f, o->view());
  });
  const double silu = TimeMs([&] { return be_->SiluMul(gu.view(), act->view()); });
  std::printf("[bench] rmsnorm     %8.1f us %8.0f GB/s\n", rms * 1e3,
              2.0 * t * h * 2 / (rms * 1e-3) / 1e9);
  std::printf("[bench] add_rmsnorm %8.1f us %8.0f GB/s\n", add * 1e3,
              4.0 * t * h * 2 / (add * 1e-3) / 1e9);
  std::printf("[bench] silu_mul    %8.1f us %8.0f GB/s\n", silu * 1e3,
              3.0 * t * inter * 2 / (silu * 1e-3) / 1e9);
}

// The weight GEMMs of one decode step of the Qwen3-4B shape (36 layers,
// each with its own weights so nothing is served from L2), alone and with
// the residual add + RMSNorm kernels between them: how far the GEMMs are
// from the copy floor and what the norms add. DUET_BENCH_TOKENS=1,8,32
// sets the batches (default 1). Each batch runs the default kernels, then
// cuBLASLt alone with the heuristic's algorithm ("cublas", shape -2) and
// with the fastest of its candidates timed per shape ("cublas tuned",
// shape -3, gemm_autotune_max_tokens); DUET_BENCH_ALL_SHAPES=1 adds every
// forced launch shape of the kernel that batch takes (small GEMM at 1-2 tokens,
// skinny GEMM at 3-32: the sweeps their AutoShape was chosen from), and
// DUET_BENCH_SHAPES=8,-1 times just those shapes.
TEST_F(CudaBench, DecodeGemmChain) {
  // The floor the chains are printed against, as duet-model-bench does.
  const absl::StatusOr<double> measured = cuda::MeasureCopyBandwidth(0);
  ASSERT_TRUE(measured.ok()) << measured.status();
  const double bw = *measured;
  constexpr int kLayers = 36;
  const int64_t h = 2560, inter = 9728, qkv_n = 6144, q = 4096;
  const int64_t vocab = 151936;
  struct Layer {
    Tensor qkv, o, gate_up, down, norm;
  };
  std::vector<Layer> layers;
  std::mt19937 rng(5);
  for (int l = 0; l < kLayers; ++l) {
    // Timing only: the big weights keep whatever the allocator hands out.
    auto a = be_->Allocate(DType::kBF16, {qkv_n, h});
    auto b = be_->Allocate(DType::kBF16, {h, q});
    auto c = be_->Allocate(DType::kBF16, {2 * inter, h});
    auto d = be_->Allocate(DType::kBF16, {h, inter});
    ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
    layers.push_back({std::move(*a), std::move(*b), std::move(*c),
                      std::move(*d), MustUpload(*be_, RandomBf16(rng, h), {h})});
  }
  auto lm = be_->Allocate(DType::kBF16, {vocab, h});
  ASSERT_TRUE(lm.ok());
  const double wbytes =
      2.0 * (qkv_n * h + h * q + 2 * inter * h + h * inter) * kLayers;

  std::vector<int> batches = {1};
  if (const char* env = std::getenv("DUET_BENCH_TOKENS"); env != nullptr) {
    batches.clear();
    for (absl::string_view s : absl::StrSplit(env, ',')) {
      int t = 0;
      ASSERT_TRUE(absl::SimpleAtoi(s, &t) && t >= 1) << s;
      batches.push_back(t);
    }
  }
  for (const int t : batches) {
    Tensor x = MustUpload(*be_, RandomBf16(rng, t * inter), {t, inter});
    Tensor hid = MustUpload(*be_, RandomBf16(rng, t * h), {t, h});
    Tensor res = MustUpload(*be_, RandomBf16(rng, t * h), {t, h});
    Tensor delta = MustUpload(*be_, RandomBf16(rng, t * h), {t, h});
    auto qkv = be_->Allocate(DType::kBF16, {t, qkv_n});
    auto proj = be_->Allocate(DType::kBF16, {t, h});
    auto gu = be_->Allocate(DType::kBF16, {t, 2 * inter});
    auto act = be_->Allocate(DType::kBF16, {t, inter});
    auto logits = be_->Allocate(DType::kBF16, {t, vocab});
    ASSERT_TRUE(qkv.ok() && proj.ok() && gu.ok() && act.ok() && logits.ok());
    const TensorView xq{x.view().data, DType::kBF16, {t, q}, Device::kCuda};

    const CudaBackendOptions defaults;
    const bool small = t <= defaults.small_gemm_max_tokens;
    const int num_shapes = 11;  // both kernels have 11
    // -1: the default (shape by weight size); -2: cuBLASLt only; -3:
    // cuBLASLt only, tuned.
    std::vector<int> shapes = {-1, -2, -3};
    if (const char* all = std::getenv("DUET_BENCH_ALL_SHAPES");
        all != nullptr && std::string(all) == "1") {
      for (int shape = 0; shape < num_shapes; ++shape) shapes.push_back(shape);
    }
    if (const char* some = std::getenv("DUET_BENCH_SHAPES"); some != nullptr) {
      shapes.clear();
      for (absl::string_view s : absl::StrSplit(some, ',')) {
        int shape = 0;
        ASSERT_TRUE(absl::SimpleAtoi(s, &shape)) << s;
        shapes.push_back(shape);
      }
    }
    for (const int shape : shapes) {
      CudaBackendOptions options;
      if (shape == -2 || shape == -3) {
        options.small_gemm_max_tokens = 0;
        options.skinny_gemm_max_tokens = 0;
        options.gemm_autotune_max_tokens = shape == -3 ? t : 0;
      } else if (small) {
        options.small_gemm_shape = shape;
      } else {
        options.skinny_gemm_max_tokens = 32;
        options.skinny_gemm_shape = shape;
      }
      auto made = MakeCudaBackend(0, options);
      ASSERT_TRUE(made.ok()) << made.status();
      Backend& be = **made;
      std::printf(
          "\n[bench] batch-%d decode GEMM chain, 36 layers of Qwen3-4B, %s "
          "shape %d (copy bandwidth %.0f GB/s)\n",
          t,
          shape == -2   ? "cublas"
          : shape == -3 ? "cublas tuned"
                        : (small ? "small GEMM" : "skinny GEMM"),
          shape, bw / 1e9);
      std::printf("[bench] %-28s %10s %10s %8s %8s\n", "chain", "us",
                  "floor us", "ratio", "GB/s");
      auto row = [&](const char* name, double bytes, double ms) {
        std::printf("[bench] %-28s %10.1f %10.1f %8.2f %8.0f\n", name,
                    ms * 1e3, bytes / bw * 1e6, ms * 1e-3 / (bytes / bw),
                    bytes / (ms * 1e-3) / 1e9);
      };
      auto chain = [&](const std::function<absl::Status(const Layer&)>& op) {
        return TimeMs(
            [&]() -> absl::Status {
              for (const Layer& y : layers) {
                if (absl::Status s = op(y); !s.ok()) return s;
              }
              return absl::OkStatus();
            },
            5, &be);
      };
      auto qkv_op = [&](const Layer& y) {
        return be.Linear(hid.view(), y.qkv.view(), qkv->view());
      };
      auto o_op = [&](const Layer& y) {
        return be.Linear(xq, y.o.view(), proj->view());
      };
      auto gate_up_op = [&](const Layer& y) {
        return be.LinearSiluMul(hid.view(), y.gate_up.view(), gu->view(),
                                act->view());
      };
      auto down_op = [&](const Layer& y) {
        return be.Linear(x.view(), y.down.view(), proj->view());
      };
      auto norm_op = [&](const Layer& y) {
        return be.AddRmsNorm(delta.view(), res.view(), y.norm.view(), 1e-6f,
                             hid.view());
      };
      row("qkv x36", 2.0 * qkv_n * h * kLayers, chain(qkv_op));
      row("o_proj x36", 2.0 * h * q * kLayers, chain(o_op));
      row("gate_up+silu x36", 2.0 * 2 * inter * h * kLayers,
          chain(gate_up_op));
      row("down x36", 2.0 * h * inter * kLayers, chain(down_op));
      row("lm_head", 2.0 * vocab * h, TimeMs([&] {
            return be.Linear(hid.view(), lm->view(), logits->view());
          }, 20, &be));
      row("4 GEMMs x36", wbytes, chain([&](const Layer& y) -> absl::Status {
            DUET_RETURN_IF_ERROR(qkv_op(y));
            DUET_RETURN_IF_ERROR(o_op(y));
            DUET_RETURN_IF_ERROR(gate_up_op(y));
            return down_op(y);
          }));
      row("4 GEMMs + 2 norms x36", wbytes,
          chain([&](const Layer& y) -> absl::Status {
            DUET_RETURN_IF_ERROR(norm_op(y));
            DUET_RETURN_IF_ERROR(qkv_op(y));
            DUET_RETURN_IF_ERROR(o_op(y));
            DUET_RETURN_IF_ERROR(norm_op(y));
            DUET_RETURN_IF_ERROR(gate_up_op(y));
            return down_op(y);
          }));
    }
  }
}

}  // namespace
}  // namespace duet::kernels::testing
