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

}  // namespace

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
