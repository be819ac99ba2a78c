#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>

#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/kv_cache_kernels.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per 16-byte piece (8 elements) of one K or V head of one token.
// Consecutive threads take consecutive pieces of a head, so both the read
// from qkv and the write into the head-major block are coalesced.
__global__ void WriteKvCacheKernel(WriteKvCacheParams p) {
  const int vecs_per_head = p.head_dim / 8;
  const int64_t vecs_per_token = int64_t{2} * p.num_kv_heads * vecs_per_head;
  const int64_t total = p.num_tokens * vecs_per_token;
  const int64_t width = int64_t{p.num_heads + 2 * p.num_kv_heads} * p.head_dim;
  const int64_t head_stride = int64_t{p.block_size} * p.head_dim;
  const int64_t kv_stride = p.num_kv_heads * head_stride;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / vecs_per_token;
    const int64_t r = i % vecs_per_token;
    // r enumerates (kv in {K, V}, kv head, piece) in qkv order: K heads then
    // V heads, which is also the order of the cache's [2][num_kv_heads].
    const int64_t kvh = r / vecs_per_head;  // 0 .. 2 * nkv - 1
    const int piece = static_cast<int>(r % vecs_per_head);
    const int64_t slot = p.slot_mapping[t];
    const int64_t block = slot / p.block_size;
    const int64_t offset = slot % p.block_size;
    const uint4* src = reinterpret_cast<const uint4*>(
        p.qkv + t * width + (p.num_heads + kvh) * p.head_dim) + piece;
    // kvh = kv * nkv + h, and the cache block is [2][nkv][bs][hd], so
    // (kv, h) together index kvh * head_stride.
    uint4* dst = reinterpret_cast<uint4*>(
        p.kv_cache + block * 2 * kv_stride + kvh * head_stride +
        offset * p.head_dim) + piece;
    *dst = *src;
  }
}

// One CTA per packed row (layer, i) at a time, its threads striding over
// the block's 16-byte pieces: both sides are contiguous runs of
// block_bytes, so every load and store is a coalesced 16-byte access.
template <bool kGather>
__global__ void CopyKvBlocksKernel(KvBlocksParams p) {
  const int64_t pieces = p.block_bytes / 16;
  const int64_t rows = int64_t{p.num_layers} * p.num_ids;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t layer = row / p.num_ids;
    const int64_t i = row % p.num_ids;
    uint4* block = reinterpret_cast<uint4*>(p.layer_base[layer]) +
                   p.block_ids[i] * pieces;
    uint4* packed = static_cast<uint4*>(p.packed) + row * pieces;
    for (int64_t v = threadIdx.x; v < pieces; v += blockDim.x) {
      if constexpr (kGather) {
        packed[v] = block[v];
      } else {
        block[v] = packed[v];
      }
    }
  }
}

template <bool kGather>
absl::Status LaunchCopyKvBlocks(const KvBlocksParams& p, cudaStream_t stream) {
  if (p.num_layers <= 0 || p.num_ids <= 0) return absl::OkStatus();
  if (p.block_bytes <= 0 || p.block_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        "copy_kv_blocks: block_bytes must be a positive multiple of 16");
  }
  const int64_t rows = int64_t{p.num_layers} * p.num_ids;
  // Enough CTAs to fill any GPU several times over; more only adds
  // scheduling, since each CTA loops over its rows.
  const int grid = static_cast<int>(std::min<int64_t>(rows, 1 << 16));
  CopyKvBlocksKernel<kGather><<<grid, kThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

// Like CopyKvBlocksKernel, with a block of the destination pool in place of
// the packed row.
__global__ void CopyKvBlocksBetweenPoolsKernel(PoolCopyParams p) {
  const int64_t pieces = p.block_bytes / 16;
  const int64_t rows = int64_t{p.num_layers} * p.num_ids;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t layer = row / p.num_ids;
    const int64_t i = row % p.num_ids;
    const uint4* src = reinterpret_cast<const uint4*>(p.src_base[layer]) +
                       p.src_ids[i] * pieces;
    uint4* dst = reinterpret_cast<uint4*>(p.dst_base[layer]) +
                 p.dst_ids[i] * pieces;
    for (int64_t v = threadIdx.x; v < pieces; v += blockDim.x) dst[v] = src[v];
  }
}

}  // namespace

absl::Status LaunchCopyKvBlocksBetweenPools(const PoolCopyParams& p,
                                            cudaStream_t stream) {
  if (p.num_layers <= 0 || p.num_ids <= 0) return absl::OkStatus();
  if (p.block_bytes <= 0 || p.block_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        "copy_kv_blocks_between_pools: block_bytes must be a positive "
        "multiple of 16");
  }
  const int64_t rows = int64_t{p.num_layers} * p.num_ids;
  const int grid = static_cast<int>(std::min<int64_t>(rows, 1 << 16));
  CopyKvBlocksBetweenPoolsKernel<<<grid, kThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchGatherKvBlocks(const KvBlocksParams& p,
                                  cudaStream_t stream) {
  return LaunchCopyKvBlocks<true>(p, stream);
}

absl::Status LaunchScatterKvBlocks(const KvBlocksParams& p,
                                   cudaStream_t stream) {
  return LaunchCopyKvBlocks<false>(p, stream);
}

absl::Status LaunchWriteKvCache(const WriteKvCacheParams& p,
                                cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if (p.head_dim % 8 != 0) {
    return absl::InvalidArgumentError(
        "write_kv_cache: head_dim must be a multiple of 8");
  }
  const int64_t total =
      p.num_tokens * 2 * p.num_kv_heads * (p.head_dim / 8);
  const int grid = static_cast<int>(
      std::clamp<int64_t>(CeilDiv(total, kThreads), 1, 8192));
  WriteKvCacheKernel<<<grid, kThreads, 0, stream>>>(p);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
