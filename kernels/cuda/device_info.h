// CUDA device discovery, used at start-up to choose a backend, and the
// device's measured copy bandwidth, the floor benchmarks print against.
// Plain C++ header: no CUDA types leak to callers.
#ifndef DUET_KERNELS_CUDA_DEVICE_INFO_H_
#define DUET_KERNELS_CUDA_DEVICE_INFO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace duet::kernels::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  size_t total_memory_bytes = 0;
  int multiprocessors = 0;
};

// Devices visible to this process. An empty list (not an error) when the
// machine has no GPU or no driver.
absl::StatusOr<std::vector<DeviceInfo>> ListDevices();

struct DeviceMemory {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
};

// Free and total memory of `device` now (cudaMemGetInfo; the current device
// is left as it was). Free memory counts every process on the device.
absl::StatusOr<DeviceMemory> QueryDeviceMemory(int device);

// Device-to-device copy bandwidth of `device` (the current device is left
// as it was), bytes read + written per second: 20 copies of 1 GiB after 3
// warm-up copies, timed with CUDA events.
absl::StatusOr<double> MeasureCopyBandwidth(int device);

}  // namespace duet::kernels::cuda

#endif  // DUET_KERNELS_CUDA_DEVICE_INFO_H_
