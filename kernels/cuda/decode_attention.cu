// Flash-decoding over the paged cache on bf16 tensor cores. Decode is
// memory-bound (one query row per KV row), so the design goal is to keep
// HBM busy: every K/V byte is read exactly once, with enough bytes in
// flight, and as few instructions per byte as possible.
// - A CTA owns (query token, KV head, split): the kGroup query heads of the
//   KV head are the rows of one 16-row MMA tile (rows >= kGroup are zero
//   padding), so GQA does not multiply the reads, and S = Q K^T and O += P V
//   are mma.sync m16n8k16 ops: ~0.1 instructions per key and head instead
//   of a dot product with 4 shuffles per key (the previous CUDA-core kernel
//   reached 1-2 TB/s at batch 64 x 2048 for that reason).
// - Each warp streams its own 16-key tiles (warp w takes tiles w, w + 4,
//   ...) through a private kStages-deep cp.async ring in shared memory, so
//   there is no CTA-wide barrier per tile and ~(kStages - 1) x 8.5 KB per
//   warp are always in flight; each warp keeps its own online-softmax state.
// - At the end the warps' states are merged through shared memory; when the
//   batch alone does not fill the GPU, the context is split across CTAs and
//   the last CTA of each (token, KV head) to finish merges the splits
//   (log-sum-exp weights). A separate merge kernel cost a launch gap per
//   layer, which at batch 1 is as long as the attention itself.
// Numerics match the prefill kernel: fp32 accumulation, scores scaled in
// fp32 (log2 domain), probabilities rounded to bf16 for the P V product.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_utils.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/pdl.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 16;  // keys per warp tile: one k-step of P V
constexpr int kStages = 3;     // tiles per warp ring (2 in flight)
// Splits are whole multiples of this many keys: one tile per warp, so a
// short context at batch 1 still spreads over enough CTAs.
constexpr int kSplitGranule = kWarps * kTileKeys;
// CTAs per SM to aim for before splitting stops: two fit at once (shared
// memory), and each keeps 8 tiles in flight.
constexpr int kCtasPerSm = 2;

// Shared-memory row of one key: head_dim elements plus 16 bytes, so the 8
// row addresses of each ldmatrix phase hit distinct banks.
template <int kHeadDim>
inline constexpr int kRowStride = kHeadDim + 8;
template <int kHeadDim>
inline constexpr int kStageElems = 2 * kTileKeys* kRowStride<kHeadDim>;
template <int kHeadDim>
inline constexpr size_t kSmemBytes = size_t{kWarps} *
                                     kStages* kStageElems<kHeadDim> *
                                     sizeof(__nv_bfloat16);

struct SplitPlan {
  int max_splits = 1;
};

// Splits only when (tokens x KV heads) CTAs would leave the GPU idle: aim
// for about kCtasPerSm CTAs per SM. The grid is sized for the longest possible
// context (max_seq_len, a bound), and each sequence then divides its own
// context over at most max_splits CTAs (SplitLength), so a launch recorded
// once in a CUDA graph stays right, and fast, as contexts grow.
SplitPlan PlanSplits(const PagedAttentionParams& p) {
  SplitPlan plan;
  const int64_t max_pieces =
      std::max<int64_t>(1, CeilDiv(p.max_seq_len, kSplitGranule));
  const int64_t ctas = p.num_tokens * p.num_kv_heads;
  const int64_t target = int64_t{kCtasPerSm} * std::max(1, p.num_sms);
  if (ctas < target) {
    plan.max_splits =
        static_cast<int>(std::min(max_pieces, CeilDiv(target, ctas)));
  }
  return plan;
}

// Keys per split for a context of ctx keys: whole granules, at most
// max_splits splits.
__device__ __forceinline__ int SplitLength(int ctx, int max_splits) {
  const int pieces = (ctx + kSplitGranule - 1) / kSplitGranule;
  const int splits = min(max_splits, max(1, pieces));
  return (pieces + splits - 1) / splits * kSplitGranule;
}

struct SplitScratch {
  float* out = nullptr;  // [tokens][heads][max_splits][head_dim]
  float* max = nullptr;  // [tokens][heads][max_splits] (log2 domain)
  float* sum = nullptr;  // [tokens][heads][max_splits]
};

SplitScratch CarveScratch(const PagedAttentionParams& p,
                          const SplitPlan& plan) {
  SplitScratch s;
  const int64_t rows = p.num_tokens * p.num_heads * plan.max_splits;
  s.out = static_cast<float*>(p.workspace);
  s.max = s.out + rows * p.head_dim;
  s.sum = s.max + rows;
  return s;
}

// Merges the splits of the kGroup heads of (token t, KV head kvh): weights
// 2^(max_s - max) rescale every split's unnormalized output and sum to the
// global softmax. The partials come from other CTAs of this grid, so they
// are read from L2 (__ldcg), never from a stale L1 line. Every load is
// independent of the others and issued in parallel: at batch 1 this merge
// sits on the critical path of the layer, and a chain of one dependent L2
// round trip per split cost more than the attention itself at 2K context.
// `smem` holds 2 * kGroup * num_splits + kGroup floats (checked on launch).
template <int kHeadDim, int kGroup>
__device__ void MergeSplits(const PagedAttentionParams& p, int max_splits,
                            const SplitScratch& scratch, int64_t t, int kvh,
                            int num_splits, float* smem) {
  float* weight = smem;                            // [kGroup][num_splits]
  float* part_sum = weight + kGroup * num_splits;  // [kGroup][num_splits]
  float* denom = part_sum + kGroup * num_splits;   // [kGroup]
  const int64_t row0 = (t * p.num_heads + kvh * kGroup) * int64_t{max_splits};
  // 1. Every split's max and sum, all loads in flight at once.
  for (int i = threadIdx.x; i < kGroup * num_splits; i += kThreads) {
    const int h = i / num_splits;
    const int s = i % num_splits;
    const int64_t r = row0 + int64_t{h} * max_splits + s;
    weight[i] = __ldcg(scratch.max + r);
    part_sum[i] = __ldcg(scratch.sum + r);
  }
  __syncthreads();
  // 2. Per head (one warp each): the global max, each split's weight
  // 2^(max_s - max) and the softmax denominator.
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  for (int h = warp; h < kGroup; h += kWarps) {
    float* w = weight + h * num_splits;
    float m = -INFINITY;
    for (int s = lane; s < num_splits; s += 32) m = fmaxf(m, w[s]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float d = 0.0f;
    for (int s = lane; s < num_splits; s += 32) {
      w[s] = exp2f(w[s] - m);
      d += w[s] * part_sum[h * num_splits + s];
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
      d += __shfl_xor_sync(0xffffffffu, d, off);
    if (lane == 0) denom[h] = d;
  }
  __syncthreads();
  // 3. The outputs, 4 columns per thread, 8 splits' loads in flight.
  constexpr int kQuads = kHeadDim / 4;
  for (int i = threadIdx.x; i < kGroup * kQuads; i += kThreads) {
    const int h = i / kQuads;
    const int d4 = i % kQuads;
    const float* w = weight + h * num_splits;
    const float4* src = reinterpret_cast<const float4*>(scratch.out) +
                        (row0 + int64_t{h} * max_splits) * kQuads + d4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 8
    for (int s = 0; s < num_splits; ++s) {
      const float4 o = __ldcg(src + int64_t{s} * kQuads);
      v.x += w[s] * o.x;
      v.y += w[s] * o.y;
      v.z += w[s] * o.z;
      v.w += w[s] * o.w;
    }
    const float dn = denom[h];
    __nv_bfloat16* dst = p.out + t * p.out_stride +
                         int64_t{kvh * kGroup + h} * kHeadDim + d4 * 4;
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x / dn, v.y / dn);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(v.z / dn, v.w / dn);
    uint2 packed;
    packed.x = *reinterpret_cast<const uint32_t*>(&lo);
    packed.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(dst) = packed;
  }
}

template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads, 2)
    DecodeAttentionKernel(PagedAttentionParams p, int max_splits,
                          SplitScratch scratch) {
  // At decode (one new token per sequence, at its last position) every
  // cache row but the newest was written by earlier steps, and the step
  // metadata was uploaded before the step's first kernel: the prologue's
  // table lookups and K/V copies may start before the kernel that writes
  // this step's K/V and Q finishes (pdl.h), and only the newest key and Q
  // wait. At batch 1 this takes two memory latencies off every layer.
  // ValidateStep guarantees the new token's slot is the one its block table
  // names for its position, so no early copy can race with that write.
  // Prefill through this kernel (token_seq set) has many new keys per
  // sequence and waits first.
  const bool early = p.token_seq == nullptr;
  if (!early) {
    PdlWait();  // pdl.h: before any read of an earlier kernel's output
    PdlLaunchDependents();
  }
  constexpr int kStride = kRowStride<kHeadDim>;
  constexpr int kQSteps = kHeadDim / 16;       // k-steps of S = Q K^T
  constexpr int kOTiles = kHeadDim / 8;        // n-tiles of O
  constexpr int kPieces = kHeadDim / 8;        // 16-byte pieces per key
  constexpr int kLoads = kTileKeys * kPieces;  // per K (and per V) tile
  static_assert(kGroup <= 8, "a group must fit rows 0..7 of the MMA tile");
  static_assert(kLoads % 32 == 0 && kOTiles % 2 == 0);

  extern __shared__ uint4 smem_raw[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const int64_t t = blockIdx.x;
  const int split = blockIdx.y;
  const int kvh = blockIdx.z;
  const int seq = p.token_seq != nullptr ? p.token_seq[t] : static_cast<int>(t);
  const int ctx = p.positions[t] + 1;
  const int tokens_per_split = SplitLength(ctx, max_splits);
  const int begin = split * tokens_per_split;
  if (begin >= ctx) {      // uniform over the CTA
    if (early) PdlWait();  // pdl.h: not before the predecessor completes
    return;
  }
  const int end = min(ctx, begin + tokens_per_split);
  const int num_splits = (ctx + tokens_per_split - 1) / tokens_per_split;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;   // fragment row = query head within the group
  const int qd = lane % 4;  // fragment column pair

  const int32_t* table =
      p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int64_t head_stride = int64_t{p.block_size} * kHeadDim;
  const int64_t kv_stride = p.num_kv_heads * head_stride;
  const __nv_bfloat16* cache_head = p.kv_cache + kvh * head_stride;
  const BlockDivider blocks(p.block_size);
  __nv_bfloat16* ring = smem + warp * kStages * kStageElems<kHeadDim>;

  // This warp's tiles: begin + (warp + kWarps * i) * kTileKeys < end.
  const int first = begin + warp * kTileKeys;
  const int num_tiles = first < end ? (end - first + kWarps * kTileKeys - 1) /
                                          (kWarps * kTileKeys)
                                    : 0;

  // Key `pos`'s K row in cache block `block` (its V row is kv_stride on).
  auto key_row = [&](int64_t block, int pos) {
    return cache_head + block * 2 * kv_stride +
           int64_t{blocks.Offset(pos)} * kHeadDim;
  };
  // Gathers tile i's K and V into ring stage i % kStages; keys past `end`
  // are zero so that 0-probability columns never multiply garbage. Each
  // lane looks up one key's block (lanes 0-15) and the others read it by
  // shuffle, so a tile costs one dependent table load per lane.
  // `defer_new`: leave the newest key (written by the predecessor kernel)
  // out; it is copied in once that kernel has finished.
  auto load_tile = [&](int i, bool defer_new) {
    __nv_bfloat16* ks = ring + (i % kStages) * kStageElems<kHeadDim>;
    __nv_bfloat16* vs = ks + kTileKeys * kStride;
    const int key0 = first + i * kWarps * kTileKeys;
    const int my_pos = key0 + (lane % kTileKeys);
    const int my_block = my_pos < end ? table[blocks.Block(my_pos)] : 0;
#pragma unroll
    for (int r = 0; r < kLoads / 32; ++r) {
      const int c = lane + r * 32;
      const int key = c / kPieces;
      const int piece = c % kPieces;
      const int pos = key0 + key;
      const int64_t block = __shfl_sync(0xffffffffu, my_block, key);
      __nv_bfloat16* kd = ks + key * kStride + piece * 8;
      __nv_bfloat16* vd = vs + key * kStride + piece * 8;
      if (defer_new && pos == ctx - 1) continue;  // filled after PdlWait
      LoadKvPiece(kd, vd, pos < end ? key_row(block, pos) + piece * 8 : nullptr,
                  kv_stride);
    }
  };

  float o[kOTiles][4];
#pragma unroll
  for (int n = 0; n < kOTiles; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.0f;
  }
  float row_max = -INFINITY;  // row g; equal on the 4 lanes of the row
  float row_sum = 0.0f;       // this lane's columns only
  const float scale_log2 = p.scale * kLog2e;

  // Prologue: kStages - 1 tiles in flight (empty groups keep the count).
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < num_tiles) load_tile(i, early);
    CpAsyncCommit();
  }
  if (early) {
    PdlWait();  // pdl.h: before any read of an earlier kernel's output
    PdlLaunchDependents();
    // The newest key, if it fell in a prologue tile of this warp: plain
    // L2 loads (never a stale L1 line), stored into its ring row; the
    // __syncwarp before the tile is read orders these stores.
    const int rel = ctx - 1 - first;
    const int tile = rel / (kWarps * kTileKeys);
    if (end == ctx && rel >= 0 && rel % (kWarps * kTileKeys) < kTileKeys &&
        tile < kStages - 1 && tile < num_tiles) {
      __nv_bfloat16* ks = ring + (tile % kStages) * kStageElems<kHeadDim>;
      const int key = rel % (kWarps * kTileKeys);
      const __nv_bfloat16* src = key_row(table[blocks.Block(ctx - 1)], ctx - 1);
      for (int c = lane; c < 2 * kPieces; c += 32) {
        const int kv = c / kPieces;  // 0: K, 1: V
        const int piece = c % kPieces;
        *reinterpret_cast<uint4*>(ks + kv * kTileKeys * kStride +
                                  key * kStride + piece * 8) =
            __ldcg(reinterpret_cast<const uint4*>(src + kv * kv_stride +
                                                  piece * 8));
      }
    }
  }
  // Q A-fragments, rows g (real when g < kGroup) and g + 8 (always zero).
  uint32_t qf[kQSteps][2];
#pragma unroll
  for (int kk = 0; kk < kQSteps; ++kk) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      qf[kk][half] = g < kGroup ? *reinterpret_cast<const uint32_t*>(
                                      p.q + t * p.q_stride +
                                      int64_t{kvh * kGroup + g} * kHeadDim +
                                      kk * 16 + half * 8 + qd * 2)
                                : 0u;
    }
  }

  for (int i = 0; i < num_tiles; ++i) {
    // Refill the stage consumed last iteration (the __syncwarp at its end
    // ordered every lane's reads before these writes).
    if (i + kStages - 1 < num_tiles) load_tile(i + kStages - 1, false);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncwarp();
    const __nv_bfloat16* ks = ring + (i % kStages) * kStageElems<kHeadDim>;
    const __nv_bfloat16* vs = ks + kTileKeys * kStride;

    // S = Q K^T: 16 rows x 16 keys as two n-tiles of 8 keys.
    float s[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kQSteps; ++kk) {
      const int key = (lane >> 4) * 8 + (lane & 7);
      const int col = kk * 16 + ((lane >> 3) & 1) * 8;
      uint32_t b[4];
      LdMatrixX4(b, ks + key * kStride + col);
      const uint32_t a[4] = {qf[kk][0], 0u, qf[kk][1], 0u};
      MmaBf16(s[0], a, b[0], b[1]);
      MmaBf16(s[1], a, b[2], b[3]);
    }

    // Scale into the log2 domain, mask keys past `end`, online softmax for
    // row g (elements 0, 1 of each n-tile; 2, 3 are the zero rows g + 8).
    const int key0 = first + i * kWarps * kTileKeys;
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int pos = key0 + j * 8 + qd * 2 + e;
        s[j][e] = pos < end ? s[j][e] * scale_log2 : -INFINITY;
        tile_max = fmaxf(tile_max, s[j][e]);
      }
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    // The tile has at least one key below `end`, so new_max is finite and
    // alpha is 0 on the first tile (the old state vanishes as it should).
    const float new_max = fmaxf(row_max, tile_max);
    const float alpha = exp2f(row_max - new_max);
    row_max = new_max;
    row_sum *= alpha;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[j][e] = exp2f(s[j][e] - new_max);
        row_sum += s[j][e];
      }
    }
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      o[n][0] *= alpha;
      o[n][1] *= alpha;
    }

    // O += P V: the two S n-tiles are the A fragment of one 16-key k-step.
    const uint32_t a[4] = {PackBf16x2(s[0][0], s[0][1]), 0u,
                           PackBf16x2(s[1][0], s[1][1]), 0u};
#pragma unroll
    for (int n = 0; n < kOTiles; n += 2) {
      const int key = lane & 15;
      const int col = (n + (lane >> 4)) * 8;
      uint32_t b[4];
      LdMatrixX4Trans(b, vs + key * kStride + col);
      MmaBf16(o[n], a, b[0], b[1]);
      MmaBf16(o[n + 1], a, b[2], b[3]);
    }
    __syncwarp();  // this stage is refilled next iteration
  }
  CpAsyncWait<0>();  // no copy may land in the ring once it is reused below
  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 2);

  // Merge the warps: each writes its unnormalized output, max and sum for
  // the group's heads into shared memory (over its own ring: every warp
  // must be done reading, hence the barrier).
  __syncthreads();
  float* w_out = reinterpret_cast<float*>(smem);  // [kWarps][kGroup][kHeadDim]
  float* w_max = w_out + kWarps * kGroup * kHeadDim;  // [kWarps][kGroup]
  float* w_sum = w_max + kWarps * kGroup;
  static_assert((kWarps * kGroup * (kHeadDim + 2)) * sizeof(float) <=
                kSmemBytes<kHeadDim>);
  if (g < kGroup) {
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      float* dst = w_out + (warp * kGroup + g) * kHeadDim + n * 8 + qd * 2;
      dst[0] = o[n][0];
      dst[1] = o[n][1];
    }
    if (qd == 0) {
      w_max[warp * kGroup + g] = row_max;  // -inf for a warp without tiles
      w_sum[warp * kGroup + g] = row_sum;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kGroup * kHeadDim; idx += kThreads) {
    const int h = idx / kHeadDim;
    const int d = idx % kHeadDim;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, w_max[w * kGroup + h]);
    float v = 0.0f;
    float denom = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      // Warp 0 always has a key, so m is finite and empty warps weigh 0.
      const float wt = exp2f(w_max[w * kGroup + h] - m);
      v += wt * w_out[(w * kGroup + h) * kHeadDim + d];
      denom += wt * w_sum[w * kGroup + h];
    }
    const int head = kvh * kGroup + h;
    if (num_splits == 1) {
      p.out[t * p.out_stride + int64_t{head} * kHeadDim + d] =
          __float2bfloat16_rn(v / denom);
    } else {
      const int64_t row =
          (t * p.num_heads + head) * int64_t{max_splits} + split;
      scratch.out[row * kHeadDim + d] = v;
      if (d == 0) {
        scratch.max[row] = m;
        scratch.sum[row] = denom;
      }
    }
  }
  if (num_splits == 1) return;
  // Publish this split's partials, then count it in; the last split of
  // (t, kvh) to arrive merges them all and re-zeroes the counter.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned int* counter = p.split_counters + t * p.num_kv_heads + kvh;
    last = atomicAdd(counter, 1u) == static_cast<unsigned int>(num_splits - 1);
    if (last) *counter = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  MergeSplits<kHeadDim, kGroup>(p, max_splits, scratch, t, kvh, num_splits,
                                reinterpret_cast<float*>(smem));
}

}  // namespace

size_t DecodeAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  const SplitPlan plan = PlanSplits(p);
  if (plan.max_splits == 1) return 0;
  const int64_t rows = p.num_tokens * p.num_heads * plan.max_splits;
  return static_cast<size_t>(rows) * (p.head_dim + 2) * sizeof(float);
}

absl::Status LaunchDecodeAttention(const PagedAttentionParams& p,
                                   cudaStream_t stream, bool pdl) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.num_tokens > 0x7fffffff) {
    return absl::InvalidArgumentError("decode attention: too many tokens");
  }
  const SplitPlan plan = PlanSplits(p);
  if (plan.max_splits > 65535) {
    return absl::InvalidArgumentError("decode attention: context too long");
  }
  if (plan.max_splits > 1 &&
      (p.workspace == nullptr || p.split_counters == nullptr ||
       p.num_tokens * p.num_kv_heads > p.split_counter_capacity)) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: split contexts need a workspace and ",
                     p.num_tokens * p.num_kv_heads, " split counters"));
  }
  const SplitScratch scratch = CarveScratch(p, plan);
  return DispatchHeadDim(p.head_dim, "decode attention", [&](auto hd) {
    constexpr int kHd = decltype(hd)::value;
    return DispatchGroupSize(
        p.num_heads, p.num_kv_heads, "decode attention", [&](auto group) {
          constexpr int kGroup = decltype(group)::value;
          const dim3 grid(static_cast<unsigned>(p.num_tokens),
                          static_cast<unsigned>(plan.max_splits),
                          static_cast<unsigned>(p.num_kv_heads));
          constexpr size_t kSmem = kSmemBytes<kHd>;
          // The split merge's weights live in the ring's shared memory.
          if ((2 * int64_t{kGroup} * plan.max_splits + kGroup) * sizeof(float) >
              kSmem) {
            return absl::InvalidArgumentError(
                absl::StrCat("decode attention: ", plan.max_splits,
                             " splits exceed the merge's shared memory"));
          }
          auto* kernel = &DecodeAttentionKernel<kHd, kGroup>;
          if (kSmem > 48 * 1024) {
            // Above 48 KiB a kernel must opt in to dynamic shared memory.
            DUET_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
                kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                static_cast<int>(kSmem)));
          }
          DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(kernel, grid, dim3(kThreads),
                                                 kSmem, stream, pdl, p,
                                                 plan.max_splits, scratch));
          return absl::OkStatus();
        });
  });
}

}  // namespace duet::kernels::cuda
