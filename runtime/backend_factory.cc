#include "runtime/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef DUET_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#endif

namespace duet::runtime {

absl::StatusOr<BackendChoice> MakeBackend(const BackendRequest& request) {
  const std::string& kind = request.kind;
  if (kind != "auto" && kind != "cpu" && kind != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--backend must be auto, cpu or cuda, got '", kind, "'"));
  }
  if (request.device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be >= 0, got ", request.device));
  }
  BackendChoice choice;
#ifdef DUET_HAVE_CUDA
  if (kind != "cpu") {
    DUET_ASSIGN_OR_RETURN(auto devices, kernels::cuda::ListDevices());
    const int n = static_cast<int>(devices.size());
    if (request.device < n) {
      const auto& d = devices[request.device];
      DUET_ASSIGN_OR_RETURN(choice.backend,
                            kernels::MakeCudaBackend(request.device));
      choice.device = request.device;
      DUET_ASSIGN_OR_RETURN(auto mem,
                            kernels::cuda::QueryDeviceMemory(request.device));
      choice.total_bytes = mem.total_bytes;
      choice.description = absl::StrFormat(
          "gpu %d: %s (sm_%d%d, %.1f GiB, %.1f GiB free): CUDA backend, bf16",
          d.index, d.name, d.sm_major, d.sm_minor,
          d.total_memory_bytes / double(1 << 30),
          mem.free_bytes / double(1 << 30));
      return choice;
    }
    if (kind == "cuda" || n > 0) {
      // auto with GPUs present but a bad index is a mistake, not a reason
      // to fall back to the (much slower) CPU silently.
      return absl::UnavailableError(absl::StrCat(
          "--device ", request.device, ": ", n,
          n == 1 ? " CUDA device is" : " CUDA devices are", " visible"));
    }
  }
#else
  if (kind == "cuda") {
    return absl::UnavailableError(
        "--backend cuda: this build has no CUDA (DUET_WITH_CUDA=OFF)");
  }
#endif
  choice.backend = kernels::MakeCpuBackend();
  choice.description =
      absl::StrCat(kind == "cpu" ? "--backend cpu" : "no GPU found",
                   ": CPU reference backend, fp32");
  return choice;
}

absl::StatusOr<size_t> FreeDeviceMemory(const BackendChoice& choice) {
#ifdef DUET_HAVE_CUDA
  if (choice.device >= 0) {
    DUET_ASSIGN_OR_RETURN(auto mem,
                          kernels::cuda::QueryDeviceMemory(choice.device));
    return mem.free_bytes;
  }
#endif
  return size_t{0};
}

}  // namespace duet::runtime
