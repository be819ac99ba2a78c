// Internal to kernels/cuda: memory-bound element-wise kernels (dtype
// conversion, row gathers for the embedding and the logits rows, SiLU * mul).
// TensorRT-LLM style: a plain Params struct and a host launcher per kernel.
#ifndef DUET_KERNELS_CUDA_ELEMENTWISE_KERNELS_H_
#define DUET_KERNELS_CUDA_ELEMENTWISE_KERNELS_H_

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace duet::kernels::cuda {

// dst[i] = convert(src[i]) between f32, bf16 and f16 (round to nearest
// even), both on the device.
struct ConvertParams {
  const void* src = nullptr;
  DType src_dtype = DType::kF32;
  void* dst = nullptr;
  DType dst_dtype = DType::kBF16;
  int64_t count = 0;
};
absl::Status LaunchConvert(const ConvertParams& p, cudaStream_t stream);

// dst[r, :] = src[rows[r], :] for rows of `row_bytes` bytes (the embedding
// lookup, and the gather of the rows whose logits are wanted). Row indices
// are trusted: the backend validated them on the host.
struct GatherRowsParams {
  const void* src = nullptr;
  const int32_t* rows = nullptr;  // [num_rows], device
  int64_t num_rows = 0;
  int64_t row_bytes = 0;
  void* dst = nullptr;
};
// pdl: launch as a programmatic dependent (kernels/cuda/pdl.h).
absl::Status LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream,
                              bool pdl = false);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i], fp32 math.
struct SiluMulParams {
  const __nv_bfloat16* gate_up = nullptr;  // [tokens, 2 * inter]
  __nv_bfloat16* out = nullptr;            // [tokens, inter]
  int64_t tokens = 0;
  int64_t inter = 0;
};
absl::Status LaunchSiluMul(const SiluMulParams& p, cudaStream_t stream,
                           bool pdl = false);

// *result = XOR of words[0..count) (result zeroed first, on `stream`). Its
// use is the reading: it pulls `count` words through L2 without dirtying a
// line, which is how GEMM autotuning (gemm.cc) empties L2 of the weights
// between timed runs; a memset would leave L2 full of dirty lines whose
// write-back the next timed run would pay for.
absl::Status LaunchXorWords(const uint32_t* words, int64_t count,
                            uint32_t* result, cudaStream_t stream);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ELEMENTWISE_KERNELS_H_
