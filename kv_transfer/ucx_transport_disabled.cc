// Built instead of the UCX transport when DUET_WITH_UCX is OFF, so nodes call
// the same factories and get a clear error instead of a link failure.
#include "kv_transfer/ucx_transport.h"

namespace duet::kv_transfer {
namespace {

absl::Status Disabled() {
  return absl::UnimplementedError(
      "duet was built without UCX (DUET_WITH_UCX=OFF); use the in-process "
      "transport or rebuild with UCX");
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeUcxReceiver(
    const KvPoolView& /*pool*/, const UcxOptions& /*options*/,
    kernels::Backend* /*backend*/) {
  return Disabled();
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeUcxSender(
    const KvPoolView& /*local*/, const UcxOptions& /*options*/,
    kernels::Backend* /*backend*/) {
  return Disabled();
}

}  // namespace duet::kv_transfer
