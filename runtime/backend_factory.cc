#include "runtime/backend_factory.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_communicator.h"
#ifdef DUET_HAVE_NCCL
#include "kernels/cuda/nccl_communicator.h"
#endif
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

absl::StatusOr<std::vector<BackendChoice>> MakeBackends(
    const BackendRequest& request, int32_t tp_size) {
  if (tp_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tensor-parallel-size must be >= 1, got ", tp_size));
  }
  std::vector<BackendChoice> out;
  for (int32_t r = 0; r < tp_size; ++r) {
    BackendRequest one = request;
    one.device = request.device + r;
    if (r > 0 && out[0].device < 0) one.kind = "cpu";  // follow rank 0
    absl::StatusOr<BackendChoice> b = MakeBackend(one);
    if (!b.ok()) {
      return absl::Status(
          b.status().code(),
          absl::StrCat("tensor-parallel rank ", r, " of ", tp_size, ": ",
                       b.status().message()));
    }
    out.push_back(std::move(*b));
  }
  return out;
}

absl::StatusOr<model::TpRanks> LoadModelRanks(
    const std::string& model_dir, std::vector<BackendChoice>& backends,
    absl::Duration comm_timeout) {
  const int n = static_cast<int>(backends.size());
  const bool gpu = n > 0 && backends[0].device >= 0;
  std::vector<std::unique_ptr<kernels::Backend>> raw;
  for (BackendChoice& b : backends) raw.push_back(std::move(b.backend));
  model::CommunicatorFactory make_comm;
  std::vector<std::unique_ptr<kernels::Communicator>> cpu_comms;
  std::string nccl_id;
  if (n > 1 && !gpu) {
    DUET_ASSIGN_OR_RETURN(cpu_comms,
                          kernels::CreateCpuCommunicators(n, comm_timeout));
    make_comm = [&](int r, kernels::Backend&)
        -> absl::StatusOr<std::unique_ptr<kernels::Communicator>> {
      return std::move(cpu_comms[static_cast<size_t>(r)]);
    };
  } else if (n > 1) {
#ifdef DUET_HAVE_NCCL
    DUET_ASSIGN_OR_RETURN(nccl_id, kernels::NewNcclUniqueId());
    make_comm = [&](int r, kernels::Backend& backend)
        -> absl::StatusOr<std::unique_ptr<kernels::Communicator>> {
      kernels::NcclCommunicatorOptions o;
      o.rank = r;
      o.size = n;
      o.unique_id = nccl_id;
      o.device = backends[static_cast<size_t>(r)].device;
      o.stream = backend.native_stream();
      o.timeout = comm_timeout;
      return kernels::CreateNcclCommunicator(o);
    };
#else
    return absl::UnavailableError(
        "tensor parallelism on CUDA needs NCCL (this build has "
        "DUET_WITH_NCCL=OFF)");
#endif
  }
  return model::LoadTpRanks(model_dir, std::move(raw), make_comm);
}

}  // namespace duet::runtime
