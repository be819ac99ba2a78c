// Internal to kernels/cuda: y[M, N] = x[M, K] * w[N, K]^T in bf16 for the
// few-token GEMMs of decode (M <= kSmallGemmMaxTokens). Hand-written
// because it is pure weight streaming: measured on an H100 (Qwen3-4B
// shapes, batch 1), cuBLASLt reached ~69% of the copy bandwidth there
// (split-K launches plus a separate reduce kernel), and these GEMMs are
// most of a decode step. Warps stream weight rows once with 16-byte
// non-allocating loads, several in flight per lane, and dot them with every
// token's x (read through L1, shared by the SM's warps); a row is split over
// 1-8 warps, chosen per weight so that enough loads are in flight.
#ifndef DUET_KERNELS_CUDA_SMALL_GEMM_H_
#define DUET_KERNELS_CUDA_SMALL_GEMM_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cuda {

inline constexpr int64_t kSmallGemmMaxTokens = 8;
inline constexpr int kSmallGemmShapes = 11;

struct SmallGemmParams {
  const __nv_bfloat16* x = nullptr;  // [tokens, k]
  const __nv_bfloat16* w = nullptr;  // [n, k]
  __nv_bfloat16* y = nullptr;        // [tokens, n]
  int64_t tokens = 0;                // 1..kSmallGemmMaxTokens
  int64_t n = 0;
  int64_t k = 0;  // multiple of 8 (16-byte rows)
  // Fused SiLU * mul: w holds n = 2I rows [gate; up], and y [tokens, I] gets
  // silu(g) * u with g and u rounded to bf16 first, exactly as the GEMM
  // followed by the SiLU * mul kernel would compute it.
  bool silu_mul = false;
  // Launch shape at 1-2 tokens: -1 picks by [n, k]; 0..kSmallGemmShapes - 1
  // force one (benchmarks and tests; small_gemm.cu lists them).
  int shape = -1;
};

// The weight shapes both weight-streaming GEMMs (this one and
// skinny_gemm.h) take: rows of 16-byte vectors (k a multiple of 8) and row
// indices that fit an int.
inline bool StreamingGemmWeightFits(int64_t n, int64_t k) {
  return n >= 1 && k >= 8 && k % 8 == 0 && n < (int64_t{1} << 31);
}

// True when LaunchSmallGemm takes these sizes.
bool SmallGemmApplies(int64_t tokens, int64_t n, int64_t k);

// pdl: launch as a programmatic dependent (kernels/cuda/pdl.h).
absl::Status LaunchSmallGemm(const SmallGemmParams& p, cudaStream_t stream,
                             bool pdl = false);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_SMALL_GEMM_H_
