// Picks and creates the backend a node or tool runs on: `--backend
// auto|cpu|cuda` and `--device N`. auto takes CUDA device N when the build
// has CUDA and a GPU is visible, else the CPU reference; the choice is
// described in one line for the log.
#ifndef DUET_RUNTIME_BACKEND_FACTORY_H_
#define DUET_RUNTIME_BACKEND_FACTORY_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace duet::runtime {

struct BackendRequest {
  std::string kind = "auto";  // auto | cpu | cuda
  int32_t device = 0;         // CUDA device index
};

struct BackendChoice {
  std::unique_ptr<kernels::Backend> backend;
  // CUDA device index, -1 on the CPU backend.
  int32_t device = -1;
  // "gpu 0: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB): CUDA backend, bf16" or
  // "no GPU found: CPU reference backend, fp32".
  std::string description;
  // Device memory in all (0 on the CPU): what --kv-cache-memory-fraction
  // is a share of.
  size_t total_bytes = 0;
};

// InvalidArgument for an unknown kind or a negative device; UNAVAILABLE for
// cuda without CUDA in the build, without a GPU, or with a device index
// past the visible ones (the message lists how many there are).
absl::StatusOr<BackendChoice> MakeBackend(const BackendRequest& request);

// Free device memory now (0 on the CPU backend).
absl::StatusOr<size_t> FreeDeviceMemory(const BackendChoice& choice);

}  // namespace duet::runtime

#endif  // DUET_RUNTIME_BACKEND_FACTORY_H_
