// Internal to kernels/cuda: row-major y[T, N] = x[T, K] * w[N, K]^T through
// cuBLASLt, bf16 operands, fp32 accumulation, bf16 or fp32 output.
//
// cuBLAS is column-major, and a row-major [R, C] matrix is the same bytes as
// a column-major [C, R] one. So y^T[N, T] = w[N, K] * x^T[K, T] in column-major
// terms: A = w read as column-major [K, N] and transposed, B = x read as
// column-major [K, T], C = y read as column-major [N, T]. No data moves.
//
// The algorithm is chosen once per (T, N, K, output dtype) by cuBLASLt's
// heuristic and cached with its descriptors; all calls share one workspace.
#ifndef DUET_KERNELS_CUDA_GEMM_H_
#define DUET_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "kernels/cuda/allocator.h"

namespace duet::kernels::cuda {

struct GemmParams {
  const void* x = nullptr;  // [tokens, k] bf16
  const void* w = nullptr;  // [n, k] bf16
  void* y = nullptr;        // [tokens, n], bf16 or fp32 (out_type)
  int64_t tokens = 0;
  int64_t n = 0;
  int64_t k = 0;
  cudaDataType_t out_type = CUDA_R_16BF;
};

class GemmRunner {
 public:
  GemmRunner() = default;
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // Creates the cuBLASLt handle and the workspace (32 MiB, what NVIDIA
  // recommends for Hopper).
  absl::Status Init(std::shared_ptr<CachingAllocator> allocator);
  absl::Status Run(const GemmParams& p, cudaStream_t stream);

 private:
  // Descriptors and the chosen algorithm of one problem shape (RAII).
  struct Plan {
    Plan() = default;
    ~Plan();
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr;
    cublasLtMatrixLayout_t b = nullptr;
    cublasLtMatrixLayout_t c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int>;
  absl::Status MakePlan(const GemmParams& p, Plan& plan);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_GEMM_H_
