// Internal to kernels/cuda: y[M, N] = x[M, K] * w[N, K]^T in bf16 for the
// decode GEMMs of 3..kSkinnyGemmMaxTokens tokens, on tensor cores.
//
// Hand-written because these GEMMs are still weight streaming (each weight
// byte is used by at most 32 tokens, far below the ~300 FLOP/byte where an
// H100 turns compute-bound), and cuBLASLt's tiles for them left a batch-8
// decode step at 1.6x its bandwidth floor (docs/PERF.md run 7). The CUDA-core
// small GEMM (small_gemm.h) streams weights well but pays 8 loads of x and
// 64 FMAs per weight vector at 8 tokens. Here each warp owns 16 weight rows
// and streams them with 16-byte non-allocating loads straight into the A
// fragments of mma.m16n8k16 (rows = weight rows, columns = tokens, the
// "swapped" GEMM y^T = w x^T). That needs no shared memory: a dot product
// does not care in which order it visits K, so each lane's 8 contiguous
// weight elements are treated as the fragment's k positions {2q, 2q+1,
// 2q+8, 2q+9} of two MMAs, and the token's x vector is loaded with the same
// permutation.
#ifndef DUET_KERNELS_CUDA_SKINNY_GEMM_H_
#define DUET_KERNELS_CUDA_SKINNY_GEMM_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/small_gemm.h"

namespace duet::kernels::cuda {

inline constexpr int64_t kSkinnyGemmMaxTokens = 32;
inline constexpr int kSkinnyGemmShapes = 11;

// True when LaunchSkinnyGemm takes these sizes (k a multiple of 8: 16-byte
// weight rows).
bool SkinnyGemmApplies(int64_t tokens, int64_t n, int64_t k);

// p as for the small GEMM (silu_mul included: the fused SiLU * mul equals
// this kernel's plain GEMM over the 2I rows then the SiLU * mul kernel bit
// for bit); p.shape: -1 picks the launch shape by [n, k], 0..
// kSkinnyGemmShapes - 1 force one (skinny_gemm.cu lists them).
absl::Status LaunchSkinnyGemm(const SmallGemmParams& p, cudaStream_t stream,
                              bool pdl = false);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_SKINNY_GEMM_H_
