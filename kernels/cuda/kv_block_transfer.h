// Internal to kernels/cuda: whole KV blocks between the paged cache and host
// memory (Backend::GatherKvBlocks / ScatterKvBlocks, for KV transfer
// staging).
//
// Gather: one kernel packs the blocks of every layer into a device scratch
// buffer, then one cudaMemcpyAsync moves it to the host; scatter mirrors
// it. Copying each block separately would be ~100x slower (DESIGN.md §4).
// A kernel writing mapped pinned memory directly would save the scratch
// buffer but hold SMs for the whole PCIe transfer, stealing them from the
// decode steps that share the GPU; the copy engine moves the bytes without
// them, and the packing kernel runs at HBM speed (~1% of the PCIe time).
// Transfers larger than kChunkBytes go in chunks through one scratch buffer
// of that size, so landing a long prompt never needs its whole KV twice in
// device memory.
#ifndef DUET_KERNELS_CUDA_KV_BLOCK_TRANSFER_H_
#define DUET_KERNELS_CUDA_KV_BLOCK_TRANSFER_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_utils.h"

namespace duet::kernels::cuda {

class KvBlockTransfer {
 public:
  static constexpr int64_t kChunkBytes = int64_t{64} << 20;
  // A gather whose runs of consecutive ids average at least this many bytes
  // goes through the copy engine instead of the packing kernel: copies of
  // that size run near PCIe speed, and they need no SM, so a gather queued
  // beside a prefill pass (the KV sender's) is not starved by its kernels.
  // Scattered ids (short runs) keep the kernel: per-block copies are ~5x
  // slower (DESIGN.md §4).
  static constexpr int64_t kCopyEngineRunBytes = int64_t{512} << 10;

  KvBlockTransfer() = default;
  KvBlockTransfer(const KvBlockTransfer&) = delete;
  KvBlockTransfer& operator=(const KvBlockTransfer&) = delete;

  absl::Status Init(std::shared_ptr<CachingAllocator> allocator);

  // Arguments validated by the caller (CheckKvBlockCopy) and block_bytes a
  // multiple of 16 with 16-byte aligned bases (CheckAlignment). Gather
  // returns once `host` holds the blocks; Scatter once `host` has been read.
  // Each call returns DEADLINE_EXCEEDED when `stream` has not finished it by
  // `deadline`; the next call then first waits for `stream` to drain
  // (within its own deadline) before it reuses the metadata buffers.
  absl::Status Gather(const KvBlockPool& pool, std::span<const int32_t> ids,
                      void* host, cudaStream_t stream,
                      absl::Time deadline = absl::InfiniteFuture());
  absl::Status Scatter(const void* host, std::span<const int32_t> ids,
                       const KvBlockPool& pool, cudaStream_t stream,
                       absl::Time deadline = absl::InfiniteFuture());

  // Block src_ids[i] of every layer of `src` into block dst_ids[i] of
  // `dst` (validated by the caller: CheckKvPoolCopy), one kernel; returns
  // once the copy is done.
  absl::Status CopyBetweenPools(const KvBlockPool& src,
                                std::span<const int32_t> src_ids,
                                const KvBlockPool& dst,
                                std::span<const int32_t> dst_ids,
                                cudaStream_t stream,
                                absl::Time deadline = absl::InfiniteFuture());

  // InvalidArgument unless the kernel's 16-byte accesses fit the pool.
  static absl::Status CheckAlignment(const KvBlockPool& pool);

 private:
  // Gathers through the copy engine, one cudaMemcpyAsync per (layer, run of
  // consecutive ids), when the runs are long (see kCopyEngineRunBytes);
  // false when they are not (the kernel path then runs).
  absl::StatusOr<bool> GatherByRuns(const KvBlockPool& pool,
                                    std::span<const int32_t> ids, char* host,
                                    cudaStream_t stream);
  // Uploads the layer bases and ids the kernels read; returns the ids'
  // offset in metadata_ (the bases are at 0).
  absl::StatusOr<size_t> UploadMetadata(const KvBlockPool& pool,
                                        std::span<const int32_t> ids,
                                        cudaStream_t stream);
  absl::Status Run(bool gather, const KvBlockPool& pool,
                   std::span<const int32_t> ids, char* host,
                   cudaStream_t stream);

  // Waits for `stream` to finish what this object queued; see Gather.
  absl::Status Drain(cudaStream_t stream, absl::Time deadline);
  absl::Status Finish(absl::Status queued, cudaStream_t stream,
                      absl::Time deadline);

  std::shared_ptr<CachingAllocator> allocator_;
  // A call gave up at its deadline with work still queued.
  bool pending_ = false;
  // Reused by the next call only: every call waits before it returns until
  // the copies that read these are done.
  PinnedBuffer metadata_host_;
  DeviceBuffer metadata_;
  DeviceBuffer scratch_;
};

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_KV_BLOCK_TRANSFER_H_
