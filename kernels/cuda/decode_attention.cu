// Flash-decoding over the paged cache. Decode is memory-bound (one query
// row per KV row), so the design goal is to read every K/V byte exactly once
// with 16-byte coalesced loads and enough loads in flight:
// - a CTA owns (query token, KV head, split): all kGroup query heads of the
//   KV head are processed together, so GQA does not multiply the reads;
// - a key is read by kHeadDim / 8 lanes (16 bytes each), so a warp reads
//   kKeysPerWarp whole keys per load instruction;
// - the context is walked in chunks of kChunk keys: the chunk's block ids
//   are staged in shared memory first (so no key load waits on a dependent
//   block-table load), scores of the chunk go to shared memory, then an
//   exact softmax numerator for the chunk is merged into running (max, sum,
//   acc) state, online-softmax style;
// - when the batch alone does not fill the GPU, the context is split across
//   CTAs and a second kernel merges the splits (log-sum-exp weights).
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

namespace duet::kernels::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 256;  // keys per shared-memory score chunk
constexpr int kUnroll = 4;   // independent 16-byte loads per lane in flight
// Splits are whole multiples of this many keys. Smaller than kChunk so that
// a short context at batch 1 still spreads over enough CTAs (512 keys x 8
// KV heads in 256-key splits kept 24 of 132 SMs busy: 36 us per layer).
constexpr int kSplitGranule = 64;
// CTAs to aim for per SM before splitting stops: a CTA streams its keys
// with only kUnroll loads per lane in flight, so one or two per SM leave
// HBM bandwidth unused.
constexpr int kCtasPerSm = 4;

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

SplitScratch CarveScratch(const PagedAttentionParams& p, const SplitPlan& plan) {
  SplitScratch s;
  const int64_t rows = p.num_tokens * p.num_heads * plan.max_splits;
  s.out = static_cast<float*>(p.workspace);
  s.max = s.out + rows * p.head_dim;
  s.sum = s.max + rows;
  return s;
}

template <int kHeadDim, int kGroup>
__global__ void __launch_bounds__(kThreads)
    DecodeAttentionKernel(PagedAttentionParams p, int max_splits,
                          SplitScratch scratch) {
  constexpr int kLanesPerKey = kHeadDim / 8;
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kKeysPerIter = kWarps * kKeysPerWarp;

  __shared__ float scores[kGroup][kChunk];
  __shared__ float reduce[kWarps][kGroup];
  // A chunk of kChunk keys spans at most kChunk + 1 blocks (block size 1,
  // or an unaligned start).
  __shared__ int32_t chunk_blocks[kChunk + 1];
  __shared__ float final_max[kGroup];
  __shared__ float final_sum[kGroup];
  __shared__ float out_partial[kWarps][kGroup][kHeadDim];

  const int64_t t = blockIdx.x;
  const int split = blockIdx.y;
  const int kvh = blockIdx.z;
  const int seq = p.token_seq != nullptr ? p.token_seq[t] : static_cast<int>(t);
  const int ctx = p.positions[t] + 1;
  const int tokens_per_split = SplitLength(ctx, max_splits);
  const int begin = split * tokens_per_split;
  if (begin >= ctx) return;  // uniform over the CTA
  const int end = min(ctx, begin + tokens_per_split);
  const int num_splits = (ctx + tokens_per_split - 1) / tokens_per_split;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int piece = lane % kLanesPerKey;  // which 8 elements of the head
  const int sub = lane / kLanesPerKey;    // which key of the warp's group
  const int32_t* table =
      p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int64_t head_stride = int64_t{p.block_size} * kHeadDim;
  const int64_t kv_stride = p.num_kv_heads * head_stride;
  const __nv_bfloat16* cache_head = p.kv_cache + kvh * head_stride;

  // Queries of the group, pre-scaled into the log2 domain.
  float q[kGroup][8];
  const float qscale = p.scale * kLog2e;
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    const uint4 raw = *reinterpret_cast<const uint4*>(
        p.q + t * p.q_stride + int64_t{kvh * kGroup + h} * kHeadDim +
        piece * 8);
    Bf16x8ToFloat(raw, q[h]);
#pragma unroll
    for (int i = 0; i < 8; ++i) q[h][i] *= qscale;
  }
  // Running softmax state per head. Every thread holds the same values
  // (they are computed from shared memory), so no run-time register index
  // is ever needed.
  float run_max[kGroup];
  float run_sum[kGroup];
  float acc[kGroup][8];
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
    run_max[h] = -INFINITY;
    run_sum[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[h][i] = 0.0f;
  }

  const BlockDivider blocks(p.block_size);
  int first_block = 0;
  // Address of 16-byte piece `piece` of key `pos` of the current chunk (K;
  // V is kv_stride on). The block id comes from shared memory, so a key
  // load does not wait for a block-table load first.
  auto key_ptr = [&](int pos) {
    const int64_t block = chunk_blocks[blocks.Block(pos) - first_block];
    return cache_head + block * 2 * kv_stride +
           int64_t{blocks.Offset(pos)} * kHeadDim + piece * 8;
  };

  for (int chunk = begin; chunk < end; chunk += kChunk) {
    const int n = min(kChunk, end - chunk);
    // The chunk's block-table entries, once, into shared memory (the
    // barrier at the end of the previous chunk keeps the old ones alive
    // until everyone is done with them).
    first_block = blocks.Block(chunk);
    const int chunk_num_blocks = blocks.Block(chunk + n - 1) - first_block + 1;
    for (int i = threadIdx.x; i < chunk_num_blocks; i += kThreads) {
      chunk_blocks[i] = table[first_block + i];
    }
    __syncthreads();
    // Pass 1: scores of this chunk into shared memory.
    float local_max[kGroup];
#pragma unroll
    for (int h = 0; h < kGroup; ++h) local_max[h] = -INFINITY;
    for (int j0 = 0; j0 < n; j0 += kKeysPerIter * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        raw[u] = j < n ? *reinterpret_cast<const uint4*>(key_ptr(chunk + j))
                       : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        float k[8];
        Bf16x8ToFloat(raw[u], k);
#pragma unroll
        for (int h = 0; h < kGroup; ++h) {
          float dot = 0.0f;
#pragma unroll
          for (int i = 0; i < 8; ++i) dot += q[h][i] * k[i];
#pragma unroll
          for (int off = kLanesPerKey / 2; off > 0; off >>= 1) {
            dot += __shfl_xor_sync(0xffffffffu, dot, off);
          }
          if (j < n) {
            if (piece == 0) scores[h][j] = dot;
            local_max[h] = fmaxf(local_max[h], dot);
          }
        }
      }
    }
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float m = local_max[h];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      }
      if (lane == 0) reduce[warp][h] = m;
    }
    __syncthreads();
    float alpha[kGroup];
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float m = run_max[h];
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, reduce[w][h]);
      // m is finite (the chunk has at least one real score), so alpha is 0
      // on the first chunk and the old state vanishes as it should.
      alpha[h] = exp2f(run_max[h] - m);
      run_max[h] = m;
    }
    __syncthreads();  // `reduce` is rewritten below
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float sum = 0.0f;
      for (int j = threadIdx.x; j < n; j += kThreads) {
        const float e = exp2f(scores[h][j] - run_max[h]);
        scores[h][j] = e;
        sum += e;
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
      }
      if (lane == 0) reduce[warp][h] = sum;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[h][i] *= alpha[h];
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += reduce[w][h];
      run_sum[h] = run_sum[h] * alpha[h] + sum;
    }
    // Pass 2: acc += p * V over the chunk.
    for (int j0 = 0; j0 < n; j0 += kKeysPerIter * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        raw[u] = j < n ? *reinterpret_cast<const uint4*>(key_ptr(chunk + j) +
                                                          kv_stride)
                       : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        if (j < n) {
          float v[8];
          Bf16x8ToFloat(raw[u], v);
#pragma unroll
          for (int h = 0; h < kGroup; ++h) {
            const float w = scores[h][j];
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[h][i] += w * v[i];
          }
        }
      }
    }
    __syncthreads();  // scores and `reduce` are rewritten by the next chunk
  }

  // Sum acc over the lanes holding the same piece of different keys, then
  // over warps through shared memory.
#pragma unroll
  for (int h = 0; h < kGroup; ++h) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
      for (int off = kLanesPerKey; off < 32; off <<= 1) {
        acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], off);
      }
      if (sub == 0) out_partial[warp][h][piece * 8 + i] = acc[h][i];
    }
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int h = 0; h < kGroup; ++h) {
      final_max[h] = run_max[h];
      final_sum[h] = run_sum[h];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kGroup * kHeadDim; idx += kThreads) {
    const int h = idx / kHeadDim;
    const int d = idx % kHeadDim;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += out_partial[w][h][d];
    const int head = kvh * kGroup + h;
    if (num_splits == 1) {
      p.out[t * p.out_stride + int64_t{head} * kHeadDim + d] =
          __float2bfloat16_rn(v / final_sum[h]);
    } else {
      const int64_t row =
          (t * p.num_heads + head) * int64_t{max_splits} + split;
      scratch.out[row * kHeadDim + d] = v;
      if (d == 0) {
        scratch.max[row] = final_max[h];
        scratch.sum[row] = final_sum[h];
      }
    }
  }
}

// Merges the splits of each (token, head): weights 2^(max_s - max) rescale
// every split's unnormalized output and sum to the global softmax.
template <int kHeadDim>
__global__ void __launch_bounds__(kThreads)
    DecodeMergeKernel(PagedAttentionParams p, int max_splits,
                      SplitScratch scratch) {
  const int64_t t = blockIdx.x;
  const int head = blockIdx.y;
  const int ctx = p.positions[t] + 1;
  const int tokens_per_split = SplitLength(ctx, max_splits);
  const int num_splits = (ctx + tokens_per_split - 1) / tokens_per_split;
  if (num_splits == 1) return;  // the main kernel wrote the output
  const int64_t row0 = (t * p.num_heads + head) * int64_t{max_splits};
  float m = -INFINITY;
  for (int s = 0; s < num_splits; ++s) m = fmaxf(m, scratch.max[row0 + s]);
  float denom = 0.0f;
  for (int s = 0; s < num_splits; ++s) {
    denom += exp2f(scratch.max[row0 + s] - m) * scratch.sum[row0 + s];
  }
  for (int d = threadIdx.x; d < kHeadDim; d += blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      v += exp2f(scratch.max[row0 + s] - m) *
           scratch.out[(row0 + s) * kHeadDim + d];
    }
    p.out[t * p.out_stride + int64_t{head} * kHeadDim + d] =
        __float2bfloat16_rn(v / denom);
  }
}

}  // namespace

size_t DecodeAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  const SplitPlan plan = PlanSplits(p);
  if (plan.max_splits == 1) return 0;
  const int64_t rows = p.num_tokens * p.num_heads * plan.max_splits;
  return static_cast<size_t>(rows) * (p.head_dim + 2) * sizeof(float);
}

absl::Status LaunchDecodeAttention(const PagedAttentionParams& p,
                                   cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.num_tokens > 0x7fffffff) {
    return absl::InvalidArgumentError("decode attention: too many tokens");
  }
  const SplitPlan plan = PlanSplits(p);
  if (plan.max_splits > 65535) {
    return absl::InvalidArgumentError("decode attention: context too long");
  }
  if (plan.max_splits > 1 && p.workspace == nullptr) {
    return absl::InvalidArgumentError(
        "decode attention: split contexts need a workspace");
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
          DecodeAttentionKernel<kHd, kGroup><<<grid, kThreads, 0, stream>>>(
              p, plan.max_splits, scratch);
          DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
          if (plan.max_splits > 1) {
            const dim3 merge_grid(static_cast<unsigned>(p.num_tokens),
                                  static_cast<unsigned>(p.num_heads));
            DecodeMergeKernel<kHd><<<merge_grid, kThreads, 0, stream>>>(
                p, plan.max_splits, scratch);
            DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
          }
          return absl::OkStatus();
        });
  });
}

}  // namespace duet::kernels::cuda
