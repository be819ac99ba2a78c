#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/norm_kernels.h"
#include "kernels/cuda/pdl.h"

namespace duet::kernels::cuda {
namespace {

// Each thread keeps up to kMaxIters vectors of its row in registers, so the
// row is read from memory once even with the fused residual add.
constexpr int kMaxIters = 4;
constexpr int kMaxThreads = 1024;

__device__ __forceinline__ float BlockSum(float v, float* shared) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

template <int kVec>
struct alignas(kVec * 2) BfVec {
  __nv_bfloat16 v[kVec];
};

template <int kVec, bool kResidual>
__global__ void RmsNormKernel(RmsNormParams p) {
  __shared__ float partial[kMaxThreads / 32];
  using Vec = BfVec<kVec>;
  const int64_t row = blockIdx.x;
  const int64_t nvec = p.dim / kVec;
  // No kernel writes the norm weight: fetch it while the previous kernel
  // finishes (pdl.h), one memory latency off this kernel's critical path
  // (at decode it is a single CTA between two GEMMs).
  const Vec* w = reinterpret_cast<const Vec*>(p.weight);
  Vec wv[kMaxIters];
#pragma unroll
  for (int it = 0; it < kMaxIters; ++it) {
    const int64_t c = threadIdx.x + int64_t{it} * blockDim.x;
    if (c < nvec) wv[it] = w[c];
  }
  PdlWait();  // pdl.h: before any read of an earlier kernel's output
  PdlLaunchDependents();
  const Vec* x = reinterpret_cast<const Vec*>(p.x + row * p.dim);
  Vec* res =
      kResidual ? reinterpret_cast<Vec*>(p.residual + row * p.dim) : nullptr;
  float vals[kMaxIters][kVec];
  float sum_sq = 0.0f;
#pragma unroll
  for (int it = 0; it < kMaxIters; ++it) {
    const int64_t c = threadIdx.x + int64_t{it} * blockDim.x;
    if (c < nvec) {
      const Vec xv = x[c];
      if constexpr (kResidual) {
        const Vec rv = res[c];
        Vec sum;
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          sum.v[j] = __float2bfloat16_rn(__bfloat162float(rv.v[j]) +
                                         __bfloat162float(xv.v[j]));
          vals[it][j] = __bfloat162float(sum.v[j]);
        }
        res[c] = sum;
      } else {
#pragma unroll
        for (int j = 0; j < kVec; ++j) vals[it][j] = __bfloat162float(xv.v[j]);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) sum_sq += vals[it][j] * vals[it][j];
    }
  }
  // Every read of the row happens before this barrier, so out may alias x.
  const float total = BlockSum(sum_sq, partial);
  const float inv_rms = 1.0f / sqrtf(total / static_cast<float>(p.dim) + p.eps);
  Vec* out = reinterpret_cast<Vec*>(p.out + row * p.dim);
#pragma unroll
  for (int it = 0; it < kMaxIters; ++it) {
    const int64_t c = threadIdx.x + int64_t{it} * blockDim.x;
    if (c < nvec) {
      Vec o;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        o.v[j] = __float2bfloat16_rn(__bfloat162float(wv[it].v[j]) *
                                     (vals[it][j] * inv_rms));
      }
      out[c] = o;
    }
  }
}

template <int kVec>
absl::Status Launch(const RmsNormParams& p, cudaStream_t stream, bool pdl) {
  const int64_t nvec = p.dim / kVec;
  if (nvec > int64_t{kMaxIters} * kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("rmsnorm: dim ", p.dim, " exceeds the supported maximum ",
                     int64_t{kMaxIters} * kMaxThreads * kVec));
  }
  // Fewest threads that cover the row in kMaxIters vectors each, in whole
  // warps: small rows get small blocks, so more rows run at once.
  int threads = static_cast<int>(CeilDiv(CeilDiv(nvec, kMaxIters), 32) * 32);
  threads = threads < 64 ? 64 : threads;
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (p.residual != nullptr) {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&RmsNormKernel<kVec, true>, grid,
                                           dim3(threads), 0, stream, pdl, p));
  } else {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&RmsNormKernel<kVec, false>, grid,
                                           dim3(threads), 0, stream, pdl, p));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream,
                           bool pdl) {
  if (p.rows == 0) return absl::OkStatus();
  if (p.dim <= 0) return absl::InvalidArgumentError("rmsnorm: empty rows");
  if (p.rows > 0x7fffffff) {
    return absl::InvalidArgumentError("rmsnorm: too many rows");
  }
  // 16-byte vectors when the row allows it (every real hidden size does).
  if (p.dim % 8 == 0) return Launch<8>(p, stream, pdl);
  return Launch<1>(p, stream, pdl);
}

}  // namespace duet::kernels::cuda
