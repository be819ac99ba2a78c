#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "kernels/cuda/activation.cuh"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/elementwise_kernels.h"
#include "kernels/cuda/pdl.h"

namespace duet::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops with a capped grid: enough blocks to fill an H100
// several times over without launching millions of tiny blocks.
constexpr int64_t kMaxBlocks = 4096;

int GridFor(int64_t work) {
  return static_cast<int>(
      std::clamp<int64_t>(CeilDiv(work, kThreads), 1, kMaxBlocks));
}

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat(float v) {
  return v;
}
template <>
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float ToFloat(__half v) {
  return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromFloat(float v) {
  return __float2half_rn(v);
}

template <typename Src, typename Dst>
__global__ void ConvertKernel(const Src* __restrict__ src,
                              Dst* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = FromFloat<Dst>(ToFloat(src[i]));
  }
}

template <typename Src>
absl::Status ConvertFrom(const ConvertParams& p, cudaStream_t stream) {
  const auto* src = static_cast<const Src*>(p.src);
  const int grid = GridFor(p.count);
  switch (p.dst_dtype) {
    case DType::kF32:
      ConvertKernel<<<grid, kThreads, 0, stream>>>(
          src, static_cast<float*>(p.dst), p.count);
      break;
    case DType::kBF16:
      ConvertKernel<<<grid, kThreads, 0, stream>>>(
          src, static_cast<__nv_bfloat16*>(p.dst), p.count);
      break;
    case DType::kF16:
      ConvertKernel<<<grid, kThreads, 0, stream>>>(
          src, static_cast<__half*>(p.dst), p.count);
      break;
  }
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

// One thread per 16-byte (or 2-byte, for odd row sizes) piece of a row.
template <typename V>
__global__ void GatherRowsKernel(const char* __restrict__ src,
                                 const int32_t* __restrict__ rows,
                                 int64_t num_rows, int64_t row_vecs,
                                 char* __restrict__ dst) {
  PdlWait();  // pdl.h: before any read of an earlier kernel's output
  PdlLaunchDependents();
  const int64_t total = num_rows * row_vecs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / row_vecs;
    const int64_t c = i % row_vecs;
    const V* s = reinterpret_cast<const V*>(src) + rows[r] * row_vecs + c;
    reinterpret_cast<V*>(dst)[i] = *s;
  }
}

// 8 outputs per thread with 16-byte loads when inter % 8 == 0.
__global__ void SiluMulVec8Kernel(const __nv_bfloat16* __restrict__ gate_up,
                                  __nv_bfloat16* __restrict__ out,
                                  int64_t tokens, int64_t inter) {
  PdlWait();  // pdl.h: before any read of an earlier kernel's output
  PdlLaunchDependents();
  const int64_t vecs_per_row = inter / 8;
  const int64_t total = tokens * vecs_per_row;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / vecs_per_row;
    const int64_t c = (i % vecs_per_row) * 8;
    const __nv_bfloat16* g = gate_up + t * 2 * inter + c;
    const uint4 gv = *reinterpret_cast<const uint4*>(g);
    const uint4 uv = *reinterpret_cast<const uint4*>(g + inter);
    const auto* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
    const auto* u2 = reinterpret_cast<const __nv_bfloat162*>(&uv);
    uint4 ov;
    auto* o2 = reinterpret_cast<__nv_bfloat162*>(&ov);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 gf = __bfloat1622float2(g2[j]);
      const float2 uf = __bfloat1622float2(u2[j]);
      o2[j] = __floats2bfloat162_rn(Silu(gf.x) * uf.x, Silu(gf.y) * uf.y);
    }
    *reinterpret_cast<uint4*>(out + t * inter + c) = ov;
  }
}

__global__ void SiluMulScalarKernel(const __nv_bfloat16* __restrict__ gate_up,
                                    __nv_bfloat16* __restrict__ out,
                                    int64_t tokens, int64_t inter) {
  PdlWait();  // pdl.h: before any read of an earlier kernel's output
  PdlLaunchDependents();
  const int64_t total = tokens * inter;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / inter;
    const int64_t c = i % inter;
    const float g = __bfloat162float(gate_up[t * 2 * inter + c]);
    const float u = __bfloat162float(gate_up[t * 2 * inter + inter + c]);
    out[i] = __float2bfloat16_rn(Silu(g) * u);
  }
}

__global__ void XorWordsKernel(const uint4* __restrict__ vecs, int64_t num_vecs,
                               const uint32_t* __restrict__ tail,
                               int64_t tail_count, uint32_t* result) {
  uint32_t acc = 0;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  for (int64_t i = first; i < num_vecs; i += stride) {
    const uint4 v = vecs[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  for (int64_t i = first; i < tail_count; i += stride) acc ^= tail[i];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    acc ^= __shfl_xor_sync(0xffffffffu, acc, offset);
  }
  if ((threadIdx.x & 31) == 0 && acc != 0) atomicXor(result, acc);
}

}  // namespace

absl::Status LaunchConvert(const ConvertParams& p, cudaStream_t stream) {
  if (p.count == 0) return absl::OkStatus();
  switch (p.src_dtype) {
    case DType::kF32:
      return ConvertFrom<float>(p, stream);
    case DType::kBF16:
      return ConvertFrom<__nv_bfloat16>(p, stream);
    case DType::kF16:
      return ConvertFrom<__half>(p, stream);
  }
  return absl::InvalidArgumentError("convert: unknown source dtype");
}

absl::Status LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream,
                              bool pdl) {
  if (p.num_rows == 0 || p.row_bytes == 0) return absl::OkStatus();
  const bool vec16 = p.row_bytes % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.src) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(p.dst) % 16 == 0;
  const auto* src = static_cast<const char*>(p.src);
  auto* dst = static_cast<char*>(p.dst);
  if (vec16) {
    const int64_t vecs = p.row_bytes / 16;
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(
        &GatherRowsKernel<uint4>, GridFor(p.num_rows * vecs), dim3(kThreads), 0,
        stream, pdl, src, p.rows, p.num_rows, vecs, dst));
  } else if (p.row_bytes % 2 == 0) {
    const int64_t vecs = p.row_bytes / 2;
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(
        &GatherRowsKernel<uint16_t>, GridFor(p.num_rows * vecs), dim3(kThreads),
        0, stream, pdl, src, p.rows, p.num_rows, vecs, dst));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("gather: odd row size ", p.row_bytes, " bytes"));
  }
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchSiluMul(const SiluMulParams& p, cudaStream_t stream,
                           bool pdl) {
  if (p.tokens == 0 || p.inter == 0) return absl::OkStatus();
  if (p.inter % 8 == 0) {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(
        &SiluMulVec8Kernel, GridFor(p.tokens * p.inter / 8), dim3(kThreads), 0,
        stream, pdl, p.gate_up, p.out, p.tokens, p.inter));
  } else {
    DUET_CUDA_RETURN_IF_ERROR(LaunchKernel(
        &SiluMulScalarKernel, GridFor(p.tokens * p.inter), dim3(kThreads), 0,
        stream, pdl, p.gate_up, p.out, p.tokens, p.inter));
  }
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

absl::Status LaunchXorWords(const uint32_t* words, int64_t count,
                            uint32_t* result, cudaStream_t stream) {
  DUET_CUDA_RETURN_IF_ERROR(
      cudaMemsetAsync(result, 0, sizeof(uint32_t), stream));
  if (count == 0) return absl::OkStatus();
  // 16-byte loads over the aligned middle; the words before it (at most 3)
  // and after it go through the scalar tail loop, as two short launches.
  const auto addr = reinterpret_cast<uintptr_t>(words);
  const int64_t head =
      std::min<int64_t>(count, ((16 - addr % 16) % 16) / sizeof(uint32_t));
  const int64_t num_vecs = (count - head) / 4;
  const int64_t tail_start = head + num_vecs * 4;
  if (head > 0) {
    XorWordsKernel<<<1, 32, 0, stream>>>(nullptr, 0, words, head, result);
    DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  }
  const int64_t rest = count - tail_start;
  XorWordsKernel<<<GridFor(std::max<int64_t>(num_vecs, rest)), kThreads, 0,
                   stream>>>(reinterpret_cast<const uint4*>(words + head),
                             num_vecs, words + tail_start, rest, result);
  DUET_CUDA_RETURN_IF_LAUNCH_ERROR();
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
