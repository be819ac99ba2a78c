#include "common/device_status.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/skinny_gemm.h"
#include "kernels/cuda/streaming_load.cuh"

namespace duet::kernels::cuda {
namespace {

// K is walked in chunks of 32 elements: lane (g = lane / 4, q = lane % 4)
// holds elements [32c + 8q, 32c + 8q + 8) of weight rows g and g + 8 of the
// warp's 16-row tile, and the same elements of token g of each 8-token
// tile of x. MMA 0 of the chunk takes the vector's elements 0-3 as the
// fragment's k positions {2q, 2q+1, 2q+8, 2q+9}, MMA 1 elements 4-7; A and
// B agree on that map, so each MMA sums 16 distinct products of the chunk.
constexpr int kChunk = 32;

// kNT tiles of 8 tokens; kMT tiles of 16 weight rows per warp (more rows
// per x load: x is re-read once per warp, from L1 or L2); kR = 1: y = x w^T
// over n rows; kR = 2 (fused SiLU * mul, n = 2I): each gate row's warp also
// streams up row I + row, and y[t][row] = silu(g) * u of the two
// bf16-rounded sums. kSplit warps share their rows, each summing one
// contiguous 1/kSplit of the chunks; the segments are added in segment
// order by the first of them. Every element's sum therefore depends only on
// (n, k, kSplit), not on kR, kMT or kNT, which keeps the fused and unfused
// paths equal.
//
// kLoads 16-byte weight loads per lane are in flight (kLoads / (2 kR kMT)
// chunks). Held to 128 registers (16 warps per SM) so that enough weight
// loads are in flight per SM.
template <int kNT, int kMT, int kR, int kWarps, int kSplit, int kLoads>
__global__ void __launch_bounds__(kWarps * 32, 16 / kWarps)
    SkinnyGemmKernel(SmallGemmParams p) {
  constexpr int kUnroll = kLoads / (2 * kR * kMT);
  constexpr int kGroups = kWarps / kSplit;  // row groups per CTA
  static_assert(kGroups * kSplit == kWarps && kUnroll >= 1);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int q = lane % 4;
  const int seg = warp % kSplit;
  const int64_t out_n = p.n / kR;
  const int64_t row0 =
      (int64_t{blockIdx.x} * kGroups + warp / kSplit) * 16 * kMT;
  const int64_t chunks = (p.k + kChunk - 1) / kChunk;
  const int64_t seg_len = (chunks + kSplit - 1) / kSplit;
  const int64_t c_begin = min(chunks, seg * seg_len);
  const int64_t c_end = min(chunks, c_begin + seg_len);

  // Lane rows: row0 + 16 m + g + 8 h (h = 0, 1 for the fragment's halves).
  bool row_ok[kMT][2];
  const __nv_bfloat16* w[kMT][kR][2];
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = row0 + 16 * m + g + 8 * h;
      row_ok[m][h] = row < out_n;
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        w[m][r][h] = p.w + ((row_ok[m][h] ? row : 0) + r * out_n) * p.k + 8 * q;
      }
    }
  }
  const uint64_t policy = EvictFirstPolicy();
  // wv[u] holds chunk c with c % kUnroll == u: a rolling window, refilled
  // right after its MMAs, so kUnroll chunks stay in flight with one buffer.
  uint4 wv[kUnroll][kMT][kR][2];
  auto load = [&](int u, int64_t c) {
    const int64_t kk = c * kChunk;
    const bool in = c < c_end && kk + 8 * q < p.k;
#pragma unroll
    for (int m = 0; m < kMT; ++m) {
#pragma unroll
      for (int r = 0; r < kR; ++r) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          wv[u][m][r][h] = in && row_ok[m][h]
                               ? LoadStreaming(w[m][r][h] + kk, policy)
                               : make_uint4(0, 0, 0, 0);
        }
      }
    }
  };
  // No kernel writes the weights: their first loads may start before the
  // previous kernel (which writes x) has finished (pdl.h).
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) load(u, c_begin + u);
  PdlWait();
  PdlLaunchDependents();

  const __nv_bfloat16* xrow[kNT];
  bool tok_ok[kNT];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    const int64_t token = nt * 8 + g;
    tok_ok[nt] = token < p.tokens;
    xrow[nt] = p.x + (tok_ok[nt] ? token : 0) * p.k + 8 * q;
  }
  float acc[kMT][kR][kNT][4];
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[m][r][nt][i] = 0.0f;
      }
    }
  }
  for (int64_t c0 = c_begin; c0 < c_end; c0 += kUnroll) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + u;
      if (c >= c_end) break;  // warp-uniform
      const int64_t kk = c * kChunk;
      const bool in = kk + 8 * q < p.k;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const uint4 xv =
            in && tok_ok[nt]
                ? __ldg(reinterpret_cast<const uint4*>(xrow[nt] + kk))
                : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int m = 0; m < kMT; ++m) {
#pragma unroll
          for (int r = 0; r < kR; ++r) {
            const uint4& lo = wv[u][m][r][0];
            const uint4& hi = wv[u][m][r][1];
            const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
            MmaBf16(acc[m][r][nt], a0, xv.x, xv.y);
            const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
            MmaBf16(acc[m][r][nt], a1, xv.z, xv.w);
          }
        }
      }
      load(u, c + kUnroll);
    }
  }

  if constexpr (kSplit > 1) {
    constexpr int kVals = kMT * kR * kNT * 4;
    // [warp][value][lane]: conflict-free stores and loads.
    __shared__ float partial[kWarps][kVals][32];
    float* mine = &acc[0][0][0][0];
#pragma unroll
    for (int v = 0; v < kVals; ++v) partial[warp][v][lane] = mine[v];
    __syncthreads();
    if (seg != 0) return;
#pragma unroll
    for (int v = 0; v < kVals; ++v) {
      float sum = partial[warp][v][lane];
      for (int s = 1; s < kSplit; ++s) sum += partial[warp + s][v][lane];
      mine[v] = sum;
    }
  }

  // Accumulator i of tile (m, nt): row 16 m + g + 8 (i / 2), token
  // nt * 8 + 2q + i % 2.
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = row0 + 16 * m + g + 8 * (i / 2);
        const int64_t token = nt * 8 + 2 * q + i % 2;
        if (row >= out_n || token >= p.tokens) continue;
        float y = acc[m][0][nt][i];
        if constexpr (kR == 2) {
          const float gate = __bfloat162float(__float2bfloat16_rn(y));
          const float up =
              __bfloat162float(__float2bfloat16_rn(acc[m][1][nt][i]));
          y = Silu(gate) * up;
        }
        p.y[token * out_n + row] = __float2bfloat16_rn(y);
      }
    }
  }
}

template <int kNT, int kR, int kWarps, int kSplit, int kMT = 1, int kLoads = 4>
absl::Status LaunchShape(const SmallGemmParams& p, cudaStream_t stream,
                         bool pdl) {
  const int64_t groups = CeilDiv(p.n / kR, int64_t{16 * kMT});
  const dim3 grid(static_cast<unsigned>(CeilDiv(groups, kWarps / kSplit)));
  DUET_CUDA_RETURN_IF_ERROR(
      LaunchKernel(&SkinnyGemmKernel<kNT, kMT, kR, kWarps, kSplit, kLoads>,
                   grid, dim3(kWarps * 32), 0, stream, pdl, p));
  return absl::OkStatus();
}

// The launch shapes (warps per CTA, warps sharing rows[, 16-row tiles per
// warp, weight loads in flight per lane]).
template <int kNT, int kR>
absl::Status LaunchShapeIndex(int shape, const SmallGemmParams& p,
                              cudaStream_t stream, bool pdl) {
  switch (shape) {
    case 0:
      return LaunchShape<kNT, kR, 4, 1>(p, stream, pdl);
    case 1:
      return LaunchShape<kNT, kR, 4, 2>(p, stream, pdl);
    case 2:
      return LaunchShape<kNT, kR, 4, 4>(p, stream, pdl);
    case 3:
      return LaunchShape<kNT, kR, 8, 1>(p, stream, pdl);
    case 4:
      return LaunchShape<kNT, kR, 8, 2>(p, stream, pdl);
    case 5:
      return LaunchShape<kNT, kR, 8, 4>(p, stream, pdl);
    case 6:
      return LaunchShape<kNT, kR, 8, 8>(p, stream, pdl);
    case 7:
      return LaunchShape<kNT, kR, 8, 4, 1, 8>(p, stream, pdl);
    case 8:
      return LaunchShape<kNT, kR, 4, 2, 2, 8>(p, stream, pdl);
    case 9:
      return LaunchShape<kNT, kR, 4, 4, 2, 8>(p, stream, pdl);
    default:
      return LaunchShape<kNT, kR, 4, 1, 2, 8>(p, stream, pdl);
  }
}

// By the weight's rows n (the 2I rows for the fused SiLU GEMM too, so it
// sums each row as the plain GEMM over those rows does) and k: split K
// until there are about 16 warps per SM of a 132-SM GPU to keep loads in
// flight, but never below 8 chunks (256 elements) per warp.
int AutoShape(int64_t n, int64_t k) {
  const int64_t tiles = CeilDiv(n, int64_t{16});
  const int64_t chunks = CeilDiv(k, int64_t{kChunk});
  int split = 1;
  while (split < 8 && tiles * split < 2048 && chunks / (split * 2) >= 8) {
    split *= 2;
  }
  switch (split) {
    case 1:
      return 3;  // 8 warps, 1 per tile
    case 2:
      return 4;
    case 4:
      return 5;
    default:
      return 6;  // 8 warps, 8 per tile
  }
}

template <int kNT>
absl::Status Launch(const SmallGemmParams& p, cudaStream_t stream, bool pdl) {
  const int shape = p.shape >= 0 ? p.shape : AutoShape(p.n, p.k);
  return p.silu_mul ? LaunchShapeIndex<kNT, 2>(shape, p, stream, pdl)
                    : LaunchShapeIndex<kNT, 1>(shape, p, stream, pdl);
}

}  // namespace

bool SkinnyGemmApplies(int64_t tokens, int64_t n, int64_t k) {
  return tokens >= 1 && tokens <= kSkinnyGemmMaxTokens &&
         StreamingGemmWeightFits(n, k);
}

absl::Status LaunchSkinnyGemm(const SmallGemmParams& p, cudaStream_t stream,
                              bool pdl) {
  if (!SkinnyGemmApplies(p.tokens, p.n, p.k) || (p.silu_mul && p.n % 2 != 0)) {
    return absl::InvalidArgumentError("skinny gemm: unsupported sizes");
  }
  if (p.shape >= kSkinnyGemmShapes) {
    return absl::InvalidArgumentError("skinny gemm: no such launch shape");
  }
  switch ((p.tokens + 7) / 8) {
    case 1:
      return Launch<1>(p, stream, pdl);
    case 2:
      return Launch<2>(p, stream, pdl);
    case 3:
      return Launch<3>(p, stream, pdl);
    default:
      return Launch<4>(p, stream, pdl);
  }
}

}  // namespace duet::kernels::cuda
