// Internal to kernels/cuda: host <-> device copies with dtype conversion.
//
// Uploads go through two pinned staging buffers of kChunkBytes in turn: the
// host copies chunk i into one while the copy engine (and, when the dtype
// changes, a conversion kernel) drains chunk i - 1 from the other. A 4B
// model's 8 GB of weights therefore never exist twice in host memory, and
// the conversion runs on the GPU, not on one host core.
#ifndef DUET_KERNELS_CUDA_HOST_TRANSFER_H_
#define DUET_KERNELS_CUDA_HOST_TRANSFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda {

class HostTransfer {
 public:
  static constexpr size_t kChunkBytes = size_t{16} << 20;

  HostTransfer() = default;
  HostTransfer(const HostTransfer&) = delete;
  HostTransfer& operator=(const HostTransfer&) = delete;

  absl::Status Init(std::shared_ptr<CachingAllocator> allocator);

  // dst[0, count) (device, dst_dtype) = convert(src[0, count)) (host,
  // src_dtype). Returns once `src` has been read; the device side may still
  // be queued on `stream`.
  absl::Status Upload(const void* src, DType src_dtype, size_t count, void* dst,
                      DType dst_dtype, cudaStream_t stream);
  // dst (host fp32) = src (device); returns when dst is filled.
  absl::Status DownloadF32(const void* src, DType src_dtype, size_t count,
                           float* dst, cudaStream_t stream);

 private:
  std::shared_ptr<CachingAllocator> allocator_;
  PinnedBuffer pinned_[2];
  CudaEvent done_[2];  // recorded after each use of slot i
  bool pending_[2] = {false, false};
  DeviceBuffer staging_[2];  // device copy of a chunk that needs converting
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_HOST_TRANSFER_H_
