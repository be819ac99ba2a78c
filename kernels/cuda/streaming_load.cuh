// Internal to kernels/cuda: the weight-streaming load of the decode GEMMs
// (small_gemm.cu, skinny_gemm.cu).
#ifndef DUET_KERNELS_CUDA_STREAMING_LOAD_CUH_
#define DUET_KERNELS_CUDA_STREAMING_LOAD_CUH_

#include <cuda_bf16.h>

#include <cstdint>

namespace duet::kernels::cuda {

// An L2 cache policy that makes the lines a load brings in the first to be
// evicted: weights are read once, the activations and KV cache are reused.
__device__ __forceinline__ uint64_t EvictFirstPolicy() {
  uint64_t policy = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;"
               : "=l"(policy));
#endif
  return policy;
}

// 16 bytes of weights, read exactly once: they must not evict x from L1 or
// anything reused from L2.
__device__ __forceinline__ uint4 LoadStreaming(const __nv_bfloat16* p,
                                               uint64_t policy) {
  uint4 v;
  asm volatile(
      "ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, "
      "[%4], %5;"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(policy));
  return v;
}

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_STREAMING_LOAD_CUH_
