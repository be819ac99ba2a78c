// Internal to kernels/cuda: the caching device allocator behind
// CudaBackend::Allocate. The forward pass allocates its activations on every
// step, and cudaMalloc/cudaFree cost tens of microseconds and synchronize the
// device, so freed blocks are kept in a free list keyed by size and handed
// out again.
//
// Stream semantics: a block freed while kernels that use it are still queued
// may be handed out at once. That is safe because the backend issues all its
// work on one stream, so the next user's work is ordered after the last
// user's. A second stream touching these blocks would need events first.
#ifndef DUET_KERNELS_CUDA_ALLOCATOR_H_
#define DUET_KERNELS_CUDA_ALLOCATOR_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace duet::kernels::cuda {

struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out and not yet freed
  size_t bytes_cached = 0;     // in the free list
  int64_t device_mallocs = 0;  // cudaMalloc calls so far (cache misses)
  int64_t device_frees = 0;    // cudaFree calls so far
};

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  // Returns every block to the driver. Callers hold this through shared_ptr
  // so that it outlives every tensor that still points into it.
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (256-byte aligned, never null, also for 0).
  // On out-of-memory the cache is released and the allocation retried once;
  // then RESOURCE_EXHAUSTED.
  absl::StatusOr<void*> Allocate(size_t bytes);
  // Returns `ptr` (from Allocate) to the cache. Thread-safe; never fails.
  void Free(void* ptr);
  // Gives every cached (free) block back to the driver.
  void ReleaseCached();
  AllocatorStats stats() const;

  // CUDA graph capture. A graph bakes in the addresses of the memory its
  // kernels use, so blocks handed out between BeginCapture and EndCapture
  // must never be given to anyone else while the graph lives: blocks freed
  // during the capture go to a capture-local free list (reused only by the
  // same capture), and EndCapture hands every block of the capture, live or
  // freed, to the caller (the graph), after which Free ignores them.
  // ReleaseCaptured returns them once the graph is gone and its last replay
  // has finished.
  using Blocks = std::vector<std::pair<void*, size_t>>;
  void BeginCapture();
  Blocks EndCapture();
  void ReleaseCaptured(const Blocks& blocks);

 private:
  absl::StatusOr<void*> AllocateLocked(size_t rounded_bytes);
  void ReleaseCachedLocked();

  const int device_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;         // size -> block
  std::unordered_map<void*, size_t> in_use_;  // block -> size
  bool capturing_ = false;
  std::unordered_map<void*, size_t> captured_;  // blocks of this capture
  std::multimap<size_t, void*> capture_free_;   // freed during the capture
  AllocatorStats stats_;
};

// Owning handle of one allocator block, for the backend's own scratch and
// persistent buffers (metadata, GEMM workspace, staging).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      allocator_ = std::move(o.allocator_);
      data_ = o.data_;
      size_ = o.size_;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  static absl::StatusOr<DeviceBuffer> Make(
      std::shared_ptr<CachingAllocator> allocator, size_t bytes);
  // Makes sure the buffer holds at least `bytes`, replacing it (contents
  // lost) by one with 1.5x headroom when it does not.
  absl::Status Reserve(const std::shared_ptr<CachingAllocator>& allocator,
                       size_t bytes);

  void* data() const { return data_; }
  size_t size() const { return size_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void Reset() {
    if (data_ != nullptr && allocator_) allocator_->Free(data_);
    data_ = nullptr;
    size_ = 0;
  }
  std::shared_ptr<CachingAllocator> allocator_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_ALLOCATOR_H_
