#include "kernels/cuda/gemm.h"

#include <cublas_api.h>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"

namespace duet::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

GemmRunner::Plan::~Plan() {
  if (c != nullptr) (void)cublasLtMatrixLayoutDestroy(c);
  if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
  if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
  if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
}

GemmRunner::~GemmRunner() {
  plans_.clear();
  if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
}

absl::Status GemmRunner::Init(std::shared_ptr<CachingAllocator> allocator) {
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle_));
  auto ws = DeviceBuffer::Make(std::move(allocator), kWorkspaceBytes);
  if (!ws.ok()) return ws.status();
  workspace_ = std::move(*ws);
  return absl::OkStatus();
}

absl::Status GemmRunner::MakePlan(const GemmParams& p, Plan& plan) {
  DUET_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T;
  const cublasOperation_t trans_b = CUBLAS_OP_N;
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  // Layouts as stored (before the transpose op), column-major.
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan.a, CUDA_R_16BF, static_cast<uint64_t>(p.k),
      static_cast<uint64_t>(p.n), p.k));
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan.b, CUDA_R_16BF, static_cast<uint64_t>(p.k),
      static_cast<uint64_t>(p.tokens), p.k));
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan.c, p.out_type, static_cast<uint64_t>(p.n),
      static_cast<uint64_t>(p.tokens), p.n));

  cublasLtMatmulPreference_t pref = nullptr;
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_.size();
  cublasStatus_t rc = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  if (rc == CUBLAS_STATUS_SUCCESS) {
    rc = cublasLtMatmulAlgoGetHeuristic(handle_, plan.desc, plan.a, plan.b,
                                        plan.c, plan.c, pref, 1, &result,
                                        &returned);
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);
  DUET_CUBLAS_RETURN_IF_ERROR(rc);
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    return absl::UnimplementedError(absl::StrCat(
        "cuBLASLt has no algorithm for bf16 GEMM tokens=", p.tokens, " n=", p.n,
        " k=", p.k));
  }
  plan.algo = result.algo;
  return absl::OkStatus();
}

absl::Status GemmRunner::Run(const GemmParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.n == 0) return absl::OkStatus();
  const Key key{p.tokens, p.n, p.k, static_cast<int>(p.out_type)};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    auto plan = std::make_unique<Plan>();
    absl::Status s = MakePlan(p, *plan);
    if (!s.ok()) return s;
    it = plans_.emplace(key, std::move(plan)).first;
  }
  const Plan& plan = *it->second;
  const float alpha = 1.0f;
  const float beta = 0.0f;
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      handle_, plan.desc, &alpha, p.w, plan.a, p.x, plan.b, &beta, p.y, plan.c,
      p.y, plan.c, &plan.algo, workspace_.data(), workspace_.size(), stream));
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
