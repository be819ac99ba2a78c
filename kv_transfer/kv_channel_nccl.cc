// The channel transport's communicators over NCCL (built with
// DUET_WITH_NCCL; kv_channel_nccl_disabled.cc otherwise).
#include "kernels/cuda/nccl_communicator.h"
#include "kv_transfer/kv_channel.h"

namespace duet::kv_transfer {
namespace {

class NcclFactory final : public CommunicatorFactory {
 public:
  explicit NcclFactory(int device) : device_(device) {}

  absl::StatusOr<std::string> NewId() override {
    return kernels::NewNcclUniqueId();
  }

  absl::StatusOr<std::unique_ptr<kernels::Communicator>> Join(
      const std::string& id, int rank, absl::Duration timeout) override {
    kernels::NcclCommunicatorOptions o;
    o.rank = rank;
    o.size = 2;
    o.unique_id = id;
    o.device = device_;
    o.stream = nullptr;  // a stream of its own, beside the forward pass
    o.timeout = timeout;
    return kernels::CreateNcclCommunicator(o);
  }

 private:
  const int device_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<CommunicatorFactory>>
MakeNcclCommunicatorFactory(int device) {
  if (device < 0) {
    return absl::InvalidArgumentError(
        "--kv-transport nccl needs the cuda backend (a GPU KV pool)");
  }
  return std::shared_ptr<CommunicatorFactory>(new NcclFactory(device));
}

}  // namespace duet::kv_transfer
