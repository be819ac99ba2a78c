// Pieces of duet-kv-bench that both of its processes use: the transports it
// runs, backends, a KV pool in backend memory that can be filled with
// random bytes and checksummed, and simulated per-layer compute on a
// backend's stream.
#ifndef DUET_TOOLS_KV_BENCH_COMMON_H_
#define DUET_TOOLS_KV_BENCH_COMMON_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::tools::kv_bench {

enum class BenchTransport {
  kCudaIpc,    // "cuda-ipc": GPU pools on one host
  kUcx,        // "ucx": direct on host pools, staged on GPU pools
  kUcxStaged,  // "ucx-staged": UcxOptions::staged on host pools (CPU mode)
  kInProcess,  // "in-process": host pools, both ends in the sender process
};
absl::StatusOr<BenchTransport> ParseTransport(absl::string_view name);
absl::string_view TransportName(BenchTransport t);

// "cpu" or "cuda" (on CUDA device `device`).
absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBenchBackend(
    absl::string_view name, int device);

// A KV pool of `num_blocks` blocks of `layout` per layer in `backend`
// memory, one Allocate per layer (whole allocations, as CUDA IPC needs).
class BenchPool {
 public:
  static absl::StatusOr<std::unique_ptr<BenchPool>> Create(
      kernels::Backend* backend, const kv_transfer::KvLayout& layout,
      int32_t num_blocks);

  const kv_transfer::KvPoolView& view() const { return view_; }
  // Blocks [0, n) of every layer get pseudo-random non-zero bytes drawn
  // from `seed`; returns once they are in the pool (the backend is
  // synchronized: a copy queue's stream sees them).
  absl::Status Fill(uint64_t seed, int32_t n);
  // A 64-bit hash of blocks [0, n) of every layer (the same bytes hash the
  // same in any pool of the same layout).
  absl::StatusOr<uint64_t> Checksum(int32_t n);

 private:
  BenchPool(kernels::Backend* backend, const kv_transfer::KvLayout& layout,
            int32_t num_blocks);
  // Blocks per Gather / Scatter: a bounded host buffer.
  int32_t ChunkBlocks() const;
  kernels::KvBlockPool BlockPool() const;

  kernels::Backend* const backend_;
  std::vector<kernels::Tensor> layers_;
  kv_transfer::KvPoolView view_;
};

// Simulated compute of one layer of a prefill: `reps` RmsNorms of a fixed
// activation on the backend's stream, `reps` chosen so that they take about
// `layer_us` (measured when created). Run queues them and returns (on CUDA
// before they are done), so a Mark taken after it is reached when they are.
class LayerWork {
 public:
  static absl::StatusOr<std::unique_ptr<LayerWork>> Create(
      kernels::Backend* backend, double layer_us);
  absl::Status Run();
  // "none", or "N x RmsNorm[R, D] = X us".
  std::string Describe() const;
  double measured_us() const { return unit_us_ * reps_; }

 private:
  explicit LayerWork(kernels::Backend* backend) : backend_(backend) {}
  absl::Status Unit();

  kernels::Backend* const backend_;
  kernels::Tensor x_, weight_, out_;
  int32_t rows_ = 0, dim_ = 0;
  int reps_ = 0;
  double unit_us_ = 0;
};

}  // namespace duet::tools::kv_bench

#endif  // DUET_TOOLS_KV_BENCH_COMMON_H_
