#include <cuda_runtime_api.h>

#include "common/device_status.h"
#include "kernels/cuda/device_info.h"

namespace duet::kernels::cuda {

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();  // clear the sticky-free error state
    return std::vector<DeviceInfo>{};
  }
  DUET_CUDA_RETURN_IF_ERROR(rc);
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    DUET_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, i));
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor,
                                 prop.totalGlobalMem,
                                 prop.multiProcessorCount});
  }
  return devices;
}

}  // namespace duet::kernels::cuda
