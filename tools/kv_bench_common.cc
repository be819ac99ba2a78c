#include "tools/kv_bench_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"

#ifdef DUET_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace duet::tools::kv_bench {

using kv_transfer::KvLayout;

namespace {

constexpr struct {
  BenchTransport transport;
  absl::string_view name;
} kTransports[] = {{BenchTransport::kCudaIpc, "cuda-ipc"},
                   {BenchTransport::kUcx, "ucx"},
                   {BenchTransport::kUcxStaged, "ucx-staged"},
                   {BenchTransport::kInProcess, "in-process"}};

// Host bytes one Gather / Scatter of a pool moves at most.
constexpr int64_t kChunkBytes = int64_t{64} << 20;

uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<BenchTransport> ParseTransport(absl::string_view name) {
  for (const auto& t : kTransports) {
    if (t.name == name) return t.transport;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown transport '", name,
                   "' (cuda-ipc, ucx, ucx-staged or in-process)"));
}

absl::string_view TransportName(BenchTransport transport) {
  for (const auto& t : kTransports) {
    if (t.transport == transport) return t.name;
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<kernels::Backend>> MakeBenchBackend(
    absl::string_view name, int device) {
  if (name == "cpu") return kernels::MakeCpuBackend();
  if (name == "cuda") {
#ifdef DUET_HAVE_CUDA
    return kernels::MakeCudaBackend(device);
#else
    (void)device;
    return absl::UnimplementedError(
        "--backend=cuda: this build has no CUDA (DUET_WITH_CUDA=OFF)");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown --backend '", name, "' (cpu or cuda)"));
}

BenchPool::BenchPool(kernels::Backend* backend, const KvLayout& layout,
                     int32_t num_blocks)
    : backend_(backend) {
  view_.layout = layout;
  view_.num_blocks = num_blocks;
  view_.device = backend->device();
}

absl::StatusOr<std::unique_ptr<BenchPool>> BenchPool::Create(
    kernels::Backend* backend, const KvLayout& layout, int32_t num_blocks) {
  std::unique_ptr<BenchPool> pool(new BenchPool(backend, layout, num_blocks));
  const int64_t elems = int64_t{num_blocks} * layout.block_bytes() /
                        static_cast<int64_t>(DTypeSize(layout.dtype));
  for (int32_t l = 0; l < layout.num_layers; ++l) {
    DUET_ASSIGN_OR_RETURN(kernels::Tensor t,
                          backend->Allocate(layout.dtype, {elems}));
    pool->view_.layer_base.push_back(t.view().data);
    pool->layers_.push_back(std::move(t));
  }
  return pool;
}

int32_t BenchPool::ChunkBlocks() const {
  const int64_t per_block =
      int64_t{view_.layout.num_layers} * view_.layout.block_bytes();
  return static_cast<int32_t>(std::max<int64_t>(1, kChunkBytes / per_block));
}

kernels::KvBlockPool BenchPool::BlockPool() const {
  kernels::KvBlockPool p;
  p.layer_base = view_.layer_base;
  p.num_blocks = view_.num_blocks;
  p.block_bytes = view_.layout.block_bytes();
  p.device = view_.device;
  return p;
}

absl::Status BenchPool::Fill(uint64_t seed, int32_t n) {
  const kernels::KvBlockPool pool = BlockPool();
  const int32_t chunk = ChunkBlocks();
  const int64_t per_block = int64_t{view_.layout.num_layers} * pool.block_bytes;
  std::vector<uint64_t> host(
      static_cast<size_t>(std::min(chunk, n) * per_block / 8));
  uint64_t state = seed;
  for (int32_t first = 0; first < n; first += chunk) {
    const int32_t count = std::min(chunk, n - first);
    std::vector<int32_t> ids(static_cast<size_t>(count));
    for (int32_t i = 0; i < count; ++i) ids[i] = first + i;
    const int64_t bytes = count * per_block;
    // Every byte odd, so never 0: a block left zeroed never verifies.
    for (int64_t w = 0; w < bytes / 8; ++w) {
      host[w] = SplitMix(state) | 0x0101010101010101ull;
    }
    DUET_RETURN_IF_ERROR(
        backend_->ScatterKvBlocks(host.data(), bytes, ids, pool));
  }
  return backend_->Synchronize();
}

absl::StatusOr<uint64_t> BenchPool::Checksum(int32_t n) {
  const kernels::KvBlockPool pool = BlockPool();
  const int32_t chunk = ChunkBlocks();
  const int64_t per_block = int64_t{view_.layout.num_layers} * pool.block_bytes;
  std::vector<uint64_t> host(
      static_cast<size_t>(std::min(chunk, n) * per_block / 8));
  uint64_t h = 0x84222325CBF29CE4ull;
  for (int32_t first = 0; first < n; first += chunk) {
    const int32_t count = std::min(chunk, n - first);
    std::vector<int32_t> ids(static_cast<size_t>(count));
    for (int32_t i = 0; i < count; ++i) ids[i] = first + i;
    const int64_t bytes = count * per_block;
    DUET_RETURN_IF_ERROR(
        backend_->GatherKvBlocks(pool, ids, host.data(), bytes));
    for (int64_t w = 0; w < bytes / 8; ++w) {
      h = (h ^ host[w]) * 0x100000001B3ull;
      h ^= h >> 29;
    }
  }
  return h;
}

absl::StatusOr<std::unique_ptr<LayerWork>> LayerWork::Create(
    kernels::Backend* backend, double layer_us) {
  std::unique_ptr<LayerWork> work(new LayerWork(backend));
  if (layer_us <= 0) return work;
  // A unit of a few microseconds on either backend: 16 MiB of bf16 through
  // one kernel on a GPU, 64 KiB of fp32 on the CPU.
  const bool gpu = backend->device() != Device::kCpu;
  work->rows_ = gpu ? 4096 : 16;
  work->dim_ = gpu ? 2048 : 1024;
  const DType dt = backend->activation_dtype();
  std::vector<float> x(static_cast<size_t>(work->rows_) * work->dim_, 0.5f);
  std::vector<float> w(static_cast<size_t>(work->dim_), 1.0f);
  DUET_ASSIGN_OR_RETURN(work->x_, backend->Upload(x.data(), DType::kF32, dt,
                                                  {work->rows_, work->dim_}));
  DUET_ASSIGN_OR_RETURN(
      work->weight_, backend->Upload(w.data(), DType::kF32, dt, {work->dim_}));
  DUET_ASSIGN_OR_RETURN(work->out_,
                        backend->Allocate(dt, {work->rows_, work->dim_}));
  for (int i = 0; i < 3; ++i) DUET_RETURN_IF_ERROR(work->Unit());
  DUET_RETURN_IF_ERROR(backend->Synchronize());
  Stopwatch clock;
  int units = 0;
  while (units < 10 || clock.ElapsedMs() < 20) {
    for (int i = 0; i < 10; ++i, ++units) DUET_RETURN_IF_ERROR(work->Unit());
    DUET_RETURN_IF_ERROR(backend->Synchronize());
  }
  work->unit_us_ = clock.ElapsedMs() * 1e3 / units;
  work->reps_ =
      std::max(1, static_cast<int>(std::lround(layer_us / work->unit_us_)));
  return work;
}

absl::Status LayerWork::Unit() {
  return backend_->RmsNorm(x_.view(), weight_.view(), 1e-6f, out_.view());
}

absl::Status LayerWork::Run() {
  for (int i = 0; i < reps_; ++i) DUET_RETURN_IF_ERROR(Unit());
  return absl::OkStatus();
}

std::string LayerWork::Describe() const {
  if (reps_ == 0) return "none (marks back to back)";
  return absl::StrFormat("%d x RmsNorm[%d, %d] = %.1f us", reps_, rows_, dim_,
                         measured_us());
}

}  // namespace duet::tools::kv_bench
