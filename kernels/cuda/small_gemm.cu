#include "common/device_status.h"
#include "kernels/cuda/activation.cuh"
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

// One warp per output row. kR = 1: y[m][row] = x[m] . w[row]. kR = 2 (fused
// SiLU * mul, n = 2I weight rows): the warp also streams weight row
// row + I, and y[m][row] = silu(g) * u from the two bf16-rounded dot
// products; each row's sum runs in the same order as with kR = 1, so the
// result equals the GEMM then the SiLU * mul kernel bit for bit.
template <int kM, int kR>
__global__ void __launch_bounds__(kThreads) SmallGemmKernel(SmallGemmParams p) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t out_n = p.n / kR;
  const int64_t row = int64_t{blockIdx.x} * kWarps + warp;
  const bool active = row < out_n;  // whole warp
  const __nv_bfloat16* w[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r)
    w[r] = p.w + ((active ? row : 0) + r * out_n) * p.k;
  // kUnroll weight loads per lane and row in flight: the next group is
  // issued before the math on the current one.
  uint4 wv[kR][kUnroll];
  auto load = [&](int64_t base) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t at = base + u * kStep;
        wv[r][u] = active && at < p.k ? LoadStreaming(w[r] + at)
                                      : make_uint4(0, 0, 0, 0);
      }
    }
  };
  int64_t base = int64_t{lane} * 8;
  // No kernel writes the weights, so the first loads may start before the
  // previous kernel (which writes x) has finished: pdl.h.
  load(base);
  PdlWait();
  PdlLaunchDependents();
  if (!active) return;
  float acc[kR][kM];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.0f;
  }
  for (; base < p.k; base += kStep * kUnroll) {
    uint4 cur[kR][kUnroll];
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) cur[r][u] = wv[r][u];
    }
    if (base + kStep * kUnroll < p.k) load(base + kStep * kUnroll);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t at = base + u * kStep;
      if (at >= p.k) break;
      float wf[kR][8];
#pragma unroll
      for (int r = 0; r < kR; ++r) Bf16x8ToFloat(cur[r][u], wf[r]);
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        const uint4 xv =
            __ldg(reinterpret_cast<const uint4*>(p.x + m * p.k + at));
        float xf[8];
        Bf16x8ToFloat(xv, xf);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
#pragma unroll
          for (int i = 0; i < 8; ++i)
            acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], off);
      }
    }
  }
  if (lane < kM) {
    // Lane m writes token m (a register array indexed at run time would
    // spill, so select through the unrolled loop).
    float v[kR] = {};
#pragma unroll
    for (int m = 0; m < kM; ++m) {
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        if (m == lane) v[r] = acc[r][m];
      }
    }
    float y = v[0];
    if constexpr (kR == 2) {
      const float g = __bfloat162float(__float2bfloat16_rn(v[0]));
      const float u = __bfloat162float(__float2bfloat16_rn(v[1]));
      y = Silu(g) * u;
    }
    p.y[lane * out_n + row] = __float2bfloat16_rn(y);
  }
}

template <int kM>
absl::Status Launch(const SmallGemmParams& p, cudaStream_t stream, bool pdl) {
  const int64_t out_n = p.silu_mul ? p.n / 2 : p.n;
  const dim3 grid(static_cast<unsigned>((out_n + kWarps - 1) / kWarps));
  if (p.silu_mul) {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&SmallGemmKernel<kM, 2>, grid,
                                           dim3(kThreads), 0, stream, pdl, p));
  } else {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&SmallGemmKernel<kM, 1>, grid,
                                           dim3(kThreads), 0, stream, pdl, p));
  }
  return absl::OkStatus();
}

}  // namespace

bool SmallGemmApplies(int64_t tokens, int64_t n, int64_t k) {
  return tokens >= 1 && tokens <= kSmallGemmMaxTokens && n >= 1 && k >= 8 &&
         k % 8 == 0 && (n + kWarps - 1) / kWarps < (int64_t{1} << 31);
}

absl::Status LaunchSmallGemm(const SmallGemmParams& p, cudaStream_t stream,
                             bool pdl) {
  if (!SmallGemmApplies(p.tokens, p.n, p.k) || (p.silu_mul && p.n % 2 != 0)) {
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
