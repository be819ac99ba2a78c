// Internal to kernels/cuda: scatter of each new token's K and V heads into
// the paged cache [num_blocks][2][num_kv_heads][block_size][head_dim], and
// whole-block copies between the paged cache and a packed buffer (KV
// transfer staging).
#ifndef DUET_KERNELS_CUDA_KV_CACHE_KERNELS_H_
#define DUET_KERNELS_CUDA_KV_CACHE_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cuda {

struct WriteKvCacheParams {
  const __nv_bfloat16* qkv = nullptr;  // [tokens, (nh + 2 nkv) * head_dim]
  int64_t num_tokens = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  const int64_t* slot_mapping = nullptr;  // [tokens], device, validated
  __nv_bfloat16* kv_cache = nullptr;
};
absl::Status LaunchWriteKvCache(const WriteKvCacheParams& p,
                                cudaStream_t stream);

// Whole KV blocks between the per-layer pools and one packed device buffer
// [num_layers][num_ids][block_bytes]: gather reads block block_ids[i] of
// every layer into packed row (layer, i), scatter writes it back. One launch
// moves a whole transfer batch, so the host copy that follows (or precedes)
// is one large copy instead of one per block (DESIGN.md §4).
struct KvBlocksParams {
  const uint64_t* layer_base = nullptr;  // [num_layers], device
  const int32_t* block_ids = nullptr;    // [num_ids], device, validated
  int num_layers = 0;
  int num_ids = 0;
  int64_t block_bytes = 0;  // multiple of 16; bases 16-byte aligned
  void* packed = nullptr;   // [num_layers][num_ids][block_bytes], device
};
absl::Status LaunchGatherKvBlocks(const KvBlocksParams& p, cudaStream_t stream);
absl::Status LaunchScatterKvBlocks(const KvBlocksParams& p,
                                   cudaStream_t stream);

// Whole KV blocks from one paged pool into another (the destination may be
// another process's pool mapped through CUDA IPC): block src_ids[i] of
// every layer of the source into block dst_ids[i] of the same layer of the
// destination, in one launch, at device-copy speed; one copy call per
// block would be ~100x slower (DESIGN.md §4).
struct PoolCopyParams {
  const uint64_t* src_base = nullptr;  // [num_layers], device
  const uint64_t* dst_base = nullptr;  // [num_layers], device
  const int32_t* src_ids = nullptr;    // [num_ids], device, validated
  const int32_t* dst_ids = nullptr;    // [num_ids], device, validated
  int num_layers = 0;
  int num_ids = 0;
  int64_t block_bytes = 0;  // multiple of 16; bases 16-byte aligned
};
absl::Status LaunchCopyKvBlocksBetweenPools(const PoolCopyParams& p,
                                            cudaStream_t stream);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_KV_CACHE_KERNELS_H_
