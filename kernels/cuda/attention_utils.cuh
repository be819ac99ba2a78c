// Internal to kernels/cuda: device helpers shared by the attention kernels
// (bf16 packing, cp.async, ldmatrix, the bf16 tensor-core MMA).
#ifndef DUET_KERNELS_CUDA_ATTENTION_UTILS_CUH_
#define DUET_KERNELS_CUDA_ATTENTION_UTILS_CUH_

#include <cuda_bf16.h>

#include <cstdint>

namespace duet::kernels::cuda {

// log2(e): softmax runs in base 2 (exp2f is one MUFU op) with the scores
// pre-multiplied by scale * log2(e).
inline constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void Bf16x8ToFloat(const uint4& raw, float* out) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// Splits a position into (block, offset) for the paged cache. Block sizes
// are powers of two in practice, where this is a shift and a mask instead
// of an integer division (~20 instructions) on every key; other sizes still
// work. The branch is uniform across the grid.
struct BlockDivider {
  __device__ explicit BlockDivider(int block_size)
      : size(block_size), pow2((block_size & (block_size - 1)) == 0) {
    while ((1 << shift) < block_size) ++shift;  // log2 for powers of two
  }
  __device__ int Block(int pos) const {
    return pow2 ? pos >> shift : pos / size;
  }
  __device__ int Offset(int pos) const {
    return pow2 ? pos & (size - 1) : pos % size;
  }
  int size;
  int shift = 0;
  bool pow2;
};

// Completes the row sums of an MMA accumulator tile: the 4 lanes of each
// row group (lane / 4) hold the row's columns between them.
__device__ __forceinline__ void SumRowQuads(float (&row_sum)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
}

// Two floats as bf16x2 in one register, `lo` at the lower address.
__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                   SharedAddress(smem)),
               "l"(gmem));
}
// One 16-byte piece of a cached key's K row (src) and V row (src +
// kv_stride) into shared memory by cp.async; zeros where src is null (a
// key past the end, so 0-probability columns never multiply garbage).
__device__ __forceinline__ void LoadKvPiece(__nv_bfloat16* kd,
                                            __nv_bfloat16* vd,
                                            const __nv_bfloat16* src,
                                            int64_t kv_stride) {
  if (src != nullptr) {
    CpAsync16(kd, src);
    CpAsync16(vd, src + kv_stride);
  } else {
    *reinterpret_cast<uint4*>(kd) = make_uint4(0, 0, 0, 0);
    *reinterpret_cast<uint4*>(vd) = make_uint4(0, 0, 0, 0);
  }
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 bf16 matrices; lane i supplies the row address of matrix i / 8,
// row i % 8. Plain: lane (g = lane/4, q = lane%4) receives row g, columns
// 2q, 2q+1 of each matrix. Transposed: row 2q and 2q+1 of column g.
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(SharedAddress(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4],
                                                const void* p) {
  asm volatile(
      "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, "
      "[%4];\n"
      : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
      : "r"(SharedAddress(p)));
}

// d += a * b for one 16x8x16 tile: a row-major 16x16 bf16 (4 regs), b
// "col" 16x8 bf16 (2 regs, i.e. stored n-major), d 16x8 fp32 (4 regs).
// Fragment layout (g = lane/4, q = lane%4):
//   a[0]: row g,   k 2q..2q+1    a[1]: row g+8, k 2q..2q+1
//   a[2]: row g,   k 2q+8..+9    a[3]: row g+8, k 2q+8..+9
//   b[0]: k 2q..2q+1, n g        b[1]: k 2q+8..+9, n g
//   d[0..1]: row g, n 2q..2q+1   d[2..3]: row g+8, n 2q..2q+1
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4],
                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ATTENTION_UTILS_CUH_
