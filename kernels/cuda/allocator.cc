#include "kernels/cuda/allocator.h"

#include <cuda_runtime_api.h>

#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda {
namespace {

// Requests are rounded so that slightly different sizes (a decode batch that
// grew by one) share blocks, and so that every block is 256-byte aligned for
// vector loads and cuBLASLt.
constexpr size_t kRound = 512;

size_t RoundUp(size_t bytes) {
  return bytes == 0 ? kRound : (bytes + kRound - 1) / kRound * kRound;
}

}  // namespace

CachingAllocator::~CachingAllocator() {
  ScopedDevice guard(device_);
  // Tensors hold a shared_ptr to us, so nothing is in use any more; cached
  // blocks go back to the driver (errors ignored: this may run at exit).
  for (auto& [size, ptr] : free_) (void)cudaFree(ptr);
  for (auto& [ptr, size] : in_use_) (void)cudaFree(ptr);
}

absl::StatusOr<void*> CachingAllocator::Allocate(size_t bytes) {
  const size_t size = RoundUp(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (capturing_) {
    auto it = capture_free_.lower_bound(size);
    if (it != capture_free_.end() && it->first <= 2 * size) {
      void* ptr = it->second;
      in_use_.emplace(ptr, it->first);
      capture_free_.erase(it);
      return ptr;
    }
  }
  absl::StatusOr<void*> block = AllocateLocked(size);
  if (block.ok() && capturing_) captured_.emplace(*block, in_use_[*block]);
  return block;
}

absl::StatusOr<void*> CachingAllocator::AllocateLocked(size_t size) {
  // Best fit among cached blocks, but never more than twice the request:
  // a small tensor must not pin a huge block (the KV pool wants the memory).
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= 2 * size) {
    void* ptr = it->second;
    const size_t block = it->first;
    free_.erase(it);
    in_use_.emplace(ptr, block);
    stats_.bytes_cached -= block;
    stats_.bytes_in_use += block;
    return ptr;
  }
  ScopedDevice guard(device_);
  DUET_CUDA_RETURN_IF_ERROR(guard.status());
  void* ptr = nullptr;
  cudaError_t rc = cudaMalloc(&ptr, size);
  if (rc == cudaErrorMemoryAllocation && !free_.empty()) {
    (void)cudaGetLastError();  // out-of-memory is not sticky; clear it
    ReleaseCachedLocked();
    rc = cudaMalloc(&ptr, size);
  }
  if (rc != cudaSuccess) (void)cudaGetLastError();
  DUET_CUDA_RETURN_IF_ERROR(rc);
  ++stats_.device_mallocs;
  in_use_.emplace(ptr, size);
  stats_.bytes_in_use += size;
  return ptr;
}

void CachingAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_use_.find(ptr);
  if (it == in_use_.end()) return;  // not ours: ignore rather than corrupt
  const size_t size = it->second;
  in_use_.erase(it);
  if (capturing_ && captured_.count(ptr) > 0) {
    capture_free_.emplace(size, ptr);
    return;
  }
  free_.emplace(size, ptr);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingAllocator::ReleaseCached() {
  std::lock_guard<std::mutex> lock(mu_);
  ReleaseCachedLocked();
}

void CachingAllocator::ReleaseCachedLocked() {
  ScopedDevice guard(device_);
  // Blocks whose last users are still queued must not be pulled from under
  // them: wait for the device first (this is the rare out-of-memory path).
  (void)cudaDeviceSynchronize();
  for (auto& [size, ptr] : free_) {
    (void)cudaFree(ptr);
    ++stats_.device_frees;
  }
  free_.clear();
  stats_.bytes_cached = 0;
}

void CachingAllocator::BeginCapture() {
  std::lock_guard<std::mutex> lock(mu_);
  capturing_ = true;
  captured_.clear();
  capture_free_.clear();
}

CachingAllocator::Blocks CachingAllocator::EndCapture() {
  std::lock_guard<std::mutex> lock(mu_);
  Blocks blocks(captured_.begin(), captured_.end());
  // Live ones leave in_use_, so a later Free of them is ignored; freed ones
  // leave the capture-local list. All stay counted as in use.
  for (const auto& [ptr, size] : blocks) in_use_.erase(ptr);
  capturing_ = false;
  captured_.clear();
  capture_free_.clear();
  return blocks;
}

void CachingAllocator::ReleaseCaptured(const Blocks& blocks) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [ptr, size] : blocks) {
    free_.emplace(size, ptr);
    stats_.bytes_in_use -= size;
    stats_.bytes_cached += size;
  }
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Make(
    std::shared_ptr<CachingAllocator> allocator, size_t bytes) {
  auto ptr = allocator->Allocate(bytes);
  if (!ptr.ok()) return ptr.status();
  DeviceBuffer buffer;
  buffer.allocator_ = std::move(allocator);
  buffer.data_ = *ptr;
  buffer.size_ = bytes;
  return buffer;
}

absl::Status DeviceBuffer::Reserve(
    const std::shared_ptr<CachingAllocator>& allocator, size_t bytes) {
  if (data_ != nullptr && bytes <= size_) return absl::OkStatus();
  Reset();
  auto fresh = Make(allocator, bytes + bytes / 2);
  if (!fresh.ok()) return fresh.status();
  *this = std::move(*fresh);
  return absl::OkStatus();
}

}  // namespace duet::kernels::cuda
