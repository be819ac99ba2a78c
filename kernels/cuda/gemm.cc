#include "kernels/cuda/gemm.h"

#include <cublas_api.h>

#include <algorithm>
#include <array>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "common/logging.h"
#include "common/status.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/elementwise_kernels.h"

namespace duet::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
// Timed runs per candidate, taken round-robin over the candidates (so
// clocks ramping up after the idle synchronize do not favour the last);
// the medians are compared.
constexpr int kTuneRuns = 5;
// A candidate is kept over an earlier one only if it is faster by more
// than this fraction and this time: event timing resolves ~0.5 us, and a
// decode GEMM takes 5-100 us.
constexpr float kTuneMargin = 0.03f;
constexpr float kTuneMarginMs = 0.001f;

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

absl::Status GemmRunner::Init(std::shared_ptr<CachingAllocator> allocator,
                              int autotune_max_tokens) {
  autotune_max_tokens_ = autotune_max_tokens;
  allocator_ = allocator;
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
  const bool tune = p.tokens <= autotune_max_tokens_;
  std::array<cublasLtMatmulHeuristicResult_t, kTuneCandidates> results{};
  int returned = 0;
  if (rc == CUBLAS_STATUS_SUCCESS) {
    rc = cublasLtMatmulAlgoGetHeuristic(
        handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, pref,
        tune ? kTuneCandidates : 1, results.data(), &returned);
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);
  DUET_CUBLAS_RETURN_IF_ERROR(rc);
  // The heuristic lists usable candidates first.
  int usable = 0;
  while (usable < returned && results[usable].state == CUBLAS_STATUS_SUCCESS) {
    ++usable;
  }
  if (usable == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "cuBLASLt has no algorithm for bf16 GEMM tokens=", p.tokens, " n=", p.n,
        " k=", p.k));
  }
  plan.algo = results[0].algo;
  if (usable > 1) {
    plan.candidates.assign(results.begin(), results.begin() + usable);
  }
  return absl::OkStatus();
}

cublasStatus_t GemmRunner::Matmul(const GemmParams& p, const Plan& plan,
                                  const cublasLtMatmulAlgo_t& algo,
                                  cudaStream_t stream) {
  const float alpha = 1.0f;
  const float beta = 0.0f;
  return cublasLtMatmul(handle_, plan.desc, &alpha, p.w, plan.a, p.x, plan.b,
                        &beta, p.y, plan.c, p.y, plan.c, &algo,
                        workspace_.data(), workspace_.size(), stream);
}

absl::StatusOr<int> GemmRunner::Tune(const GemmParams& p, cudaStream_t stream,
                                     const Plan& plan) {
  int device = 0, l2 = 0;
  DUET_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  DUET_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  // Read (not written: dirty lines would be written back during the next
  // timed run) to push the weights out of L2. Its contents do not matter.
  const int64_t flush_words = std::max<int64_t>(2 * int64_t{l2}, 1 << 20) / 4;
  DUET_ASSIGN_OR_RETURN(
      DeviceBuffer flush,
      DeviceBuffer::Make(allocator_, flush_words * 4 + sizeof(uint32_t)));
  auto* words = static_cast<uint32_t*>(flush.data());
  uint32_t* sink = words + flush_words;
  CudaEvent start, stop;
  DUET_RETURN_IF_ERROR(start.CreateTiming());
  DUET_RETURN_IF_ERROR(stop.CreateTiming());
  const size_t n = plan.candidates.size();
  // A candidate that fails to launch is dropped, not fatal.
  std::vector<bool> usable(n, true);
  for (size_t i = 0; i < n; ++i) {
    if (Matmul(p, plan, plan.candidates[i].algo, stream) !=
        CUBLAS_STATUS_SUCCESS) {
      usable[i] = false;
      (void)cudaGetLastError();
    }
  }
  std::vector<std::array<float, kTuneRuns>> ms(n);
  for (int r = 0; r < kTuneRuns; ++r) {
    for (size_t i = 0; i < n; ++i) {
      if (!usable[i]) continue;
      DUET_RETURN_IF_ERROR(LaunchXorWords(words, flush_words, sink, stream));
      DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), stream));
      const cublasStatus_t rc =
          Matmul(p, plan, plan.candidates[i].algo, stream);
      DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), stream));
      DUET_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
      if (rc != CUBLAS_STATUS_SUCCESS) {
        usable[i] = false;
        (void)cudaGetLastError();
        continue;
      }
      DUET_CUDA_RETURN_IF_ERROR(
          cudaEventElapsedTime(&ms[i][r], start.get(), stop.get()));
    }
  }
  std::vector<float> median(n, -1.0f);
  float best = -1.0f;
  for (size_t i = 0; i < n; ++i) {
    if (!usable[i]) continue;
    std::sort(ms[i].begin(), ms[i].end());
    median[i] = ms[i][kTuneRuns / 2];
    if (best < 0 || median[i] < best) best = median[i];
  }
  if (best < 0) return 0;  // nothing timed: the heuristic's first choice
  const float limit = best + std::max(best * kTuneMargin, kTuneMarginMs);
  for (size_t i = 0; i < n; ++i) {
    if (median[i] >= 0 && median[i] <= limit) return static_cast<int>(i);
  }
  return 0;
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
  Plan& plan = *it->second;
  if (!plan.candidates.empty()) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) {
      // Queued work would share the GPU with the timed runs, and may still
      // be using the workspace.
      DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
      absl::StatusOr<int> chosen = Tune(p, stream, plan);
      if (chosen.ok()) {
        plan.algo = plan.candidates[*chosen].algo;
      } else {
        // Not worth failing the request: the heuristic's choice is what an
        // untuned runner runs. A sticky device error surfaces at the next
        // synchronizing call anyway.
        (void)cudaGetLastError();
        DUET_LOG(WARNING) << "cuBLASLt autotune of tokens=" << p.tokens
                          << " n=" << p.n << " k=" << p.k
                          << " failed; keeping the heuristic's algorithm: "
                          << chosen.status();
      }
      plan.candidates.clear();
      plan.candidates.shrink_to_fit();
    }
  }
  DUET_CUBLAS_RETURN_IF_ERROR(Matmul(p, plan, plan.algo, stream));
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
