// Builds without CUDA: the CUDA IPC transport reports itself unavailable.
#include "kv_transfer/cuda_ipc.h"

namespace duet::kv_transfer {

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeCudaIpcReceiver(
    const KvPoolView&, int) {
  return absl::UnimplementedError(
      "CUDA IPC KV transport: this build has no CUDA (DUET_WITH_CUDA=OFF)");
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeCudaIpcSender(const KvPoolView&,
                                                            kernels::Backend*,
                                                            int) {
  return absl::UnimplementedError(
      "CUDA IPC KV transport: this build has no CUDA (DUET_WITH_CUDA=OFF)");
}

}  // namespace duet::kv_transfer
