// Internal to kernels/cuda: row-major y[T, N] = x[T, K] * w[N, K]^T through
// cuBLASLt, bf16 operands, fp32 accumulation, bf16 or fp32 output.
//
// cuBLAS is column-major, and a row-major [R, C] matrix is the same bytes as
// a column-major [C, R] one. So y^T[N, T] = w[N, K] * x^T[K, T] in column-major
// terms: A = w read as column-major [K, N] and transposed, B = x read as
// column-major [K, T], C = y read as column-major [N, T]. No data moves.
//
// The algorithm is chosen once per (T, N, K, output dtype) and cached with
// its descriptors; all calls share one workspace. cuBLASLt's heuristic
// picks it, except for GEMMs of at most `autotune_max_tokens` tokens
// (decode), where the heuristic's first candidates are timed on the GPU
// and the fastest kept: the heuristic's choice streams a decode step's
// weights at 1.4-1.5x of the copy floor at 8-32 tokens, and which
// candidate is fastest for such skinny shapes only a measurement tells (on
// an H100 it changed a step by ~1%, docs/PERF.md, so it is off by
// default). Each timed run starts with L2 emptied of the weights by
// reading a buffer twice its size (in a real step every layer's weights
// come from DRAM).
#ifndef DUET_KERNELS_CUDA_GEMM_H_
#define DUET_KERNELS_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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
  // recommends for Hopper). GEMMs of at most `autotune_max_tokens` tokens
  // time cuBLASLt's candidates (0: never).
  absl::Status Init(std::shared_ptr<CachingAllocator> allocator,
                    int autotune_max_tokens = 0);
  // A shape to be tuned is tuned by its first call outside a CUDA graph
  // capture (which synchronizes `stream`); inside a capture, before that,
  // it runs the heuristic's choice. So the model runs a decode step once
  // eagerly before capturing it (Backend::WantsEagerStepBeforeCapture).
  absl::Status Run(const GemmParams& p, cudaStream_t stream);

  // How many of cuBLASLt's candidates a tuned shape times.
  static constexpr int kTuneCandidates = 8;

 private:
  // Descriptors, candidates and the chosen algorithm of one problem shape
  // (RAII).
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
    // The heuristic's usable candidates while the shape waits to be tuned;
    // empty once tuned (or when it is not to be).
    std::vector<cublasLtMatmulHeuristicResult_t> candidates;
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int>;
  absl::Status MakePlan(const GemmParams& p, Plan& plan);
  // y = x * w^T with `algo`, on the shared workspace.
  cublasStatus_t Matmul(const GemmParams& p, const Plan& plan,
                        const cublasLtMatmulAlgo_t& algo, cudaStream_t stream);
  // Index into plan.candidates of the one to keep: the first, in the
  // heuristic's order, within 3% (and 1 us) of the fastest median, so
  // near-ties resolve to the heuristic's order rather than to noise.
  // Writes p.y (the caller's Run overwrites it) and uses the workspace:
  // only with `stream` synchronized and not capturing.
  absl::StatusOr<int> Tune(const GemmParams& p, cudaStream_t stream,
                           const Plan& plan);

  cublasLtHandle_t handle_ = nullptr;
  std::shared_ptr<CachingAllocator> allocator_;
  DeviceBuffer workspace_;
  int autotune_max_tokens_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_GEMM_H_
