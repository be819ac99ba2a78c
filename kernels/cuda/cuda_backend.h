// The CUDA backend: bf16 weights, activations and KV cache, fp32
// accumulation, fp32 logits; cuBLASLt GEMMs and the kernels of kernels/cuda.
// Plain C++ header (pimpl): no CUDA type leaks to callers.
//
// Every op is queued on the backend's single stream and returns before the
// GPU has run it; DownloadF32 and Synchronize wait. Tensors may outlive the
// backend (their memory is returned when the last one goes).
#ifndef DUET_KERNELS_CUDA_CUDA_BACKEND_H_
#define DUET_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace duet::kernels {

struct CudaBackendOptions {
  // Prefill attention on tensor cores (FlashAttention-2 style). false runs
  // every prefill query through the decode kernel instead: much slower on
  // long chunks, kept as an independent second implementation for tests
  // and for bisecting numerical problems.
  bool tensor_core_prefill = true;
  // bf16 GEMMs of at most this many tokens (decode) run on the
  // hand-written weight-streaming kernel (small_gemm.h) instead of
  // cuBLASLt; 0 = cuBLASLt for every GEMM; at most 8. Measured on an H100
  // (docs/PERF.md, Qwen3-4B step): faster than cuBLASLt at 1 and 2 tokens
  // (4.22 vs 4.63 ms, 4.46 vs 4.66 ms), slower from 3 (4.84 vs 4.72 ms),
  // much slower at 8, where every weight load costs 8 loads of x.
  int small_gemm_max_tokens = 2;
  // bf16 GEMMs of more tokens than that and at most this many run on the
  // tensor-core weight-streaming kernel (skinny_gemm.h); 0 = none, at most
  // 32. The rest take cuBLASLt. Off by default: on an H100 its first
  // version streamed a step's four GEMMs at 1.62x / 1.77x of the copy floor
  // at 8 / 32 tokens, cuBLASLt at 1.45x / 1.53x; the second (branch
  // skinny-v2: 16- and 32-warp CTAs, x a chunk ahead) at 1.51x / 2.20x
  // against cuBLASLt's 1.41x / 1.51x in the same run (docs/PERF.md).
  int skinny_gemm_max_tokens = 0;
  // cuBLASLt GEMMs of at most this many tokens (decode: the kernels above
  // take fewer) time the heuristic's first 8 candidates on the GPU when a
  // shape first runs outside a graph capture and keep the fastest
  // (kernels/cuda/gemm.h); the rest take the heuristic's first. 0 = never,
  // at most 4096. Off by default: on an H100 (docs/PERF.md) a decode step's
  // four GEMMs went 3310 -> 3308 us at 8 tokens and 3454 -> 3383 us at 32,
  // the model's step 4.35 -> 4.36 and 5.13 -> 5.08 ms.
  int gemm_autotune_max_tokens = 0;
  // Query rows each warp of the tensor-core prefill attention kernel owns:
  // 16 (one MMA row tile) or 32 (two row tiles share every K/V fragment read
  // from shared memory, half the shared-memory traffic per FLOP). 32 is
  // the default from an H100 run (docs/PERF.md run 3): 8192-token prefill
  // 207 -> 174 ms, the attention kernel 181 -> 275 TFLOP/s; 16 stays as
  // the simpler second implementation.
  int prefill_warp_rows = 32;
  // Prefill attention splits the keys of its query tiles over several CTAs
  // when the tiles alone are fewer than the SMs (a short suffix after a long
  // cached prefix), and merges the splits in a second kernel; false keeps
  // one CTA per tile (tests compare both). On an H100, 100 tokens after
  // 2,000 cached: 8.35 -> 5.83 ms (docs/PERF.md).
  bool prefill_split_kv = true;
  // Launch the decode-path kernels (norms, RoPE, attention, SiLU, small
  // GEMM, row gathers) as programmatic dependents (kernels/cuda/pdl.h):
  // each one's CTAs launch while its predecessor runs, and the small GEMM
  // starts streaming its weights before the predecessor ends. Ignored
  // before sm_90.
  bool programmatic_launch = true;
  // Launch shape of the small GEMM at 1-2 tokens (small_gemm.cu): -1
  // picks by the weight's size; 0..10 force one (benchmarks and tests).
  int small_gemm_shape = -1;
  // Launch shape of the skinny GEMM (skinny_gemm.cu): -1 by the weight's
  // size; 0..10 force one (benchmarks and tests).
  int skinny_gemm_shape = -1;
};

// InvalidArgument, naming the option, when `options` holds a value the
// backend does not support. Needs no GPU.
absl::Status CheckCudaBackendOptions(const CudaBackendOptions& options);

// A backend on CUDA device `device`: INVALID_ARGUMENT for bad options
// (above), FAILED_PRECONDITION when there is no such device (no GPU, no
// driver) or it is older than sm_80 (bf16 tensor cores and cp.async are
// required).
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(
    int device, const CudaBackendOptions& options = {});

}  // namespace duet::kernels

#endif  // DUET_KERNELS_CUDA_CUDA_BACKEND_H_
