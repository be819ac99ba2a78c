// Internal to kernels/cuda: programmatic dependent launch (PDL, sm_90+).
//
// Why: a decode step at batch 1 is ~400 kernels, many of them one or a few
// CTAs (norms, RoPE, the attention merge) that leave the GPU nearly idle,
// and each boundary costs launch latency plus a drained tail. With PDL the
// next kernel's CTAs are launched while the current one runs; they stop at
// PdlWait() until it has finished and its writes are visible, and may do
// independent work before that (the small GEMM starts streaming its
// weights, which no kernel writes).
//
// Contract for a kernel launched with LaunchKernel(..., pdl = true):
// - every thread calls PdlWait() before it reads anything its predecessor
//   writes or writes anything an earlier kernel reads, and before it exits
//   (so the grid cannot complete before its predecessor: the chain of waits
//   is what orders kernel N after every kernel before N - 1);
// - it calls PdlLaunchDependents() after PdlWait(), which lets the next
//   kernel launch once every CTA of this one is running: at most one kernel
//   ahead is resident and waiting.
// Consequence: when a kernel starts, its predecessor has passed PdlWait, so
// every kernel before the predecessor (and every copy queued before the
// step) has completed. Before PdlWait a kernel may therefore read what
// those wrote, just not what its immediate predecessor writes: the decode
// attention starts its K/V copies there, leaving out only the newest key
// (decode_attention.cu).
// Kernels launched without the flag (cuBLAS, copies) are ordered as usual,
// and on a GPU older than sm_90 both calls compile to nothing.
#ifndef DUET_KERNELS_CUDA_PDL_H_
#define DUET_KERNELS_CUDA_PDL_H_

#include <cuda_runtime.h>

#include <utility>

namespace duet::kernels::cuda {

__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" :::);
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), with the programmatic
// stream serialization attribute when `pdl` is set (see the contract above).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchKernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                         size_t smem, cudaStream_t stream, bool pdl,
                         Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_PDL_H_
