// Internal to kernels/cuda: CudaBackend::Sample's host side. Uploads the
// per-row specs and the seen tokens of rows with penalties (per step: the
// engine loop keeps each request's counts on the host, and a decode row's
// list is its distinct prompt and output tokens, kilobytes) in one copy,
// penalizes, runs the rows in waves (bounding the sort scratch to kWaveRows
// rows of 64-bit keys), computes the logprobs of rows that ask, and returns
// only the token ids (rows x 4 bytes) and those logprobs instead of
// rows x vocab fp32 logits.
#ifndef DUET_KERNELS_CUDA_SAMPLER_H_
#define DUET_KERNELS_CUDA_SAMPLER_H_

#include <cuda_runtime_api.h>

#include <memory>
#include <span>

#include "absl/status/status.h"
#include "common/tensor.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/sampling.h"

namespace duet::kernels::cuda {

class DeviceSampler {
 public:
  // Rows sorted together at most (2 x 128 x vocab x 8 bytes of keys: 311 MB
  // for a 151,936-token vocabulary).
  static constexpr int kWaveRows = 128;

  explicit DeviceSampler(std::shared_ptr<CachingAllocator> allocator)
      : allocator_(std::move(allocator)) {}

  // Arguments already checked (CheckSampleArgs). Waits for the result.
  absl::Status Run(const TensorView& logits, const SampleBatch& batch,
                   std::span<int32_t> tokens, std::span<TokenLogprobs> logprobs,
                   cudaStream_t stream);

 private:
  std::shared_ptr<CachingAllocator> allocator_;
  PinnedBuffer pinned_;
  DeviceBuffer device_;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_SAMPLER_H_
