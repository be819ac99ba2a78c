#include "kernels/cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/device_status.h"
#include "common/logging.h"
#include "common/status.h"

namespace duet::kernels {
namespace {

// NCCL is loaded when the first communicator is made, not linked: NCCL is
// not part of every CUDA install (PyTorch images ship their own copy), and
// a node that never runs tensor parallelism on CUDA must start without it.
// nccl.h gives the types; these are the entry points used.
struct NcclApi {
  decltype(&ncclGetErrorString) GetErrorString;
  decltype(&ncclGetUniqueId) GetUniqueId;
  decltype(&ncclCommInitRankConfig) CommInitRankConfig;
  decltype(&ncclCommGetAsyncError) CommGetAsyncError;
  decltype(&ncclCommFinalize) CommFinalize;
  decltype(&ncclCommDestroy) CommDestroy;
  decltype(&ncclCommAbort) CommAbort;
  decltype(&ncclAllReduce) AllReduce;
  decltype(&ncclSend) Send;
  decltype(&ncclRecv) Recv;
  decltype(&ncclGroupStart) GroupStart;
  decltype(&ncclGroupEnd) GroupEnd;
};

absl::StatusOr<const NcclApi*> Nccl() {
  static const absl::StatusOr<NcclApi>* api = [] {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      return new absl::StatusOr<NcclApi>(absl::UnavailableError(absl::StrCat(
          "NCCL is needed for tensor parallelism on CUDA and could not be "
          "loaded (",
          dlerror(), "); put libnccl.so.2 on LD_LIBRARY_PATH")));
    }
    NcclApi a;
    bool ok = true;
    auto load = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
          dlsym(lib, name));
      ok = ok && fn != nullptr;
    };
    load(a.GetErrorString, "ncclGetErrorString");
    load(a.GetUniqueId, "ncclGetUniqueId");
    load(a.CommInitRankConfig, "ncclCommInitRankConfig");
    load(a.CommGetAsyncError, "ncclCommGetAsyncError");
    load(a.CommFinalize, "ncclCommFinalize");
    load(a.CommDestroy, "ncclCommDestroy");
    load(a.CommAbort, "ncclCommAbort");
    load(a.AllReduce, "ncclAllReduce");
    load(a.Send, "ncclSend");
    load(a.Recv, "ncclRecv");
    load(a.GroupStart, "ncclGroupStart");
    load(a.GroupEnd, "ncclGroupEnd");
    if (!ok) {
      return new absl::StatusOr<NcclApi>(absl::UnavailableError(
          "libnccl.so.2 lacks an entry point duet needs (NCCL >= 2.19)"));
    }
    return new absl::StatusOr<NcclApi>(a);
  }();
  if (!api->ok()) return api->status();
  return &**api;
}

// Only called once Nccl() succeeded.
const NcclApi& Api() { return **Nccl(); }

absl::Status NcclError(ncclResult_t rc, absl::string_view what) {
  return DeviceErrorToStatus(DeviceLib::kNccl, static_cast<int>(rc),
                             Api().GetErrorString(rc), what, __FILE__,
                             __LINE__);
}

// Polls a non-blocking communicator until its last call is no longer in
// progress. Short sleeps: collectives on the step's critical path end in
// microseconds, a missing peer is what the deadline is for.
absl::Status AwaitComm(ncclComm_t comm, absl::Time deadline,
                       absl::string_view what) {
  int spins = 0;
  while (true) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t rc = Api().CommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) return NcclError(rc, what);
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclError(state, what);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": NCCL still in progress at the deadline"));
    }
    if (++spins > 1000) absl::SleepFor(absl::Microseconds(50));
  }
}

ncclDataType_t NcclType(DType t) {
  return t == DType::kBF16 ? ncclBfloat16 : ncclFloat32;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, const NcclCommunicatorOptions& o,
                   cudaStream_t owned_stream)
      : comm_(comm),
        rank_(o.rank),
        size_(o.size),
        device_(o.device),
        stream_(owned_stream != nullptr ? owned_stream
                                        : static_cast<cudaStream_t>(o.stream)),
        owned_stream_(owned_stream),
        timeout_(o.timeout) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    Release();
    if (owned_stream_ != nullptr) {
      (void)cudaStreamSynchronize(owned_stream_);
      (void)cudaStreamDestroy(owned_stream_);
    }
  }

  // Finalize flushes this rank's outstanding operations; a peer that
  // vanished makes it time out, and then the communicator is aborted. An
  // aborted communicator was freed by ncclCommAbort already.
  void Release() {
    if (aborted_.exchange(true)) return;
    const ncclResult_t rc = Api().CommFinalize(comm_);
    if ((rc == ncclSuccess || rc == ncclInProgress) &&
        AwaitComm(comm_, absl::Now() + timeout_, "ncclCommFinalize").ok()) {
      Api().CommDestroy(comm_);
      return;
    }
    DUET_LOG(WARNING) << "NCCL rank " << rank_
                      << ": finalize failed or timed out; aborting";
    Api().CommAbort(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(TensorView buf) override {
    if (absl::Status s = Check(buf, "AllReduceSum"); !s.ok()) return s;
    if (buf.dtype != DType::kF32 && buf.dtype != DType::kBF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllReduceSum: dtype ", DTypeName(buf.dtype), " (f32 or bf16)"));
    }
    return Issue(
        Api().AllReduce(buf.data, buf.data, static_cast<size_t>(buf.numel()),
                        NcclType(buf.dtype), ncclSum, comm_, stream_),
        "ncclAllReduce");
  }

  absl::Status Send(TensorView buf, int peer) override {
    if (absl::Status s = CheckPeer(buf, peer, "Send"); !s.ok()) return s;
    return Issue(
        Api().Send(buf.data, buf.nbytes(), ncclUint8, peer, comm_, stream_),
        "ncclSend");
  }

  absl::Status Recv(TensorView buf, int peer) override {
    if (absl::Status s = CheckPeer(buf, peer, "Recv"); !s.ok()) return s;
    return Issue(
        Api().Recv(buf.data, buf.nbytes(), ncclUint8, peer, comm_, stream_),
        "ncclRecv");
  }

  void GroupStart() override {
    Api().GroupStart();
    in_group_ = true;
  }

  absl::Status GroupEnd() override {
    in_group_ = false;
    return Issue(Api().GroupEnd(), "ncclGroupEnd");
  }

  absl::Status Wait(absl::Duration timeout) override {
    if (aborted_.load()) return Aborted();
    const absl::Time deadline = absl::Now() + timeout;
    int spins = 0;
    while (true) {
      const cudaError_t q = cudaStreamQuery(stream_);
      // A peer's failure shows up as the communicator's async error.
      ncclResult_t state = ncclSuccess;
      Api().CommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        Abort();
        return NcclError(state, "NCCL operation");
      }
      if (q == cudaSuccess) return absl::OkStatus();
      if (q != cudaErrorNotReady) {
        Abort();
        DUET_CUDA_RETURN_IF_ERROR(q);
      }
      if (aborted_.load()) return Aborted();
      if (absl::Now() >= deadline) {
        Abort();
        return absl::DeadlineExceededError(absl::StrCat(
            "NCCL rank ", rank_, " of ", size_, ": operations not done within ",
            absl::FormatDuration(timeout), "; the communicator is aborted"));
      }
      if (++spins > 1000) absl::SleepFor(absl::Microseconds(50));
    }
  }

  void Abort() override {
    if (!aborted_.exchange(true)) {
      // ncclCommAbort may be called from another thread to stop a rank
      // blocked in NCCL; it frees the communicator's resources, and the
      // destructor does not touch it again.
      cudaSetDevice(device_);
      Api().CommAbort(comm_);
    }
  }

  bool aborted() const override { return aborted_.load(); }

 private:
  static absl::Status Aborted() {
    return absl::AbortedError("NCCL communicator aborted");
  }

  absl::Status Check(const TensorView& buf, absl::string_view what) const {
    if (aborted_.load()) return Aborted();
    if (buf.device != Device::kCuda) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": NCCL takes device buffers"));
    }
    if (buf.numel() > 0 && buf.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": null buffer"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckPeer(const TensorView& buf, int peer,
                         absl::string_view what) const {
    if (absl::Status s = Check(buf, what); !s.ok()) return s;
    if (peer < 0 || peer >= size_) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": peer ", peer, " is outside [0, ", size_, ")"));
    }
    return absl::OkStatus();
  }

  // A call on a non-blocking communicator: inside a group, NCCL defers the
  // work to ncclGroupEnd; otherwise wait until it is enqueued.
  absl::Status Issue(ncclResult_t rc, absl::string_view what) {
    if (rc != ncclSuccess && rc != ncclInProgress) {
      Abort();
      return NcclError(rc, what);
    }
    if (in_group_) return absl::OkStatus();
    absl::Status s = AwaitComm(comm_, absl::Now() + timeout_, what);
    if (!s.ok()) Abort();
    return s;
  }

  ncclComm_t comm_;
  const int rank_;
  const int size_;
  const int device_;
  cudaStream_t stream_;
  cudaStream_t owned_stream_;
  const absl::Duration timeout_;
  bool in_group_ = false;
  std::atomic<bool> aborted_{false};
};

}  // namespace

absl::StatusOr<std::string> NewNcclUniqueId() {
  static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes);
  DUET_ASSIGN_OR_RETURN(const NcclApi* nccl, Nccl());
  ncclUniqueId id;
  if (const ncclResult_t rc = nccl->GetUniqueId(&id); rc != ncclSuccess) {
    return NcclError(rc, "ncclGetUniqueId");
  }
  return std::string(id.internal, sizeof(id.internal));
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(
    const NcclCommunicatorOptions& o) {
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL communicator: rank ", o.rank, " of size ", o.size));
  }
  if (o.unique_id.size() != kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL unique id of ", o.unique_id.size(),
                     " bytes (must be ", kNcclUniqueIdBytes, ")"));
  }
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("NCCL communicator timeout must be > 0");
  }
  DUET_RETURN_IF_ERROR(Nccl().status());
  DUET_CUDA_RETURN_IF_ERROR(cudaSetDevice(o.device));
  cudaStream_t owned = nullptr;
  if (o.stream == nullptr) {
    DUET_CUDA_RETURN_IF_ERROR(
        cudaStreamCreateWithFlags(&owned, cudaStreamNonBlocking));
  }
  auto destroy_owned = [&] {
    if (owned != nullptr) (void)cudaStreamDestroy(owned);
  };
  ncclUniqueId id;
  std::memcpy(id.internal, o.unique_id.data(), kNcclUniqueIdBytes);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t rc =
      Api().CommInitRankConfig(&comm, o.size, id, o.rank, &config);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    if (comm != nullptr) Api().CommAbort(comm);
    destroy_owned();
    return NcclError(rc, "ncclCommInitRankConfig");
  }
  if (absl::Status s =
          AwaitComm(comm, absl::Now() + o.timeout,
                    absl::StrCat("NCCL init of rank ", o.rank, " of ", o.size));
      !s.ok()) {
    Api().CommAbort(comm);
    destroy_owned();
    return s;
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, o, owned));
}

}  // namespace duet::kernels
