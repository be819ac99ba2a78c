#include "kernels/cuda/gemm.h"

#include <cublas_api.h>

#include <algorithm>
#include <array>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "common/status.h"

namespace duet::kernels::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
// Timed runs per candidate; the median is compared.
constexpr int kTuneRuns = 5;
// Each timed run starts with L2 overwritten by a buffer this much larger
// than L2: a decode GEMM's weights (21-99 MB for Qwen3-4B) would otherwise
// stay in the H100's 50 MB L2 between runs and flatter small-tile
// algorithms, while in a real step every layer's weights come from DRAM.
constexpr size_t kFlushL2Multiple = 2;

// Makes this thread's CUDA calls legal while another stream of it is being
// captured (a graph in global mode would reject the synchronizing calls
// tuning makes); restores the previous mode on exit.
class RelaxedCaptureMode {
 public:
  RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCaptureMode() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCaptureMode(const RelaxedCaptureMode&) = delete;
  RelaxedCaptureMode& operator=(const RelaxedCaptureMode&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

}  // namespace

GemmRunner::RawDeviceMemory::~RawDeviceMemory() {
  if (data != nullptr) (void)cudaFree(data);
}

absl::Status GemmRunner::Reserve(std::unique_ptr<RawDeviceMemory>& m,
                                 size_t bytes) {
  if (m != nullptr && m->size >= bytes) return absl::OkStatus();
  if (m != nullptr) retired_.push_back(std::move(m));
  auto fresh = std::make_unique<RawDeviceMemory>();
  DUET_CUDA_RETURN_IF_ERROR(cudaMalloc(&fresh->data, bytes));
  fresh->size = bytes;
  m = std::move(fresh);
  return absl::OkStatus();
}

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
  DUET_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle_));
  auto ws = DeviceBuffer::Make(std::move(allocator), kWorkspaceBytes);
  if (!ws.ok()) return ws.status();
  workspace_ = std::move(*ws);
  return absl::OkStatus();
}

absl::Status GemmRunner::MakePlan(const GemmParams& p, cudaStream_t stream,
                                  Plan& plan) {
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
  // The heuristic lists usable candidates first; keep those.
  int usable = 0;
  while (usable < returned && results[usable].state == CUBLAS_STATUS_SUCCESS) {
    ++usable;
  }
  if (usable == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "cuBLASLt has no algorithm for bf16 GEMM tokens=", p.tokens, " n=", p.n,
        " k=", p.k));
  }
  int chosen = 0;
  if (tune && usable > 1) {
    absl::StatusOr<int> best =
        Tune(p, stream, plan,
             std::span<const cublasLtMatmulHeuristicResult_t>(results.data(),
                                                              usable));
    if (!best.ok()) return best.status();
    chosen = *best;
  }
  plan.algo = results[chosen].algo;
  return absl::OkStatus();
}

absl::StatusOr<int> GemmRunner::Tune(
    const GemmParams& p, cudaStream_t stream, const Plan& plan,
    std::span<const cublasLtMatmulHeuristicResult_t> candidates) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  DUET_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  RelaxedCaptureMode relaxed;
  // Eager: let the caller's queued work finish so it does not share the
  // GPU with the timed runs. Captured work does not run until replay.
  if (capture == cudaStreamCaptureStatusNone) {
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  }
  if (tune_stream_.get() == nullptr) {
    DUET_RETURN_IF_ERROR(tune_stream_.Create());
    int device = 0, l2 = 0;
    DUET_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    DUET_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    DUET_RETURN_IF_ERROR(Reserve(
        tune_flush_, std::max<size_t>(kFlushL2Multiple * l2, size_t{1} << 20)));
    DUET_RETURN_IF_ERROR(Reserve(tune_workspace_, kWorkspaceBytes));
  }
  // The runs read the caller's x and w (reads only) and write scratch: y
  // may be memory the caller's stream is still using, or a block of a
  // graph being captured.
  const size_t out_bytes =
      static_cast<size_t>(p.tokens) * p.n * (p.out_type == CUDA_R_32F ? 4 : 2);
  DUET_RETURN_IF_ERROR(Reserve(tune_out_, out_bytes));
  cudaStream_t s = tune_stream_.get();
  CudaEvent start, stop;
  DUET_RETURN_IF_ERROR(start.CreateTiming());
  DUET_RETURN_IF_ERROR(stop.CreateTiming());
  const float alpha = 1.0f;
  const float beta = 0.0f;
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_, plan.desc, &alpha, p.w, plan.a, p.x, plan.b,
                          &beta, tune_out_->data, plan.c, tune_out_->data,
                          plan.c, &algo, tune_workspace_->data,
                          tune_workspace_->size, s);
  };
  std::vector<float> median(candidates.size(), -1.0f);
  for (size_t i = 0; i < candidates.size(); ++i) {
    // A candidate that fails to launch is skipped, not fatal: the
    // heuristic's own first choice is what an untuned runner would run.
    if (run(candidates[i].algo) != CUBLAS_STATUS_SUCCESS) {
      (void)cudaGetLastError();
      continue;
    }
    std::array<float, kTuneRuns> ms{};
    bool ok = true;
    for (int r = 0; r < kTuneRuns && ok; ++r) {
      DUET_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(tune_flush_->data, r & 0xff, tune_flush_->size, s));
      DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(start.get(), s));
      ok = run(candidates[i].algo) == CUBLAS_STATUS_SUCCESS;
      DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop.get(), s));
      DUET_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop.get()));
      DUET_CUDA_RETURN_IF_ERROR(
          cudaEventElapsedTime(&ms[r], start.get(), stop.get()));
    }
    if (!ok) {
      (void)cudaGetLastError();
      continue;
    }
    std::sort(ms.begin(), ms.end());
    median[i] = ms[kTuneRuns / 2];
  }
  DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
  float best = -1.0f;
  for (const float m : median) {
    if (m >= 0 && (best < 0 || m < best)) best = m;
  }
  if (best < 0) return 0;  // nothing timed: the heuristic's first choice
  for (size_t i = 0; i < median.size(); ++i) {
    if (median[i] >= 0 && median[i] <= best * 1.03f) return static_cast<int>(i);
  }
  return 0;
}

absl::Status GemmRunner::Run(const GemmParams& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.n == 0) return absl::OkStatus();
  const Key key{p.tokens, p.n, p.k, static_cast<int>(p.out_type)};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    auto plan = std::make_unique<Plan>();
    absl::Status s = MakePlan(p, stream, *plan);
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
