// Internal to kernels/cuda: RMSNorm and the fused residual add + RMSNorm.
#ifndef DUET_KERNELS_CUDA_NORM_KERNELS_H_
#define DUET_KERNELS_CUDA_NORM_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"

namespace duet::kernels::cuda {

// Without residual: out = x / rms(x) * weight.
// With residual:    residual = bf16(residual + x); out = residual / rms *
//                   weight, the norm taken over the bf16-rounded sum, as
//                   Hugging Face does when the residual stream is bf16.
// fp32 math; one CTA per row. x may alias out.
struct RmsNormParams {
  const __nv_bfloat16* x = nullptr;       // [rows, dim]
  __nv_bfloat16* residual = nullptr;      // [rows, dim] or null
  const __nv_bfloat16* weight = nullptr;  // [dim]
  __nv_bfloat16* out = nullptr;           // [rows, dim]
  int64_t rows = 0;
  int64_t dim = 0;
  float eps = 1e-6f;
};
// pdl: launch as a programmatic dependent (kernels/cuda/pdl.h).
absl::Status LaunchRmsNorm(const RmsNormParams& p, cudaStream_t stream,
                           bool pdl = false);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_NORM_KERNELS_H_
