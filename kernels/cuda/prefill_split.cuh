// Internal to kernels/cuda: the key-split path of the prefill attention
// kernels (prefill_attention.cu), which a launch takes when its query tiles
// are fewer than the SMs: the plan, each split CTA's partial store, and the
// kernel that merges the splits.
#ifndef DUET_KERNELS_CUDA_PREFILL_SPLIT_CUH_
#define DUET_KERNELS_CUDA_PREFILL_SPLIT_CUH_

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda::prefill_split {

// The workspace of a split launch: O [splits][tokens * heads][head_dim],
// then the row maxima (log2 domain) and sums [splits][tokens * heads].
struct SplitWorkspace {
  __device__ explicit SplitWorkspace(const PagedAttentionParams& p)
      : rows(p.num_tokens * p.num_heads),
        o(static_cast<float*>(p.workspace)),
        max(o + p.prefill_splits * rows * p.head_dim),
        sum(max + p.prefill_splits * rows) {}
  int64_t rows;
  float* o;
  float* max;
  float* sum;
};

// A split with no key of this CTA's tile (the tile's causal end comes
// before it): its rows' maxima are -inf, which the merge skips.
// Rows r of the tile are (token tok0 + r / kGroup of the sequence whose
// tokens start at q_begin, head kvh * kGroup + r % kGroup).
template <int kRows, int kGroup, int kThreads>
__device__ void StoreEmptySplit(const PagedAttentionParams& p, int split,
                                int q_begin, int q_len, int tok0, int kvh) {
  const SplitWorkspace ws(p);
  for (int r = threadIdx.x; r < kRows; r += kThreads) {
    const int tok = tok0 + r / kGroup;
    if (tok >= q_len) continue;
    ws.max[split * ws.rows + (int64_t{q_begin} + tok) * p.num_heads +
           kvh * kGroup + r % kGroup] = -INFINITY;
  }
}

// A split's 16-row tile: unnormalized O, the rows' maxima and sums
// (completed across the 4 lanes of each row group), for rows that exist
// (row >= 0: token * num_heads + head).
template <int kOTiles>
__device__ __forceinline__ void StorePartialRows(const PagedAttentionParams& p,
                                                 const float (&o)[kOTiles][4],
                                                 const float (&row_max)[2],
                                                 float (&row_sum)[2],
                                                 const int64_t (&row)[2],
                                                 int qd) {
  constexpr int kHeadDim = kOTiles * 8;
  const SplitWorkspace ws(p);
  const int split = static_cast<int>(blockIdx.x) % p.prefill_splits;
  SumRowQuads(row_sum);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (row[i] < 0) continue;
    const int64_t r = split * ws.rows + row[i];
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      *reinterpret_cast<float2*>(ws.o + r * kHeadDim + n * 8 + qd * 2) =
          make_float2(o[n][2 * i], o[n][2 * i + 1]);
    }
    if (qd == 0) {
      ws.max[r] = row_max[i];
      ws.sum[r] = row_sum[i];
    }
  }
}

// Merges a split launch's partials: one warp per (token, head) row weighs
// each split's O and sum by 2^(max_s - max) and stores O / sum in bf16.
// Split 0 holds key 0, which every row sees, so max is finite. The merge
// is latency-bound (a few KiB per row, from L2), so every load is issued
// before its value is needed: lane s reads split s's max and sum (splits
// <= kMaxSplits = 32), warp shuffles give the max, weights and sum, and
// the O loop reads every split's O unconditionally (a split no key of
// which the row sees gets weight 0 and is selected away, never
// multiplied: its O was never written).
template <int kHeadDim, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    MergePrefillSplitsKernel(PagedAttentionParams p) {
  const SplitWorkspace ws(p);
  const int64_t row = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (row >= ws.rows) return;
  const int lane = threadIdx.x % 32;
  const int splits = p.prefill_splits;
  const float m = lane < splits ? ws.max[lane * ws.rows + row] : -INFINITY;
  const float l = lane < splits ? ws.sum[lane * ws.rows + row] : 0.0f;
  float max = m;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, o));
  }
  const float w = m == -INFINITY ? 0.0f : exp2f(m - max);
  float sum = m == -INFINITY ? 0.0f : w * l;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
  }
  // kPer consecutive elements of the row per lane (head_dim 16: lanes
  // 0..15 one each).
  constexpr int kPer = kHeadDim >= 32 ? kHeadDim / 32 : 1;
  static_assert(kPer == 1 || kPer == 2 || kPer == 4);
  const bool active = lane * kPer < kHeadDim;
  float acc[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc[e] = 0.0f;
#pragma unroll 4
  for (int s = 0; s < splits; ++s) {
    const float ws_s = __shfl_sync(0xffffffffu, w, s);
    if (!active) continue;
    const float* src = ws.o + (s * ws.rows + row) * kHeadDim + lane * kPer;
    float v[kPer];
    if constexpr (kPer == 4) {
      const float4 x = *reinterpret_cast<const float4*>(src);
      v[0] = x.x;
      v[1] = x.y;
      v[2] = x.z;
      v[3] = x.w;
    } else if constexpr (kPer == 2) {
      const float2 x = *reinterpret_cast<const float2*>(src);
      v[0] = x.x;
      v[1] = x.y;
    } else {
      v[0] = *src;
    }
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      acc[e] = ws_s != 0.0f ? fmaf(ws_s, v[e], acc[e]) : acc[e];
    }
  }
  if (!active) return;
  const float inv = 1.0f / sum;
  const int64_t token = row / p.num_heads;
  const int head = static_cast<int>(row % p.num_heads);
  __nv_bfloat16* out = p.out + token * p.out_stride +
                       int64_t{head} * kHeadDim + lane * kPer;
  if constexpr (kPer == 4) {
    *reinterpret_cast<uint2*>(out) = make_uint2(
        PackBf16x2(acc[0] * inv, acc[1] * inv),
        PackBf16x2(acc[2] * inv, acc[3] * inv));
  } else if constexpr (kPer == 2) {
    *reinterpret_cast<uint32_t*>(out) = PackBf16x2(acc[0] * inv, acc[1] * inv);
  } else {
    *out = __float2bfloat16(acc[0] * inv);
  }
}

// Splits are whole 64-key tiles (the key tile of both kernel variants).
constexpr int kSplitTileKeys = 64;
// A split takes at least this many keys: below it the merge's round trip
// through the workspace costs more than the keys.
constexpr int kMinSplitKeys = 256;
constexpr int kMaxSplits = 32;
// The merge reads split s's max and sum in lane s.
static_assert(kMaxSplits <= 32);

struct PrefillSplitPlan {
  int splits = 1;
  int split_keys = 0;
};

// Splits only when the (query tile, sequence, KV head) CTAs that have
// work are fewer than the SMs: then enough splits for about two CTAs per
// SM, of whole key tiles and at least kMinSplitKeys keys each. The grid
// gives every sequence max_query_len's tiles, but a shorter sequence's
// tiles past its end exit at once (a decode token beside a prompt chunk in
// a colocated node's mixed step), so the work is counted from
// host_query_start when the caller has it. max_seq_len is the step's real
// longest context (prefill grids are not recorded in graphs). rows: query
// rows per CTA.
inline PrefillSplitPlan PlanPrefillSplit(const PagedAttentionParams& p,
                                         int rows) {
  PrefillSplitPlan plan;
  if (!p.prefill_split_kv || p.num_tokens == 0 || p.num_kv_heads <= 0 ||
      p.num_heads % p.num_kv_heads != 0) {
    return plan;
  }
  const int64_t tokens = std::max(1, rows / (p.num_heads / p.num_kv_heads));
  int64_t tiles = 0;
  if (p.host_query_start != nullptr) {
    for (int s = 0; s < p.num_seqs; ++s) {
      tiles += CeilDiv(
          int64_t{p.host_query_start[s + 1]} - p.host_query_start[s], tokens);
    }
  } else {
    tiles = CeilDiv(p.max_query_len, tokens) * int64_t{p.num_seqs};
  }
  const int64_t ctas = std::max<int64_t>(1, tiles * p.num_kv_heads);
  const int64_t sms = std::max(1, p.num_sms);
  if (ctas >= sms) return plan;
  int64_t splits = std::min<int64_t>(
      {CeilDiv(2 * sms, ctas), p.max_seq_len / kMinSplitKeys, kMaxSplits});
  if (splits < 2) return plan;
  const int64_t keys =
      CeilDiv(CeilDiv(p.max_seq_len, splits), kSplitTileKeys) * kSplitTileKeys;
  splits = CeilDiv(p.max_seq_len, keys);
  if (splits < 2) return plan;
  plan.splits = static_cast<int>(splits);
  plan.split_keys = static_cast<int>(keys);
  return plan;
}

}  // namespace duet::kernels::cuda::prefill_split

#endif  // DUET_KERNELS_CUDA_PREFILL_SPLIT_CUH_
