// Internal to kernels/cuda: scatter of each new token's K and V heads into
// the paged cache [num_blocks][2][num_kv_heads][block_size][head_dim].
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

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_KV_CACHE_KERNELS_H_
