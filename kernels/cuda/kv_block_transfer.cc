#include "kernels/cuda/kv_block_transfer.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/device_status.h"
#include "common/status.h"
#include "kernels/cuda/kv_cache_kernels.h"

namespace duet::kernels::cuda {

absl::Status KvBlockTransfer::Init(
    std::shared_ptr<CachingAllocator> allocator) {
  allocator_ = std::move(allocator);
  return absl::OkStatus();
}

absl::Status KvBlockTransfer::CheckAlignment(const KvBlockPool& pool) {
  if (pool.block_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block copy: block_bytes (", pool.block_bytes,
                     ") must be a multiple of 16 on the CUDA backend"));
  }
  for (size_t l = 0; l < pool.layer_base.size(); ++l) {
    if (reinterpret_cast<uintptr_t>(pool.layer_base[l]) % 16 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KV block copy: layer ", l, " base is not 16-byte aligned"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> KvBlockTransfer::UploadMetadata(
    const KvBlockPool& pool, std::span<const int32_t> ids,
    cudaStream_t stream) {
  PackedLayout layout;
  const size_t bases_at = layout.Take(pool.layer_base.size() * 8);
  const size_t ids_at = layout.Take(ids.size() * 4);
  DUET_RETURN_IF_ERROR(metadata_host_.Reserve(layout.size()));
  DUET_RETURN_IF_ERROR(metadata_.Reserve(allocator_, layout.size()));
  auto* host = static_cast<char*>(metadata_host_.data());
  for (size_t l = 0; l < pool.layer_base.size(); ++l) {
    const uint64_t base = reinterpret_cast<uint64_t>(pool.layer_base[l]);
    std::memcpy(host + bases_at + l * 8, &base, 8);
  }
  std::memcpy(host + ids_at, ids.data(), ids.size() * 4);
  DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
      metadata_.data(), host, layout.size(), cudaMemcpyHostToDevice, stream));
  return ids_at;
}

// Host data is [layer][i][block_bytes]. A chunk is either whole layers
// (every id) or, when one layer's blocks exceed kChunkBytes, a run of ids
// of one layer: both are contiguous on the host and in the packed layout the
// kernel uses, so each chunk is one kernel and one copy.
absl::Status KvBlockTransfer::Run(bool gather, const KvBlockPool& pool,
                                  std::span<const int32_t> ids, char* host,
                                  cudaStream_t stream) {
  if (ids.empty()) return absl::OkStatus();
  DUET_ASSIGN_OR_RETURN(const size_t ids_at, UploadMetadata(pool, ids, stream));
  const int64_t bb = pool.block_bytes;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t num_layers = static_cast<int64_t>(pool.layer_base.size());
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkBytes / bb);
  const int64_t layers_per_chunk =
      n <= rows_per_chunk ? std::min(num_layers, rows_per_chunk / n) : 1;
  const int64_t ids_per_chunk = std::min(n, rows_per_chunk);
  DUET_RETURN_IF_ERROR(scratch_.Reserve(
      allocator_, static_cast<size_t>(layers_per_chunk * ids_per_chunk * bb)));
  const auto* bases = metadata_.as<uint64_t>();
  const auto* dev_ids =
      reinterpret_cast<const int32_t*>(metadata_.as<char>() + ids_at);
  for (int64_t l = 0; l < num_layers; l += layers_per_chunk) {
    const int64_t layers = std::min(layers_per_chunk, num_layers - l);
    for (int64_t i = 0; i < n; i += ids_per_chunk) {
      const int64_t count = std::min(ids_per_chunk, n - i);
      KvBlocksParams p;
      p.layer_base = bases + l;
      p.block_ids = dev_ids + i;
      p.num_layers = static_cast<int>(layers);
      p.num_ids = static_cast<int>(count);
      p.block_bytes = bb;
      p.packed = scratch_.data();
      char* chunk_host = host + (l * n + i) * bb;
      const size_t bytes = static_cast<size_t>(layers * count * bb);
      if (gather) {
        DUET_RETURN_IF_ERROR(LaunchGatherKvBlocks(p, stream));
        DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(chunk_host, scratch_.data(),
                                                  bytes, cudaMemcpyDeviceToHost,
                                                  stream));
      } else {
        DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(scratch_.data(), chunk_host,
                                                  bytes, cudaMemcpyHostToDevice,
                                                  stream));
        DUET_RETURN_IF_ERROR(LaunchScatterKvBlocks(p, stream));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status KvBlockTransfer::Drain(cudaStream_t stream, absl::Time deadline) {
  if (!pending_) return absl::OkStatus();
  DUET_RETURN_IF_ERROR(PollUntil([stream] { return cudaStreamQuery(stream); },
                                 deadline,
                                 "an earlier KV copy that is still queued"));
  pending_ = false;
  return absl::OkStatus();
}

absl::Status KvBlockTransfer::Finish(absl::Status queued, cudaStream_t stream,
                                     absl::Time deadline) {
  // Also after a failure: what was queued may still read the metadata.
  absl::Status done =
      deadline == absl::InfiniteFuture() ? [&]() -> absl::Status {
    DUET_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    return absl::OkStatus();
  }()
      : PollUntil([stream] { return cudaStreamQuery(stream); }, deadline,
                  "a KV block copy");
  if (done.code() == absl::StatusCode::kDeadlineExceeded) pending_ = true;
  DUET_RETURN_IF_ERROR(queued);
  return done;
}

absl::StatusOr<bool> KvBlockTransfer::GatherByRuns(const KvBlockPool& pool,
                                                   std::span<const int32_t> ids,
                                                   char* host,
                                                   cudaStream_t stream) {
  // (position, first id, count) of each run of consecutive ids.
  struct IdRun {
    int64_t pos;
    int32_t first;
    int64_t count;
  };
  std::vector<IdRun> runs;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!runs.empty() &&
        ids[i] == runs.back().first + static_cast<int32_t>(runs.back().count)) {
      ++runs.back().count;
    } else {
      runs.push_back({static_cast<int64_t>(i), ids[i], 1});
    }
  }
  const int64_t bb = pool.block_bytes;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (runs.empty() ||
      n * bb < kCopyEngineRunBytes * static_cast<int64_t>(runs.size())) {
    return false;
  }
  for (size_t l = 0; l < pool.layer_base.size(); ++l) {
    const char* base = static_cast<const char*>(pool.layer_base[l]);
    for (const IdRun& r : runs) {
      DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          host + (static_cast<int64_t>(l) * n + r.pos) * bb,
          base + int64_t{r.first} * bb, static_cast<size_t>(r.count * bb),
          cudaMemcpyDeviceToHost, stream));
    }
  }
  return true;
}

absl::Status KvBlockTransfer::Gather(const KvBlockPool& pool,
                                     std::span<const int32_t> ids, void* host,
                                     cudaStream_t stream, absl::Time deadline) {
  DUET_RETURN_IF_ERROR(Drain(stream, deadline));
  char* out = static_cast<char*>(host);
  absl::StatusOr<bool> by_runs = GatherByRuns(pool, ids, out, stream);
  absl::Status s = by_runs.status();
  if (by_runs.ok() && !*by_runs) {
    s = Run(/*gather=*/true, pool, ids, out, stream);
  }
  return Finish(std::move(s), stream, deadline);
}

absl::Status KvBlockTransfer::Scatter(const void* host,
                                      std::span<const int32_t> ids,
                                      const KvBlockPool& pool,
                                      cudaStream_t stream,
                                      absl::Time deadline) {
  DUET_RETURN_IF_ERROR(Drain(stream, deadline));
  // Waiting for the copies out of `host` would be enough for the caller to
  // reuse it; waiting for the whole stream costs only the last chunk's
  // kernel (HBM speed, microseconds) on top and keeps one rule for both
  // directions: every call ends with nothing of it queued.
  absl::Status s =
      Run(/*gather=*/false, pool, ids,
          const_cast<char*>(static_cast<const char*>(host)), stream);
  return Finish(std::move(s), stream, deadline);
}

absl::Status KvBlockTransfer::CopyBetweenPools(const KvBlockPool& src,
                                               std::span<const int32_t> src_ids,
                                               const KvBlockPool& dst,
                                               std::span<const int32_t> dst_ids,
                                               cudaStream_t stream,
                                               absl::Time deadline) {
  if (src_ids.empty()) return absl::OkStatus();
  DUET_RETURN_IF_ERROR(Drain(stream, deadline));
  const size_t layers = src.layer_base.size();
  PackedLayout layout;
  const size_t src_bases_at = layout.Take(layers * 8);
  const size_t dst_bases_at = layout.Take(layers * 8);
  const size_t src_ids_at = layout.Take(src_ids.size() * 4);
  const size_t dst_ids_at = layout.Take(dst_ids.size() * 4);
  DUET_RETURN_IF_ERROR(metadata_host_.Reserve(layout.size()));
  DUET_RETURN_IF_ERROR(metadata_.Reserve(allocator_, layout.size()));
  auto* host = static_cast<char*>(metadata_host_.data());
  for (size_t l = 0; l < layers; ++l) {
    const uint64_t s = reinterpret_cast<uint64_t>(src.layer_base[l]);
    const uint64_t d = reinterpret_cast<uint64_t>(dst.layer_base[l]);
    std::memcpy(host + src_bases_at + l * 8, &s, 8);
    std::memcpy(host + dst_bases_at + l * 8, &d, 8);
  }
  std::memcpy(host + src_ids_at, src_ids.data(), src_ids.size() * 4);
  std::memcpy(host + dst_ids_at, dst_ids.data(), dst_ids.size() * 4);
  absl::Status s = [&]() -> absl::Status {
    DUET_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        metadata_.data(), host, layout.size(), cudaMemcpyHostToDevice, stream));
    const char* dev = metadata_.as<char>();
    PoolCopyParams p;
    p.src_base = reinterpret_cast<const uint64_t*>(dev + src_bases_at);
    p.dst_base = reinterpret_cast<const uint64_t*>(dev + dst_bases_at);
    p.src_ids = reinterpret_cast<const int32_t*>(dev + src_ids_at);
    p.dst_ids = reinterpret_cast<const int32_t*>(dev + dst_ids_at);
    p.num_layers = static_cast<int>(layers);
    p.num_ids = static_cast<int>(src_ids.size());
    p.block_bytes = src.block_bytes;
    return LaunchCopyKvBlocksBetweenPools(p, stream);
  }();
  return Finish(std::move(s), stream, deadline);
}

absl::Status PollUntil(const std::function<cudaError_t()>& query,
                       absl::Time deadline, absl::string_view what) {
  for (int spins = 0;; ++spins) {
    const cudaError_t rc = query();
    if (rc == cudaSuccess) return absl::OkStatus();
    if (rc != cudaErrorNotReady) {
      (void)cudaGetLastError();
      return absl::Status(
          DeviceErrorCode(DeviceLib::kCuda, static_cast<int>(rc)),
          absl::StrCat("waiting for ", what, ": ", cudaGetErrorString(rc)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, " did not finish by its deadline"));
    }
    if (spins < 200) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(20));
    }
  }
}

}  // namespace duet::kernels::cuda
