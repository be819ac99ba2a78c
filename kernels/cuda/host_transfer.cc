#include "kernels/cuda/host_transfer.h"

#include <algorithm>
#include <cstring>

#include "common/device_status.h"
#include "kernels/cuda/elementwise_kernels.h"

namespace duet::kernels::cuda {

absl::Status HostTransfer::Init(std::shared_ptr<CachingAllocator> allocator) {
  allocator_ = std::move(allocator);
  for (CudaEvent& e : done_) {
    absl::Status s = e.Create();
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status HostTransfer::Upload(const void* src, DType src_dtype,
                                  size_t count, void* dst, DType dst_dtype,
                                  cudaStream_t stream) {
  const size_t src_size = DTypeSize(src_dtype);
  const size_t dst_size = DTypeSize(dst_dtype);
  const size_t chunk_elems = kChunkBytes / src_size;
  const bool convert = src_dtype != dst_dtype;
  const auto* in = static_cast<const char*>(src);
  auto* out = static_cast<char*>(dst);
  int slot = 0;
  for (size_t done = 0; done < count; done += chunk_elems, slot ^= 1) {
    const size_t n = std::min(chunk_elems, count - done);
    if (pending_[slot]) {
      DUET_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(done_[slot].get()));
      pending_[slot] = false;
    }
    absl::Status s = pinned_[slot].Reserve(kChunkBytes);
    if (!s.ok()) return s;
    std::memcpy(pinned_[slot].data(), in + done * src_size, n * src_size);
    if (!convert) {
      DUET_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(out + done * dst_size, pinned_[slot].data(),
                          n * src_size, cudaMemcpyHostToDevice, stream));
    } else {
      s = staging_[slot].Reserve(allocator_, kChunkBytes);
      if (!s.ok()) return s;
      DUET_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(staging_[slot].data(), pinned_[slot].data(),
                          n * src_size, cudaMemcpyHostToDevice, stream));
      s = LaunchConvert(
          {staging_[slot].data(), src_dtype, out + done * dst_size, dst_dtype,
           static_cast<int64_t>(n)},
          stream);
      if (!s.ok()) return s;
    }
    DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(done_[slot].get(), stream));
    pending_[slot] = true;
  }
  return absl::OkStatus();
}

absl::Status HostTransfer::DownloadF32(const void* src, DType src_dtype,
                                       size_t count, float* dst,
                                       cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  const void* from = src;
  DeviceBuffer scratch;
  if (src_dtype != DType::kF32) {
    auto buffer = DeviceBuffer::Make(allocator_, count * sizeof(float));
    if (!buffer.ok()) return buffer.status();
    scratch = std::move(*buffer);
    absl::Status s = LaunchConvert({src, src_dtype, scratch.data(), DType::kF32,
                                    static_cast<int64_t>(count)},
                                   stream);
    if (!s.ok()) return s;
    from = scratch.data();
  }
  // Queued behind every op already on the stream, so no Synchronize() is
  // needed before a download.
  DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, from, count * sizeof(float),
                                            cudaMemcpyDeviceToHost, stream));
  DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
