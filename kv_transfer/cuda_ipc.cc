// CUDA IPC transport (see cuda_ipc.h).
#include "kv_transfer/cuda_ipc.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <deque>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/device_status.h"
#include "common/logging.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_utils.h"
#include "kv_transfer/copy_plan.h"

namespace duet::kv_transfer {
namespace {

// How many receivers' mappings a sender keeps open; the oldest closes first
// (a decode node that restarted exports new handles).
constexpr size_t kMaxMappedPeers = 8;
// A mapping unused this long is closed: its decode node may have exited,
// and an open mapping keeps that node's whole pool allocated on the GPU.
constexpr absl::Duration kIdleMappingClose = absl::Seconds(60);

absl::Status CudaError(cudaError_t rc, absl::string_view what) {
  return absl::Status(DeviceErrorCode(DeviceLib::kCuda, static_cast<int>(rc)),
                      absl::StrCat(what, ": ", cudaGetErrorString(rc)));
}

class CudaIpcReceiver final : public KvReceiver {
 public:
  CudaIpcReceiver(const KvPoolView& pool, std::vector<std::string> handles,
                  std::string host_id, std::string uuid)
      : pool_(pool),
        handles_(std::move(handles)),
        host_id_(std::move(host_id)),
        uuid_(std::move(uuid)) {}

  absl::StatusOr<KvDescriptor> Describe(
      uint64_t key, std::span<const int32_t> block_ids) override {
    DUET_RETURN_IF_ERROR(internal::ValidateDescribeIds(
        block_ids, pool_.num_blocks, "the CUDA IPC pool"));
    DUET_RETURN_IF_ERROR(keys_.Add(key));
    KvDescriptor d;
    d.transport = Transport::kCudaIpc;
    d.layout = pool_.layout;
    d.block_ids.assign(block_ids.begin(), block_ids.end());
    d.num_blocks = pool_.num_blocks;
    d.cuda_ipc_handles = handles_;
    d.host_id = host_id_;
    d.gpu_uuid = uuid_;
    return d;
  }
  // The sender wrote the pool itself.
  absl::Status Land(uint64_t key) override { return keys_.Land(key); }
  void Drop(uint64_t key) override { keys_.Drop(key); }

 private:
  const KvPoolView pool_;
  const std::vector<std::string> handles_;
  const std::string host_id_;
  const std::string uuid_;
  internal::DescribedKeys keys_;
};

// One receiver's pool layers mapped into this process.
struct Mapping {
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    kernels::cuda::ScopedDevice scope(device);
    for (void* p : layers) {
      if (p != nullptr) (void)cudaIpcCloseMemHandle(p);
    }
  }
  std::string key;  // the concatenated handles
  int device = 0;
  absl::Time last_used;
  std::vector<void*> layers;
};

class CudaIpcSender final : public KvSender {
 public:
  CudaIpcSender(const KvPoolView& local,
                std::unique_ptr<kernels::KvCopyQueue> queue, int device)
      : local_(local),
        device_(device),
        host_id_(LocalHostId()),
        queue_(std::move(queue)) {}

  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    DUET_RETURN_IF_ERROR(
        internal::ValidateSend(local_, dest, copies, Transport::kCudaIpc));
    DUET_RETURN_IF_ERROR(CheckCudaIpcDescriptor(dest, local_.layout, host_id_));
    DUET_ASSIGN_OR_RETURN(const auto range,
                          internal::ResolveLayers(local_.layout, layers));
    if (timeout <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          "KV transfer given no time (its deadline passed)");
    }
    if (copies.empty()) return absl::OkStatus();
    const absl::Time deadline = absl::Now() + timeout;
    absl::MutexLock lock(&mu_);
    DUET_ASSIGN_OR_RETURN(const Mapping* m, Map(dest));
    kernels::KvBlockPool src;
    src.layer_base = local_.layer_base;
    src.num_blocks = local_.num_blocks;
    src.block_bytes = local_.layout.block_bytes();
    src.device = Device::kCuda;
    kernels::KvBlockPool dst = src;
    dst.layer_base = m->layers;
    dst.num_blocks = dest.num_blocks;
    std::vector<int32_t> src_ids, dst_ids;
    src_ids.reserve(copies.size());
    dst_ids.reserve(copies.size());
    for (const BlockCopy& c : copies) {
      src_ids.push_back(c.src_block);
      dst_ids.push_back(dest.block_ids[static_cast<size_t>(c.logical_block)]);
    }
    if (ready != nullptr) DUET_RETURN_IF_ERROR(queue_->After(std::move(ready)));
    absl::Status s = queue_->Copy(
        internal::LayerSlice(src, range.first, range.second), src_ids,
        internal::LayerSlice(dst, range.first, range.second), dst_ids,
        deadline);
    if (s.code() == absl::StatusCode::kDeadlineExceeded) {
      return absl::DeadlineExceededError(absl::StrCat(
          "CUDA IPC KV copy of ", copies.size(), " blocks x ",
          range.second - range.first, " layers did not finish within ",
          absl::FormatDuration(timeout), " (", s.message(), ")"));
    }
    if (!s.ok()) {
      // The mapping may be what failed (its owner died): open it afresh
      // next time.
      Forget(m->key);
      return absl::Status(s.code(),
                          absl::StrCat("CUDA IPC KV copy: ", s.message()));
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<const Mapping*> Map(const KvDescriptor& dest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string key;
    for (const std::string& h : dest.cuda_ipc_handles) key += h;
    const absl::Time now = absl::Now();
    std::erase_if(mappings_, [&](const std::unique_ptr<Mapping>& m) {
      return m->key != key && now - m->last_used > kIdleMappingClose;
    });
    for (const auto& m : mappings_) {
      if (m->key == key) {
        m->last_used = now;
        return m.get();
      }
    }
    auto m = std::make_unique<Mapping>();
    m->key = key;
    m->device = device_;
    m->last_used = now;
    kernels::cuda::ScopedDevice scope(device_);
    if (scope.status() != cudaSuccess) {
      return CudaError(scope.status(), "CUDA IPC: selecting the device");
    }
    for (const std::string& h : dest.cuda_ipc_handles) {
      cudaIpcMemHandle_t handle;
      std::memcpy(&handle, h.data(), sizeof(handle));
      void* ptr = nullptr;
      const cudaError_t rc =
          cudaIpcOpenMemHandle(&ptr, handle, cudaIpcMemLazyEnablePeerAccess);
      if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        // The exporting process is gone or its GPU is not reachable from
        // here: the peer is unavailable, not the request malformed.
        return absl::UnavailableError(absl::StrCat(
            "CUDA IPC: opening the decode node's KV pool failed (",
            cudaGetErrorString(rc),
            "); the decode node exited, or its GPU is not visible to this "
            "process (CUDA_VISIBLE_DEVICES) or has no peer access"));
      }
      m->layers.push_back(ptr);
    }
    if (mappings_.size() >= kMaxMappedPeers) mappings_.pop_front();
    mappings_.push_back(std::move(m));
    return mappings_.back().get();
  }

  void Forget(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = mappings_.begin(); it != mappings_.end(); ++it) {
      if ((*it)->key == key) {
        mappings_.erase(it);
        return;
      }
    }
  }

  const KvPoolView local_;
  const int device_;
  const std::string host_id_;
  // One send at a time: the queue and the mappings are not thread-safe.
  absl::Mutex mu_;
  // Declared after the mappings: it waits for its copies when destroyed,
  // before the mappings they write close.
  std::deque<std::unique_ptr<Mapping>> mappings_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<kernels::KvCopyQueue> queue_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvReceiver>> MakeCudaIpcReceiver(
    const KvPoolView& pool, int device) {
  DUET_RETURN_IF_ERROR(internal::ValidatePool(pool, "CUDA IPC receiver pool"));
  if (pool.device != Device::kCuda) {
    return absl::InvalidArgumentError(
        "CUDA IPC KV transport needs a GPU pool (--backend cuda)");
  }
  kernels::cuda::ScopedDevice scope(device);
  if (scope.status() != cudaSuccess) {
    return CudaError(scope.status(), "CUDA IPC receiver: selecting the device");
  }
  std::vector<std::string> handles;
  for (void* base : pool.layer_base) {
    cudaIpcMemHandle_t h;
    const cudaError_t rc = cudaIpcGetMemHandle(&h, base);
    if (rc != cudaSuccess) {
      return CudaError(rc, "CUDA IPC receiver: exporting a KV pool layer");
    }
    handles.emplace_back(reinterpret_cast<const char*>(&h), sizeof(h));
  }
  cudaDeviceProp prop{};
  const cudaError_t rc = cudaGetDeviceProperties(&prop, device);
  if (rc != cudaSuccess) {
    return CudaError(rc, "CUDA IPC receiver: reading the device's UUID");
  }
  std::string uuid(reinterpret_cast<const char*>(&prop.uuid),
                   sizeof(prop.uuid));
  return std::unique_ptr<KvReceiver>(new CudaIpcReceiver(
      pool, std::move(handles), LocalHostId(), std::move(uuid)));
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeCudaIpcSender(
    const KvPoolView& local, kernels::Backend* backend, int device) {
  DUET_RETURN_IF_ERROR(internal::ValidatePool(local, "CUDA IPC sender pool"));
  if (local.device != Device::kCuda || backend == nullptr ||
      backend->device() != Device::kCuda) {
    return absl::InvalidArgumentError(
        "CUDA IPC KV transport needs a GPU pool and its CUDA backend "
        "(--backend cuda)");
  }
  if (local.layout.block_bytes() % 16 != 0) {
    return absl::InvalidArgumentError(
        "CUDA IPC KV transport: block bytes must be a multiple of 16");
  }
  DUET_ASSIGN_OR_RETURN(std::unique_ptr<kernels::KvCopyQueue> queue,
                        backend->CreateKvCopyQueue());
  return std::unique_ptr<KvSender>(
      new CudaIpcSender(local, std::move(queue), device));
}

}  // namespace duet::kv_transfer
