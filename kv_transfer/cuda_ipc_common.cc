// The parts of the CUDA IPC transport that need no CUDA: host identity and
// descriptor checks (so they are tested on machines without a GPU).
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kv_transfer/cuda_ipc.h"

namespace duet::kv_transfer {

std::string LocalHostId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::stringstream id;
  id << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(id.str()));
}

absl::Status CheckCudaIpcDescriptor(const KvDescriptor& desc,
                                    const KvLayout& layout,
                                    const std::string& host_id) {
  if (desc.transport != Transport::kCudaIpc) {
    return absl::InvalidArgumentError(
        "KV descriptor is not for CUDA IPC (the decode node runs another "
        "--kv-transport)");
  }
  if (desc.cuda_ipc_handles.size() != static_cast<size_t>(layout.num_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA IPC descriptor has ", desc.cuda_ipc_handles.size(),
                     " handles for ", layout.num_layers, " layers"));
  }
  for (size_t l = 0; l < desc.cuda_ipc_handles.size(); ++l) {
    if (desc.cuda_ipc_handles[l].size() != 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("CUDA IPC descriptor: handle of layer ", l, " has ",
                       desc.cuda_ipc_handles[l].size(), " bytes, not 64"));
    }
  }
  if (desc.gpu_uuid.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA IPC descriptor: GPU UUID has ", desc.gpu_uuid.size(),
                     " bytes, not 16"));
  }
  if (desc.host_id.empty() || desc.host_id != host_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA IPC descriptor is from another host (boot id '", desc.host_id,
        "', this host '", host_id,
        "'): CUDA IPC needs both nodes on one machine; run both with "
        "--kv-transport ucx"));
  }
  return absl::OkStatus();
}

}  // namespace duet::kv_transfer
