// Internal to kernels/cuda: per-head QK RMSNorm (Qwen3) fused with rotary
// embedding, in place on the packed QKV activation.
#ifndef DUET_KERNELS_CUDA_ROPE_KERNELS_H_
#define DUET_KERNELS_CUDA_ROPE_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cuda {

// For every token t and every Q and K head (V heads untouched in qkv), in
// fp32:
//   x = norm ? x / rms(x) * norm_weight : x
//   rotate-half RoPE at positions[t]: angle_i = float(pos) * inv_freq[i]
//   (fp32 product, then cosf/sinf, as kernels/cpu and Hugging Face do),
// rounded to bf16 once at the end.
struct QkNormRopeParams {
  __nv_bfloat16* qkv = nullptr;  // [tokens, (nh + 2 nkv) * head_dim]
  int64_t num_tokens = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  const int32_t* positions = nullptr;     // [tokens], device
  const __nv_bfloat16* q_norm = nullptr;  // [head_dim] or null (Llama)
  const __nv_bfloat16* k_norm = nullptr;  // [head_dim] or null
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  // [head_dim / 2], device
  // Optional fused KV-cache write: when kv_cache is set, every token's
  // (normed, rotated) K heads and its V heads are also stored into its slot
  // of the paged cache [blocks][2][num_kv_heads][block_size][head_dim].
  __nv_bfloat16* kv_cache = nullptr;
  const int64_t* slot_mapping = nullptr;  // [tokens], device
  int block_size = 0;
};
// pdl: launch as a programmatic dependent (kernels/cuda/pdl.h).
absl::Status LaunchQkNormRope(const QkNormRopeParams& p, cudaStream_t stream,
                              bool pdl = false);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ROPE_KERNELS_H_
