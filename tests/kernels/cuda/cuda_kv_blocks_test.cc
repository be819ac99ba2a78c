// GatherKvBlocks / ScatterKvBlocks / AllocateHostStaging on the CUDA backend
// against the CPU reference: bf16 pools of random non-zero values, unordered
// non-contiguous (and, for gather, repeated) ids, layouts that take the
// whole-layer and the within-layer chunking paths, and no Synchronize
// between the ops, so stream order is part of what is checked.
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace duet::kernels::testing {
namespace {

// One pool twice: bf16 on the GPU and the same bits in host memory (the
// CPU reference's pool).
struct TwinPool {
  int num_layers = 0;
  int32_t num_blocks = 0;
  int64_t block_elems = 0;  // bf16 elements per block
  std::vector<Tensor> device;
  std::vector<std::vector<uint16_t>> host;

  KvBlockPool DevicePool() const {
    KvBlockPool p;
    for (const Tensor& t : device) p.layer_base.push_back(t.view().data);
    p.num_blocks = num_blocks;
    p.block_bytes = block_elems * 2;
    p.device = Device::kCuda;
    return p;
  }
  KvBlockPool HostPool() {
    KvBlockPool p;
    for (auto& h : host) p.layer_base.push_back(h.data());
    p.num_blocks = num_blocks;
    p.block_bytes = block_elems * 2;
    p.device = Device::kCpu;
    return p;
  }
};

// Blocks of [2][kv_heads][block_size][head_dim] bf16, random values in
// +-[0.05, 1] (never zero, never NaN, so downloads compare exactly).
TwinPool MakeTwinPool(Backend& cuda, std::mt19937& rng, int num_layers,
                      int32_t num_blocks, int kv_heads, int block_size,
                      int head_dim) {
  TwinPool pool;
  pool.num_layers = num_layers;
  pool.num_blocks = num_blocks;
  pool.block_elems = int64_t{2} * kv_heads * block_size * head_dim;
  const Shape shape = {num_blocks, 2, kv_heads, block_size, head_dim};
  for (int l = 0; l < num_layers; ++l) {
    const std::vector<float> values =
        RandomBf16(rng, static_cast<size_t>(pool.block_elems * num_blocks));
    std::vector<uint16_t> bits(values.size());
    ConvertFromF32(values.data(), values.size(), DType::kBF16, bits.data());
    auto t = cuda.Upload(bits.data(), DType::kBF16, DType::kBF16, shape);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return pool;
    pool.device.push_back(std::move(*t));
    pool.host.push_back(std::move(bits));
  }
  return pool;
}

// Every block of every layer of the device pool equals the host twin
// (DownloadF32 is ordered after the copies on the stream).
void ExpectDeviceEqualsHost(Backend& cuda, const TwinPool& pool) {
  for (int l = 0; l < pool.num_layers; ++l) {
    const std::vector<float> got = Download(cuda, pool.device[l]);
    const std::vector<uint16_t>& ref = pool.host[l];
    int64_t mismatches = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      mismatches += got[i] != Bf16ToFloat(ref[i]);
    }
    EXPECT_EQ(mismatches, 0) << "layer " << l;
  }
}

// Distinct random ids, in random order.
std::vector<int32_t> RandomIds(std::mt19937& rng, int32_t num_blocks,
                               int32_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

struct KvBlocksCase {
  int num_layers;
  int32_t num_blocks;
  int32_t num_ids;
  int kv_heads, block_size, head_dim;
};

// Small; Qwen3-4B blocks (64 KiB) with several whole layers per 64 MiB
// chunk (180 ids: chunks of 5 layers, the last of 1); one layer past a
// chunk (1300 x 64 KiB = 81 MiB: chunks of 1024 and 276 ids).
constexpr KvBlocksCase kCases[] = {
    {3, 37, 11, 2, 4, 64},
    {36, 200, 180, 8, 16, 128},
    {2, 1400, 1300, 8, 16, 128},
};

TEST_F(CudaVsCpuTest, GatherKvBlocksMatchesTheCpuReference) {
  std::mt19937 rng(11);
  for (const KvBlocksCase& c : kCases) {
    SCOPED_TRACE(absl::StrCat(c.num_layers, " layers, ", c.num_ids, " of ",
                              c.num_blocks, " blocks"));
    TwinPool pool = MakeTwinPool(*cuda_, rng, c.num_layers, c.num_blocks,
                                 c.kv_heads, c.block_size, c.head_dim);
    ASSERT_EQ(static_cast<int>(pool.device.size()), c.num_layers);
    std::vector<int32_t> ids = RandomIds(rng, c.num_blocks, c.num_ids);
    ids[ids.size() / 2] = ids[0];  // gather may repeat a block
    const int64_t bytes =
        int64_t{c.num_layers} * c.num_ids * pool.block_elems * 2;
    // Pinned staging, poisoned with a byte pattern the pool never holds at
    // every position (0xff 0xff is a NaN).
    absl::StatusOr<HostBuffer> staging = cuda_->AllocateHostStaging(bytes);
    ASSERT_TRUE(staging.ok()) << staging.status();
    std::memset(staging->data(), 0xff, staging->size());
    std::vector<uint8_t> want(static_cast<size_t>(bytes));
    ASSERT_TRUE(
        cpu_->GatherKvBlocks(pool.HostPool(), ids, want.data(), bytes).ok());
    // No Synchronize after the uploads: the gather is ordered after them.
    const absl::Status s =
        cuda_->GatherKvBlocks(pool.DevicePool(), ids, staging->data(), bytes);
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_EQ(std::memcmp(staging->data(), want.data(), want.size()), 0);
  }
}

TEST_F(CudaVsCpuTest, ScatterKvBlocksMatchesTheCpuReference) {
  std::mt19937 rng(12);
  for (const KvBlocksCase& c : kCases) {
    SCOPED_TRACE(absl::StrCat(c.num_layers, " layers, ", c.num_ids, " of ",
                              c.num_blocks, " blocks"));
    TwinPool pool = MakeTwinPool(*cuda_, rng, c.num_layers, c.num_blocks,
                                 c.kv_heads, c.block_size, c.head_dim);
    ASSERT_EQ(static_cast<int>(pool.device.size()), c.num_layers);
    const std::vector<int32_t> ids = RandomIds(rng, c.num_blocks, c.num_ids);
    const int64_t elems = int64_t{c.num_layers} * c.num_ids * pool.block_elems;
    const std::vector<float> values =
        RandomBf16(rng, static_cast<size_t>(elems), 2.0f, 3.0f);
    absl::StatusOr<HostBuffer> staging = cuda_->AllocateHostStaging(elems * 2);
    ASSERT_TRUE(staging.ok()) << staging.status();
    ConvertFromF32(values.data(), values.size(), DType::kBF16, staging->data());
    ASSERT_TRUE(
        cpu_->ScatterKvBlocks(staging->data(), elems * 2, ids, pool.HostPool())
            .ok());
    const absl::Status s = cuda_->ScatterKvBlocks(staging->data(), elems * 2,
                                                  ids, pool.DevicePool());
    ASSERT_TRUE(s.ok()) << s;
    // Scatter returns once the host buffer has been read: clobbering it
    // now must not change what lands.
    std::memset(staging->data(), 0, staging->size());
    // Every block of every layer, written or not, against the reference.
    ExpectDeviceEqualsHost(*cuda_, pool);
  }
}

TEST_F(CudaVsCpuTest, CopyKvBlocksBetweenPoolsMatchesTheCpuReference) {
  std::mt19937 rng(13);
  for (const KvBlocksCase& c : kCases) {
    SCOPED_TRACE(absl::StrCat(c.num_layers, " layers, ", c.num_ids, " of ",
                              c.num_blocks, " blocks"));
    TwinPool src = MakeTwinPool(*cuda_, rng, c.num_layers, c.num_blocks,
                                c.kv_heads, c.block_size, c.head_dim);
    TwinPool dst = MakeTwinPool(*cuda_, rng, c.num_layers, c.num_blocks + 5,
                                c.kv_heads, c.block_size, c.head_dim);
    ASSERT_EQ(static_cast<int>(dst.device.size()), c.num_layers);
    std::vector<int32_t> from = RandomIds(rng, c.num_blocks, c.num_ids);
    from[from.size() / 2] = from[0];  // a source block may be read twice
    const std::vector<int32_t> to = RandomIds(rng, c.num_blocks + 5, c.num_ids);
    ASSERT_TRUE(
        cpu_->CopyKvBlocks(src.HostPool(), from, dst.HostPool(), to).ok());
    const absl::Status s =
        cuda_->CopyKvBlocks(src.DevicePool(), from, dst.DevicePool(), to);
    ASSERT_TRUE(s.ok()) << s;
    ExpectDeviceEqualsHost(*cuda_, dst);
  }
}

// The KV copy queue (the KV sender's stream): a copy queued After a mark
// does not start before the backend's stream reaches it (so it times out
// while a long run of GEMMs is ahead of the mark), the queue recovers from
// that (the next copy waits for the stalled one), and layer slices of a
// pool copy and gather exactly like the CPU reference.
TEST_F(CudaVsCpuTest, KvCopyQueueWaitsForItsMarkAndKeepsItsDeadline) {
  std::mt19937 rng(17);
  TwinPool src = MakeTwinPool(*cuda_, rng, 4, 64, 8, 16, 128);
  TwinPool dst = MakeTwinPool(*cuda_, rng, 4, 80, 8, 16, 128);
  ASSERT_EQ(dst.device.size(), 4u);
  absl::StatusOr<std::unique_ptr<KvCopyQueue>> queue =
      cuda_->CreateKvCopyQueue();
  ASSERT_TRUE(queue.ok()) << queue.status();
  auto x = cuda_->Allocate(DType::kBF16, {4096, 4096});
  auto w = cuda_->Allocate(DType::kBF16, {4096, 4096});
  auto out = cuda_->Allocate(DType::kBF16, {4096, 4096});
  ASSERT_TRUE(x.ok() && w.ok() && out.ok());
  for (int i = 0; i < 40; ++i) {  // ~5 ms of tensor-core work on an H100
    ASSERT_TRUE(cuda_->Linear(x->view(), w->view(), out->view()).ok());
  }
  absl::StatusOr<std::shared_ptr<const StreamMark>> mark = cuda_->Mark();
  ASSERT_TRUE(mark.ok()) << mark.status();
  EXPECT_EQ((*mark)->Wait(absl::Now() + absl::Microseconds(100)).code(),
            absl::StatusCode::kDeadlineExceeded);
  const std::vector<int32_t> from = RandomIds(rng, 64, 40);
  const std::vector<int32_t> to = RandomIds(rng, 80, 40);
  auto slice = [](KvBlockPool p) {
    p.layer_base = {p.layer_base[1], p.layer_base[2]};
    return p;
  };
  ASSERT_TRUE((*queue)->After(*mark).ok());
  EXPECT_EQ((*queue)
                ->Copy(slice(src.DevicePool()), from, slice(dst.DevicePool()),
                       to, absl::Now() + absl::Microseconds(200))
                .code(),
            absl::StatusCode::kDeadlineExceeded);
  const absl::Status again =
      (*queue)->Copy(slice(src.DevicePool()), from, slice(dst.DevicePool()), to,
                     absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(again.ok()) << again;
  EXPECT_TRUE((*mark)->Wait(absl::Now()).ok());
  ASSERT_TRUE(
      cpu_->CopyKvBlocks(slice(src.HostPool()), from, slice(dst.HostPool()), to)
          .ok());
  ExpectDeviceEqualsHost(*cuda_, dst);  // layers 0 and 3 untouched

  const int64_t bytes = 2 * 40 * src.DevicePool().block_bytes;
  absl::StatusOr<HostBuffer> got = cuda_->AllocateHostStaging(bytes);
  std::vector<char> want(static_cast<size_t>(bytes));
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE((*queue)
                  ->Gather(slice(src.DevicePool()), from, got->data(), bytes,
                           absl::Now() + absl::Seconds(10))
                  .ok());
  ASSERT_TRUE(
      cpu_->GatherKvBlocks(slice(src.HostPool()), from, want.data(), bytes)
          .ok());
  EXPECT_EQ(std::memcmp(got->data(), want.data(), want.size()), 0);
  // Long runs of consecutive ids (a fresh prompt's blocks) take the copy
  // engine instead of the packing kernel: same bytes. Two runs of 20
  // blocks (1.25 MiB each) with a repeated block between.
  std::vector<int32_t> runs(41);
  std::iota(runs.begin(), runs.begin() + 20, 3);
  runs[20] = 7;
  std::iota(runs.begin() + 21, runs.end(), 40);
  const int64_t run_bytes = 2 * 41 * src.DevicePool().block_bytes;
  absl::StatusOr<HostBuffer> got_runs = cuda_->AllocateHostStaging(run_bytes);
  std::vector<char> want_runs(static_cast<size_t>(run_bytes));
  ASSERT_TRUE(got_runs.ok());
  ASSERT_TRUE((*queue)
                  ->Gather(slice(src.DevicePool()), runs, got_runs->data(),
                           run_bytes, absl::Now() + absl::Seconds(10))
                  .ok());
  ASSERT_TRUE(cpu_->GatherKvBlocks(slice(src.HostPool()), runs,
                                   want_runs.data(), run_bytes)
                  .ok());
  EXPECT_EQ(std::memcmp(got_runs->data(), want_runs.data(), want_runs.size()),
            0);
  // A mark from nowhere is refused.
  EXPECT_EQ((*queue)->After(nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CudaVsCpuTest, KvBlockCopiesRejectBadArguments) {
  std::mt19937 rng(13);
  TwinPool pool = MakeTwinPool(*cuda_, rng, 2, 8, 2, 4, 64);
  ASSERT_EQ(pool.device.size(), 2u);
  const KvBlockPool dev = pool.DevicePool();
  const int64_t two = 2 * 2 * dev.block_bytes;
  absl::StatusOr<HostBuffer> staging = cuda_->AllocateHostStaging(two);
  ASSERT_TRUE(staging.ok());
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  std::vector<int32_t> bad = {1, 8};
  EXPECT_EQ(cuda_->GatherKvBlocks(dev, bad, staging->data(), two).code(),
            kInvalid);
  bad = {-1, 2};
  EXPECT_EQ(cuda_->ScatterKvBlocks(staging->data(), two, bad, dev).code(),
            kInvalid);
  const std::vector<int32_t> ok = {3, 1};
  EXPECT_EQ(cuda_->GatherKvBlocks(dev, ok, staging->data(), two - 1).code(),
            kInvalid);
  const std::vector<int32_t> twice = {3, 3};
  EXPECT_EQ(cuda_->ScatterKvBlocks(staging->data(), two, twice, dev).code(),
            kInvalid);
  EXPECT_EQ(
      cuda_->GatherKvBlocks(pool.HostPool(), ok, staging->data(), two).code(),
      kInvalid);  // host memory is not this backend's pool
  KvBlockPool odd = dev;
  odd.block_bytes = 24;  // not a multiple of the kernel's 16-byte accesses
  EXPECT_EQ(cuda_->GatherKvBlocks(odd, ok, staging->data(), two).code(),
            kInvalid);
  EXPECT_EQ(cuda_->AllocateHostStaging(0).status().code(), kInvalid);
}

}  // namespace
}  // namespace duet::kernels::testing
