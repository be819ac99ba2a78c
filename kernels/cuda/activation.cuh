// Internal to kernels/cuda: activations shared by kernels that must agree
// bit for bit (the SiLU * mul kernel and the small GEMM's fused SiLU, which
// the tests compare for equality).
#ifndef DUET_KERNELS_CUDA_ACTIVATION_CUH_
#define DUET_KERNELS_CUDA_ACTIVATION_CUH_

namespace duet::kernels::cuda {

__device__ __forceinline__ float Silu(float g) {
  return g / (1.0f + expf(-g));
}

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ACTIVATION_CUH_
