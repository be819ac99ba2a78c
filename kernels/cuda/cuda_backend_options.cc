#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/skinny_gemm.h"
#include "kernels/cuda/small_gemm.h"

namespace duet::kernels {
namespace {

// Tuning times 8 candidates x 6 runs per new shape; past a few thousand
// tokens each run is a prefill-sized GEMM and tuning every chunk length
// seen would cost more than it could save.
constexpr int kMaxGemmAutotuneTokens = 4096;

}  // namespace

absl::Status CheckCudaBackendOptions(const CudaBackendOptions& options) {
  if (options.prefill_warp_rows != 16 && options.prefill_warp_rows != 32) {
    return absl::InvalidArgumentError(absl::StrCat("prefill_warp_rows is ",
                                                   options.prefill_warp_rows,
                                                   "; it must be 16 or 32"));
  }
  if (options.small_gemm_shape < -1 ||
      options.small_gemm_shape >= cuda::kSmallGemmShapes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "small_gemm_shape is ", options.small_gemm_shape,
        "; it must be -1 (by weight size) or 0..", cuda::kSmallGemmShapes - 1));
  }
  if (options.skinny_gemm_shape < -1 ||
      options.skinny_gemm_shape >= cuda::kSkinnyGemmShapes) {
    return absl::InvalidArgumentError(
        absl::StrCat("skinny_gemm_shape is ", options.skinny_gemm_shape,
                     "; it must be -1 (by weight size) or 0..",
                     cuda::kSkinnyGemmShapes - 1));
  }
  if (options.small_gemm_max_tokens < 0 ||
      options.small_gemm_max_tokens > cuda::kSmallGemmMaxTokens ||
      options.skinny_gemm_max_tokens < 0 ||
      options.skinny_gemm_max_tokens > cuda::kSkinnyGemmMaxTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "small_gemm_max_tokens is ", options.small_gemm_max_tokens,
        " and skinny_gemm_max_tokens ", options.skinny_gemm_max_tokens,
        "; they must be 0..", cuda::kSmallGemmMaxTokens, " and 0..",
        cuda::kSkinnyGemmMaxTokens));
  }
  if (options.gemm_autotune_max_tokens < 0 ||
      options.gemm_autotune_max_tokens > kMaxGemmAutotuneTokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gemm_autotune_max_tokens is ", options.gemm_autotune_max_tokens,
        "; it must be 0..", kMaxGemmAutotuneTokens));
  }
  return absl::OkStatus();
}

}  // namespace duet::kernels
