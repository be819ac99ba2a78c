#include "common/device_status.h"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/small_gemm.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;     // 16-byte weight loads in flight per lane
constexpr int kStep = 32 * 8;  // K elements a warp covers per load

// Weights are read exactly once: do not let them evict x from L1.
__device__ __forceinline__ uint4 LoadStreaming(const __nv_bfloat16* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <int kM>
__global__ void __launch_bounds__(kThreads) SmallGemmKernel(SmallGemmParams p) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t{blockIdx.x} * kWarps + warp;
  const bool active = row < p.n;  // whole warp
  const __nv_bfloat16* w = p.w + (active ? row : 0) * p.k;
  // kUnroll weight loads per lane in flight: the next group is issued
  // before the math on the current one.
  uint4 wv[kUnroll];
  auto load = [&](int64_t base) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t at = base + u * kStep;
      wv[u] =
          active && at < p.k ? LoadStreaming(w + at) : make_uint4(0, 0, 0, 0);
    }
  };
  int64_t base = int64_t{lane} * 8;
  // No kernel writes the weights, so the first loads may start before the
  // previous kernel (which writes x) has finished: pdl.h.
  load(base);
  PdlWait();
  PdlLaunchDependents();
  if (!active) return;
  float acc[kM];
#pragma unroll
  for (int m = 0; m < kM; ++m) acc[m] = 0.0f;
  for (; base < p.k; base += kStep * kUnroll) {
    uint4 cur[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) cur[u] = wv[u];
    if (base + kStep * kUnroll < p.k) load(base + kStep * kUnroll);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t at = base + u * kStep;
      if (at >= p.k) break;
      float wf[8];
      Bf16x8ToFloat(cur[u], wf);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        const uint4 xv =
            __ldg(reinterpret_cast<const uint4*>(p.x + m * p.k + at));
        float xf[8];
        Bf16x8ToFloat(xv, xf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[m] = fmaf(wf[i], xf[i], acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kM; ++m) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
    }
  }
  if (lane < kM) {
    // Lane m writes token m (a register array indexed at run time would
    // spill, so select through the unrolled loop).
    float v = 0.0f;
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      if (m == lane) v = acc[m];
    }
    p.y[lane * p.n + row] = __float2bfloat16_rn(v);
  }
}

template <int kM>
absl::Status Launch(const SmallGemmParams& p, cudaStream_t stream, bool pdl) {
  const int64_t blocks = (p.n + kWarps - 1) / kWarps;
  DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&SmallGemmKernel<kM>,
                                         dim3(static_cast<unsigned>(blocks)),
                                         dim3(kThreads), 0, stream, pdl, p));
  return absl::OkStatus();
}

}  // namespace

bool SmallGemmApplies(int64_t tokens, int64_t n, int64_t k) {
  return tokens >= 1 && tokens <= kSmallGemmMaxTokens && n >= 1 && k >= 8 &&
         k % 8 == 0 && (n + kWarps - 1) / kWarps < (int64_t{1} << 31);
}

absl::Status LaunchSmallGemm(const SmallGemmParams& p, cudaStream_t stream,
                             bool pdl) {
  if (!SmallGemmApplies(p.tokens, p.n, p.k)) {
    return absl::InvalidArgumentError("small gemm: unsupported sizes");
  }
  switch (p.tokens) {
    case 1:
      return Launch<1>(p, stream, pdl);
    case 2:
      return Launch<2>(p, stream, pdl);
    case 3:
      return Launch<3>(p, stream, pdl);
    case 4:
      return Launch<4>(p, stream, pdl);
    case 5:
      return Launch<5>(p, stream, pdl);
    case 6:
      return Launch<6>(p, stream, pdl);
    case 7:
      return Launch<7>(p, stream, pdl);
    default:
      return Launch<8>(p, stream, pdl);
  }
}

}  // namespace duet::kernels::cuda
