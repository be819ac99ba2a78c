// Internal to kernels/cuda: stream marks and the KV copy queue of the CUDA
// backend (kernels/backend.h StreamMark, KvCopyQueue).
//
// A mark is an event recorded on the backend's stream. The queue has its
// own non-blocking stream and its own KvBlockTransfer (metadata and scratch
// buffers), so the sender thread never touches the backend's state; After
// queues a wait on a mark's event, so a layer's copy starts on the GPU the
// moment that layer's KV is written, with no host round trip between.
#ifndef DUET_KERNELS_CUDA_KV_COPY_QUEUE_H_
#define DUET_KERNELS_CUDA_KV_COPY_QUEUE_H_

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/allocator.h"

namespace duet::kernels::cuda {

// An event recorded on `stream` of `device` now.
absl::StatusOr<std::shared_ptr<const StreamMark>> RecordMark(
    int device, cudaStream_t stream);

absl::StatusOr<std::unique_ptr<KvCopyQueue>> MakeKvCopyQueue(
    int device, std::shared_ptr<CachingAllocator> allocator);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_KV_COPY_QUEUE_H_
