#include <cuda_runtime_api.h>

#include "absl/cleanup/cleanup.h"
#include "common/device_status.h"
#include "kernels/cuda/cuda_utils.h"
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

absl::StatusOr<DeviceMemory> QueryDeviceMemory(int device) {
  ScopedDevice guard(device);
  DUET_CUDA_RETURN_IF_ERROR(guard.status());
  DeviceMemory m;
  DUET_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&m.free_bytes, &m.total_bytes));
  return m;
}

absl::StatusOr<double> MeasureCopyBandwidth(int device) {
  ScopedDevice guard(device);
  DUET_CUDA_RETURN_IF_ERROR(guard.status());
  const size_t n = size_t{1} << 30;
  void* a = nullptr;
  void* b = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  absl::Cleanup release = [&] {
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    (void)cudaFree(a);
    (void)cudaFree(b);
  };
  DUET_CUDA_RETURN_IF_ERROR(cudaMalloc(&a, n));
  DUET_CUDA_RETURN_IF_ERROR(cudaMalloc(&b, n));
  DUET_CUDA_RETURN_IF_ERROR(cudaMemset(a, 1, n));
  DUET_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  DUET_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) {
    DUET_CUDA_RETURN_IF_ERROR(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  }
  constexpr int kIters = 20;
  DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(start));
  for (int i = 0; i < kIters; ++i) {
    DUET_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
  }
  DUET_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop));
  DUET_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
  float ms = 0;
  DUET_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
  return 2.0 * n * kIters / (ms * 1e-3);
}

}  // namespace duet::kernels::cuda
