// CUDA IPC KV transport, for a prefill and a decode node on one host (the
// same GPU, or GPUs with peer access): the decode node exports one IPC
// handle per layer of its pool in every descriptor; the prefill node opens
// them once per peer and writes the blocks straight into the decode node's
// pool with one copy kernel over all layers and blocks
// (the copy kernel of Backend::CopyKvBlocks, on a copy queue of its own), so
// a handover moves at device-copy speed instead of through host staging and
// a network stack. Send returns once the kernel is done, so the bytes are in
// the decode node's pool; Land has nothing to move.
//
// Both ends are chosen explicitly (--kv-transport cuda-ipc on both nodes).
// A descriptor from another host (boot id) is refused before any handle is
// opened. No CUDA type appears here.
#ifndef DUET_KV_TRANSFER_CUDA_IPC_H_
#define DUET_KV_TRANSFER_CUDA_IPC_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kernels {
class Backend;
}  // namespace duet::kernels

namespace duet::kv_transfer {

// This host's identity for CUDA IPC: the kernel's boot id, which two
// processes (or containers) see alike only on the same machine.
std::string LocalHostId();

// InvalidArgument unless `desc` is a CUDA IPC descriptor whose per-layer
// handles are 64 bytes each, one per layer of `layout`, and whose GPU UUID
// is 16 bytes; FailedPrecondition when it comes from another host than
// `host_id`. Transport-independent checks (layout, ids) are ValidateSend's.
absl::Status CheckCudaIpcDescriptor(const KvDescriptor& desc,
                                    const KvLayout& layout,
                                    const std::string& host_id);

// A receiver over `pool` (GPU memory of CUDA device `device`, whose layer
// bases are whole cudaMalloc allocations, as the CUDA backend's caching
// allocator hands them out). InvalidArgument for a host pool;
// UNIMPLEMENTED without CUDA in the build.
absl::StatusOr<std::unique_ptr<KvReceiver>> MakeCudaIpcReceiver(
    const KvPoolView& pool, int device);

// A sender from `local` (GPU memory of `backend`, on CUDA device `device`).
// Mappings are cached per receiver (at most a few; the oldest is closed
// first). Copies run on the sender's own copy queue (from `backend`), after
// the send's ready mark: any thread may send while the loop computes.
absl::StatusOr<std::unique_ptr<KvSender>> MakeCudaIpcSender(
    const KvPoolView& local, kernels::Backend* backend, int device);

}  // namespace duet::kv_transfer

#endif  // DUET_KV_TRANSFER_CUDA_IPC_H_
