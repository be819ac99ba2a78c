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
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "model/tp_ranks.h"

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

// `tp_size` backends for a tensor-parallel model: on CUDA one per device,
// request.device .. request.device + tp_size - 1; on the CPU tp_size CPU
// backends. UNAVAILABLE when fewer devices are visible.
absl::StatusOr<std::vector<BackendChoice>> MakeBackends(
    const BackendRequest& request, int32_t tp_size);

// Loads `model_dir` over `backends` (one rank each) with the matching
// communicators: threads of this process on the CPU, NCCL on CUDA (built
// with NCCL; UNAVAILABLE otherwise). Every collective is bounded by
// `comm_timeout`.
absl::StatusOr<model::TpRanks> LoadModelRanks(
    const std::string& model_dir, std::vector<BackendChoice>& backends,
    absl::Duration comm_timeout = absl::Seconds(60));

}  // namespace duet::runtime

#endif  // DUET_RUNTIME_BACKEND_FACTORY_H_
