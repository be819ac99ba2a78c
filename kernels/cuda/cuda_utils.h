// Internal to kernels/cuda: RAII owners of CUDA runtime handles and small
// helpers shared by the backend's .cc and .cu files. Includes the CUDA
// runtime header, so it must never be included from a public header
// (cuda_backend.h stays plain C++).
#ifndef DUET_KERNELS_CUDA_CUDA_UTILS_H_
#define DUET_KERNELS_CUDA_CUDA_UTILS_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/device_status.h"

namespace duet::kernels::cuda {

// Checks the launch that just happened (bad configuration, too much shared
// memory, no kernel image for this GPU) without synchronizing.
#define DUET_CUDA_RETURN_IF_LAUNCH_ERROR() \
  DUET_CUDA_RETURN_IF_ERROR(cudaGetLastError())

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Makes `device` current for the scope and restores the previous device:
// one process may drive several GPUs from several threads (tensor parallel),
// and every backend entry point must act on its own device.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    if (cudaGetDevice(&previous_) == cudaSuccess && previous_ != device) {
      status_ = cudaSetDevice(device);
      restore_ = status_ == cudaSuccess;
    }
  }
  ~ScopedDevice() {
    if (restore_) (void)cudaSetDevice(previous_);
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  cudaError_t status() const { return status_; }

 private:
  int previous_ = -1;
  bool restore_ = false;
  cudaError_t status_ = cudaSuccess;
};

// Owned, non-blocking stream (does not synchronize with the legacy default
// stream, so other libraries' default-stream work cannot stall ours).
class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream() {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  absl::Status Create() {
    DUET_CUDA_RETURN_IF_ERROR(
        cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return absl::OkStatus();
  }
  // With the device's highest priority: its kernels are scheduled before
  // those of normal streams as SMs free up.
  absl::Status CreateHighPriority() {
    int least = 0, greatest = 0;
    DUET_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetStreamPriorityRange(&least, &greatest));
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(
        &stream_, cudaStreamNonBlocking, greatest));
    return absl::OkStatus();
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

// Owned event, without timing (cheaper to record and wait on) unless made
// by CreateTiming.
class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
  }
  CudaEvent(CudaEvent&& o) noexcept
      : event_(std::exchange(o.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&&) = delete;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  absl::Status Create() {
    DUET_CUDA_RETURN_IF_ERROR(
        cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    return absl::OkStatus();
  }
  // With timing, for cudaEventElapsedTime.
  absl::Status CreateTiming() {
    DUET_CUDA_RETURN_IF_ERROR(cudaEventCreate(&event_));
    return absl::OkStatus();
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Polls `query` (cudaEventQuery / cudaStreamQuery of one object) until it
// says done, fails, or `deadline` passes (DEADLINE_EXCEEDED naming `what`).
// Spins briefly, then sleeps in short steps: a KV handover waits here for
// its last piece, where sleeping a whole scheduler tick would cost more
// than the copy.
absl::Status PollUntil(const std::function<cudaError_t()>& query,
                       absl::Time deadline, absl::string_view what);

// Offsets of arrays packed back to back into one buffer, each 16-byte
// aligned (for vector loads), so a set of small arrays moves in one copy.
class PackedLayout {
 public:
  size_t Take(size_t bytes) {
    const size_t offset = size_;
    size_ += (bytes + 15) / 16 * 16;
    return offset;
  }
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;
};

// Page-locked host buffer (fast, truly asynchronous H2D/D2H copies).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Free(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  // Replaces the buffer by one of at least `bytes`; the caller guarantees no
  // copy still reads the old one.
  absl::Status Reserve(size_t bytes) {
    if (bytes <= size_) return absl::OkStatus();
    Free();
    DUET_CUDA_RETURN_IF_ERROR(cudaMallocHost(&data_, bytes));
    size_ = bytes;
    return absl::OkStatus();
  }
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void Free() {
    if (data_ != nullptr) (void)cudaFreeHost(data_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_CUDA_UTILS_H_
