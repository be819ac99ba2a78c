// Built instead of kv_channel_nccl.cc when DUET_WITH_NCCL is off.
#include "kv_transfer/kv_channel.h"

namespace duet::kv_transfer {

absl::StatusOr<std::shared_ptr<CommunicatorFactory>>
MakeNcclCommunicatorFactory(int device) {
  (void)device;
  return absl::UnimplementedError(
      "--kv-transport nccl: this build has no NCCL (configure with "
      "-DDUET_WITH_NCCL=ON, which needs CUDA)");
}

}  // namespace duet::kv_transfer
