#include "common/device_status.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/small_gemm.h"
#include "kernels/cuda/streaming_load.cuh"

namespace duet::kernels::cuda {
namespace {

// kSplit warps per output row, each dotting one contiguous 1/kSplit of K
// (in 16-byte vectors: lane l of a segment takes vectors l, l + 32, ...),
// so a CTA of kWarps covers kWarps / kSplit rows. kR = 1: y[m][row] = x[m]
// . w[row]. kR = 2 (fused SiLU * mul, n = 2I weight rows): the warp also
// streams weight row row + I, and y[m][row] = silu(g) * u from the two
// bf16-rounded dot products; each row's sum runs in the same order as with
// kR = 1 and the same shape, so the result equals the GEMM then the SiLU *
// mul kernel bit for bit.
template <int kM, int kR, int kWarps, int kSplit, int kUnroll>
__global__ void __launch_bounds__(kWarps * 32, (kR == 1 && kUnroll == 5)
                                                   ? 1024 / (kWarps * 32)
                                                   : 1)
    SmallGemmKernel(SmallGemmParams p) {
  constexpr int kRows = kWarps / kSplit;
  static_assert(kRows * kSplit == kWarps);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int seg = warp % kSplit;
  const int64_t out_n = p.n / kR;
  const int64_t row = int64_t{blockIdx.x} * kRows + warp / kSplit;
  const bool active = row < out_n;  // whole warp
  const int64_t nvec = p.k / 8;
  const int64_t seg_len = (nvec + kSplit - 1) / kSplit;
  const int64_t seg_end = min(nvec, (seg + 1) * seg_len);
  const uint4* w[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    w[r] = reinterpret_cast<const uint4*>(
        p.w + ((active ? row : 0) + r * out_n) * p.k);
  }
  // kUnroll weight loads per lane and row in flight: the next group is
  // issued before the math on the current one.
  const uint64_t policy = EvictFirstPolicy();
  uint4 wv[kR][kUnroll];
  auto load = [&](int64_t v0) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + u * 32;
        wv[r][u] =
            active && v < seg_end
                ? LoadStreaming(
                      reinterpret_cast<const __nv_bfloat16*>(w[r] + v), policy)
                : make_uint4(0, 0, 0, 0);
      }
    }
  };
  int64_t v0 = seg * seg_len + lane;
  // No kernel writes the weights, so the first loads may start before the
  // previous kernel (which writes x) has finished: pdl.h.
  load(v0);
  PdlWait();
  PdlLaunchDependents();
  float acc[kR][kM];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.0f;
  }
  const uint4* x = reinterpret_cast<const uint4*>(p.x);
  if (active) {
    for (; v0 < seg_end; v0 += 32 * kUnroll) {
      uint4 cur[kR][kUnroll];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) cur[r][u] = wv[r][u];
      }
      if (v0 + 32 * kUnroll < seg_end) load(v0 + 32 * kUnroll);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t v = v0 + u * 32;
        if (v >= seg_end) break;
        float wf[kR][8];
#pragma unroll
        for (int r = 0; r < kR; ++r) Bf16x8ToFloat(cur[r][u], wf[r]);
#pragma unroll
        for (int m = 0; m < kM; ++m) {
          float xf[8];
          Bf16x8ToFloat(__ldg(x + m * nvec + v), xf);
#pragma unroll
          for (int r = 0; r < kR; ++r) {
#pragma unroll
            for (int i = 0; i < 8; ++i)
              acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
          }
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
  if constexpr (kSplit > 1) {
    // The segments' sums, added in segment order by the row's first warp.
    __shared__ float partial[kWarps][kR][kM];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kR; ++r) {
#pragma unroll
        for (int m = 0; m < kM; ++m) partial[warp][r][m] = acc[r][m];
      }
    }
    __syncthreads();
    if (seg != 0) return;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int m = 0; m < kM; ++m) {
        float sum = partial[warp][r][m];
        for (int s = 1; s < kSplit; ++s) sum += partial[warp + s][r][m];
        acc[r][m] = sum;
      }
    }
  }
  if (active && lane < kM) {
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

template <int kM, int kR, int kWarps, int kSplit, int kUnroll>
absl::Status LaunchShape(const SmallGemmParams& p, cudaStream_t stream,
                         bool pdl) {
  const int64_t out_n = p.n / kR;
  const dim3 grid(static_cast<unsigned>(CeilDiv(out_n, kWarps / kSplit)));
  DUET_CUDA_RETURN_IF_ERROR(
      LaunchKernel(&SmallGemmKernel<kM, kR, kWarps, kSplit, kUnroll>, grid,
                   dim3(kWarps * 32), 0, stream, pdl, p));
  return absl::OkStatus();
}

// The launch shapes (warps per CTA, warps per row, loads in flight per
// lane) SmallGemmParams::shape picks from at 1-2 tokens. The 5-load shapes
// are held to 64 registers (launch bounds) so as many CTAs stay resident
// as with 4 loads.
template <int kM, int kR>
absl::Status LaunchShapeIndex(int shape, const SmallGemmParams& p,
                              cudaStream_t stream, bool pdl) {
  switch (shape) {
    case 1:
      return LaunchShape<kM, kR, 4, 1, 8>(p, stream, pdl);
    case 2:
      return LaunchShape<kM, kR, 8, 2, 4>(p, stream, pdl);
    case 3:
      return LaunchShape<kM, kR, 8, 4, 4>(p, stream, pdl);
    case 4:
      return LaunchShape<kM, kR, 8, 8, 4>(p, stream, pdl);
    case 5:
      return LaunchShape<kM, kR, 4, 2, 4>(p, stream, pdl);
    case 6:
      return LaunchShape<kM, kR, 4, 1, 4>(p, stream, pdl);
    case 7:
      return LaunchShape<kM, kR, 8, 2, 8>(p, stream, pdl);
    case 8:
      return LaunchShape<kM, kR, 8, 8, 5>(p, stream, pdl);
    case 9:
      return LaunchShape<kM, kR, 4, 2, 5>(p, stream, pdl);
    case 10:
      return LaunchShape<kM, kR, 8, 4, 5>(p, stream, pdl);
    default:
      return LaunchShape<kM, kR, 8, 1, 4>(p, stream, pdl);
  }
}

// The shape for a [n, k] weight (n: weight rows, the same for the fused
// SiLU GEMM and the plain GEMM over its 2I rows, so both sum each row the
// same way). From H100 sweeps of every shape over Qwen3-4B's weights
// (docs/bench/2026-11-21-h100-decode-gemm-chain.txt and
// docs/bench/2026-11-21-h100-small-gemm-shapes-run7.txt): a
// vocabulary-sized weight streams best from small CTAs with one warp per
// row; otherwise rows split into segments of ~1K elements so enough warps
// are in flight, and when that leaves a lane 5 loads, a shape that issues
// all 5 at once (one memory round trip per CTA instead of 4 + 1: down 755
// -> 703 us, qkv 478 -> 467, gate_up 1267 -> 1248 over 36 layers).
int AutoShape(int64_t n, int64_t k) {
  if (n >= 65536) return 6;  // 4 warps, 1 per row
  int split = 1;
  while (split < 8 && k / (split * 2) >= 1024) split *= 2;
  const int64_t seg = (k / 8 + split - 1) / split;  // vectors per warp
  const bool five = (seg + 31) / 32 == 5;           // loads per lane
  switch (split) {
    case 1:
      return 6;  // 4 warps, 1 per row
    case 2:
      return five ? 9 : 5;  // 4 warps, 2 per row
    case 4:
      return five ? 10 : 3;  // 8 warps, 4 per row
    default:
      return five ? 8 : 4;  // 8 warps, 8 per row
  }
}

template <int kM>
absl::Status Launch(const SmallGemmParams& p, cudaStream_t stream, bool pdl) {
  if constexpr (kM <= 2) {
    const int shape = p.shape >= 0 ? p.shape : AutoShape(p.n, p.k);
    return p.silu_mul ? LaunchShapeIndex<kM, 2>(shape, p, stream, pdl)
                      : LaunchShapeIndex<kM, 1>(shape, p, stream, pdl);
  }
  return p.silu_mul ? LaunchShape<kM, 2, 8, 1, 4>(p, stream, pdl)
                    : LaunchShape<kM, 1, 8, 1, 4>(p, stream, pdl);
}

}  // namespace

bool SmallGemmApplies(int64_t tokens, int64_t n, int64_t k) {
  return tokens >= 1 && tokens <= kSmallGemmMaxTokens &&
         StreamingGemmWeightFits(n, k);
}

absl::Status LaunchSmallGemm(const SmallGemmParams& p, cudaStream_t stream,
                             bool pdl) {
  if (!SmallGemmApplies(p.tokens, p.n, p.k) || (p.silu_mul && p.n % 2 != 0)) {
    return absl::InvalidArgumentError("small gemm: unsupported sizes");
  }
  if (p.shape >= kSmallGemmShapes) {
    return absl::InvalidArgumentError("small gemm: no such launch shape");
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
