#include "kernels/cuda/kv_copy_queue.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/cuda_utils.h"
#include "kernels/cuda/kv_block_transfer.h"

namespace duet::kernels::cuda {
namespace {

class CudaMark final : public StreamMark {
 public:
  CudaMark(int device, CudaEvent event)
      : device_(device), event_(std::move(event)) {}
  absl::Status Wait(absl::Time deadline) const override {
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    cudaEvent_t e = event_.get();
    return PollUntil([e] { return cudaEventQuery(e); }, deadline,
                     "the forward pass that writes the KV");
  }
  int device() const { return device_; }
  cudaEvent_t event() const { return event_.get(); }

 private:
  const int device_;
  CudaEvent event_;
};

class CudaKvCopyQueue final : public KvCopyQueue {
 public:
  explicit CudaKvCopyQueue(int device) : device_(device) {}
  ~CudaKvCopyQueue() override {
    ScopedDevice guard(device_);
    // The buffers below must not be freed under a queued copy.
    if (stream_.get() != nullptr) (void)cudaStreamSynchronize(stream_.get());
  }

  absl::Status Init(std::shared_ptr<CachingAllocator> allocator) {
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    // High priority: the queue's small kernels (pool copy, gather) get SMs
    // as soon as any free up instead of waiting behind a prefill pass's
    // whole grid, so a layer's KV leaves while later layers compute.
    DUET_RETURN_IF_ERROR(stream_.CreateHighPriority());
    return blocks_.Init(std::move(allocator));
  }

  absl::Status After(std::shared_ptr<const StreamMark> mark) override {
    const auto* m = dynamic_cast<const CudaMark*>(mark.get());
    if (m == nullptr || m->device() != device_) {
      return absl::InvalidArgumentError(
          "KV copy queue: the mark is not from this CUDA device's backend");
    }
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_.get(), m->event()));
    // The event must live until the wait is done; the next copy's Finish
    // waits for the stream, so holding the last mark is enough.
    last_mark_ = std::move(mark);
    return absl::OkStatus();
  }

  absl::Status Gather(const KvBlockPool& pool, std::span<const int32_t> ids,
                      void* host, int64_t host_bytes,
                      absl::Time deadline) override {
    DUET_RETURN_IF_ERROR(CheckKvBlockCopy(pool, Device::kCuda, ids, host,
                                          host_bytes, /*unique_ids=*/false));
    DUET_RETURN_IF_ERROR(KvBlockTransfer::CheckAlignment(pool));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return blocks_.Gather(pool, ids, host, stream_.get(), deadline);
  }

  absl::Status Copy(const KvBlockPool& src, std::span<const int32_t> src_ids,
                    const KvBlockPool& dst, std::span<const int32_t> dst_ids,
                    absl::Time deadline) override {
    DUET_RETURN_IF_ERROR(
        CheckKvPoolCopy(src, src_ids, dst, dst_ids, Device::kCuda));
    DUET_RETURN_IF_ERROR(KvBlockTransfer::CheckAlignment(src));
    DUET_RETURN_IF_ERROR(KvBlockTransfer::CheckAlignment(dst));
    ScopedDevice guard(device_);
    DUET_CUDA_RETURN_IF_ERROR(guard.status());
    return blocks_.CopyBetweenPools(src, src_ids, dst, dst_ids, stream_.get(),
                                    deadline);
  }

 private:
  const int device_;
  CudaStream stream_;
  KvBlockTransfer blocks_;  // after stream_: destroyed first
  std::shared_ptr<const StreamMark> last_mark_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const StreamMark>> RecordMark(
    int device, cudaStream_t stream) {
  ScopedDevice guard(device);
  DUET_CUDA_RETURN_IF_ERROR(guard.status());
  CudaEvent event;
  DUET_RETURN_IF_ERROR(event.Create());
  DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(event.get(), stream));
  return std::shared_ptr<const StreamMark>(
      std::make_shared<CudaMark>(device, std::move(event)));
}

absl::StatusOr<std::unique_ptr<KvCopyQueue>> MakeKvCopyQueue(
    int device, std::shared_ptr<CachingAllocator> allocator) {
  auto q = std::make_unique<CudaKvCopyQueue>(device);
  DUET_RETURN_IF_ERROR(q->Init(std::move(allocator)));
  return std::unique_ptr<KvCopyQueue>(std::move(q));
}

}  // namespace duet::kernels::cuda
