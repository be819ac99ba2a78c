#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/dispatch.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/rope_kernels.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// A head is handled by kLanes threads of one warp (all 32 for head_dim >=
// 64); thread l owns the rotate-half pairs (i, i + hd/2) with i = l + k *
// kLanes, so the RMS reduction is a few shuffles and each pair is rotated by
// the thread that holds both halves.
template <int kHeadDim>
__global__ void QkNormRopeKernel(QkNormRopeParams p) {
  constexpr int kHalf = kHeadDim / 2;
  constexpr int kLanes = kHalf < 32 ? kHalf : 32;
  constexpr int kPairs = kHalf / kLanes;
  constexpr int kHeadsPerBlock = kThreads / kLanes;
  // With the fused cache write the V heads are visited too (copied only).
  const bool write_cache = p.kv_cache != nullptr;
  const int heads_per_token =
      p.num_heads + (write_cache ? 2 : 1) * p.num_kv_heads;
  const int64_t head =
      int64_t{blockIdx.x} * kHeadsPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  // No early return: the shuffles below need every lane of the warp.
  const bool valid = head < p.num_tokens * heads_per_token;
  const int64_t t = valid ? head / heads_per_token : 0;
  const int h = valid ? static_cast<int>(head % heads_per_token) : 0;
  const bool is_v = h >= p.num_heads + p.num_kv_heads;
  const int64_t width = int64_t{p.num_heads + 2 * p.num_kv_heads} * kHeadDim;
  __nv_bfloat16* x = p.qkv + t * width + int64_t{h} * kHeadDim;
  // Both norms or neither (checked by the launcher).
  const __nv_bfloat16* norm = is_v              ? nullptr
                              : h < p.num_heads ? p.q_norm
                                                : p.k_norm;
  // No kernel writes the norm weights or frequencies: fetch them while the
  // previous kernel finishes (pdl.h), a memory latency off this one.
  float na[kPairs], nb[kPairs], freq[kPairs];
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int i = lane + k * kLanes;
    const bool has_norm = valid && norm != nullptr;
    na[k] = has_norm ? __bfloat162float(norm[i]) : 1.0f;
    nb[k] = has_norm ? __bfloat162float(norm[i + kHalf]) : 1.0f;
    freq[k] = valid && !is_v ? p.inv_freq[i] : 0.0f;
  }
  PdlWait();  // pdl.h: before any read of an earlier kernel's output
  PdlLaunchDependents();

  float a[kPairs];
  float b[kPairs];
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int i = lane + k * kLanes;
    a[k] = valid ? __bfloat162float(x[i]) : 0.0f;
    b[k] = valid ? __bfloat162float(x[i + kHalf]) : 0.0f;
  }
  // The sum of squares is reduced on every lane, whatever its head: with
  // head_dim 16 a warp holds Q, K and V heads at once, and a shuffle must
  // not sit in a branch that differs between them.
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kPairs; ++k) ss += a[k] * a[k] + b[k] * b[k];
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) {
    ss += __shfl_xor_sync(0xffffffffu, ss, off);
  }
  if (!valid) return;
  if (!is_v) {
    if (norm != nullptr) {
      const float inv_rms = 1.0f / sqrtf(ss / kHeadDim + p.eps);
#pragma unroll
      for (int k = 0; k < kPairs; ++k) {
        a[k] = na[k] * (a[k] * inv_rms);
        b[k] = nb[k] * (b[k] * inv_rms);
      }
    }
    const float pos = static_cast<float>(p.positions[t]);
#pragma unroll
    for (int k = 0; k < kPairs; ++k) {
      const int i = lane + k * kLanes;
      // Accurate cosf/sinf (not __cosf): angles reach ~4e4 rad at long
      // positions, where the fast intrinsics lose all precision.
      float s, c;
      sincosf(pos * freq[k], &s, &c);
      const float ra = a[k] * c - b[k] * s;
      const float rb = b[k] * c + a[k] * s;
      a[k] = ra;
      b[k] = rb;
      x[i] = __float2bfloat16_rn(a[k]);
      x[i + kHalf] = __float2bfloat16_rn(b[k]);
    }
  }
  if (!write_cache || h < p.num_heads) return;
  // K head (h - num_heads) or V head (h - num_heads - num_kv_heads): the
  // cache block is [2][nkv][bs][hd], so h - num_heads indexes both.
  const int64_t slot = p.slot_mapping[t];
  const int64_t head_stride = int64_t{p.block_size} * kHeadDim;
  __nv_bfloat16* dst =
      p.kv_cache + slot / p.block_size * 2 * p.num_kv_heads * head_stride +
      int64_t{h - p.num_heads} * head_stride + slot % p.block_size * kHeadDim;
#pragma unroll
  for (int k = 0; k < kPairs; ++k) {
    const int i = lane + k * kLanes;
    // V values are the bf16 inputs, so the round trip is exact.
    dst[i] = __float2bfloat16_rn(a[k]);
    dst[i + kHalf] = __float2bfloat16_rn(b[k]);
  }
}

}  // namespace

absl::Status LaunchQkNormRope(const QkNormRopeParams& p, cudaStream_t stream,
                              bool pdl) {
  if (p.num_tokens == 0) return absl::OkStatus();
  if ((p.q_norm == nullptr) != (p.k_norm == nullptr)) {
    return absl::InvalidArgumentError(
        "qk_norm_rope: q_norm and k_norm: both or neither");
  }
  if (p.kv_cache != nullptr &&
      (p.slot_mapping == nullptr || p.block_size <= 0)) {
    return absl::InvalidArgumentError(
        "qk_norm_rope: the fused cache write needs slot_mapping and "
        "block_size");
  }
  return DispatchHeadDim(p.head_dim, "qk_norm_rope", [&](auto hd) {
    constexpr int kHd = decltype(hd)::value;
    constexpr int kLanes = kHd / 2 < 32 ? kHd / 2 : 32;
    const int64_t heads =
        p.num_tokens *
        (p.num_heads + (p.kv_cache != nullptr ? 2 : 1) * p.num_kv_heads);
    const int64_t blocks = CeilDiv(heads, kThreads / kLanes);
    if (blocks > 0x7fffffff) {
      return absl::InvalidArgumentError("qk_norm_rope: too many heads");
    }
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(&QkNormRopeKernel<kHd>,
                                           dim3(static_cast<unsigned>(blocks)),
                                           dim3(kThreads), 0, stream, pdl, p));
    return absl::OkStatus();
  });
}

}  // namespace duet::kernels::cuda
