// Internal to kernels/cuda: turns runtime head_dim / group size into
// compile-time constants (FlashInfer style). Each kernel family calls these
// in exactly one place, its launcher; a value outside the supported list is
// InvalidArgument there, never a silently slower or wrong path.
//
//   return DispatchHeadDim(p.head_dim, "rope", [&](auto hd) {
//     MyKernel<decltype(hd)::value><<<grid, block, 0, stream>>>(p);
//     return absl::OkStatus();
//   });
#ifndef DUET_KERNELS_CUDA_DISPATCH_H_
#define DUET_KERNELS_CUDA_DISPATCH_H_

#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace duet::kernels::cuda {

// head_dim: 64 and 128 are the real models (Qwen3, Llama 3); 16 is the tiny
// synthetic test model. Every instantiation costs compile time and binary
// size, so add values only with a model that needs them.
inline constexpr const char* kSupportedHeadDims = "16, 64, 128";

template <typename F>
absl::Status DispatchHeadDim(int head_dim, const char* what, F&& f) {
  switch (head_dim) {
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": head_dim ", head_dim,
                       " is not supported by the CUDA backend (supported: ",
                       kSupportedHeadDims, ")"));
  }
}

// Query heads per KV head (GQA group): 1 (MHA), 2, 4, 8.
template <typename F>
absl::Status DispatchGroupSize(int num_heads, int num_kv_heads,
                               const char* what, F&& f) {
  const int group = num_kv_heads > 0 && num_heads % num_kv_heads == 0
                        ? num_heads / num_kv_heads
                        : 0;
  switch (group) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": ", num_heads, " query heads over ", num_kv_heads,
          " KV heads is not supported by the CUDA backend (query heads per "
          "KV head must be 1, 2, 4 or 8)"));
  }
}

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_DISPATCH_H_
