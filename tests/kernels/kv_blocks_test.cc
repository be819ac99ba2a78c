// Backend::GatherKvBlocks / ScatterKvBlocks / AllocateHostStaging on the CPU
// backend (the reference the CUDA backend is compared with): exact bytes on
// random data with unordered, repeated and non-contiguous ids, nothing
// outside the named blocks or past the packed bytes touched, and every bad
// argument InvalidArgument before anything is copied.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace duet::kernels {
namespace {

constexpr int kLayers = 3;
constexpr int32_t kBlocks = 10;
constexpr int64_t kBlockBytes = 96;
constexpr uint8_t kPoison = 0;  // random fills never produce it

// Bytes in [1, 255].
std::vector<uint8_t> RandomBytes(std::mt19937& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(1 + rng() % 255);
  return v;
}

class KvBlocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int l = 0; l < kLayers; ++l) {
      layers_.push_back(RandomBytes(rng_, kBlocks * kBlockBytes));
      pool_.layer_base.push_back(layers_.back().data());
    }
    pool_.num_blocks = kBlocks;
    pool_.block_bytes = kBlockBytes;
  }
  const uint8_t* Block(int l, int32_t b) const {
    return layers_[l].data() + b * kBlockBytes;
  }
  static int64_t Packed(size_t n) { return kLayers * n * kBlockBytes; }

  std::mt19937 rng_{7};
  std::unique_ptr<Backend> cpu_ = MakeCpuBackend();
  std::vector<std::vector<uint8_t>> layers_;
  KvBlockPool pool_;
};

TEST_F(KvBlocksTest, GatherPacksLayerMajorInIdOrder) {
  const std::vector<int32_t> ids = {7, 2, 2, 9, 0};  // repeats allowed
  // One extra block of room, which must stay untouched.
  std::vector<uint8_t> host(Packed(ids.size()) + kBlockBytes, kPoison);
  ASSERT_TRUE(cpu_->GatherKvBlocks(pool_, ids, host.data(),
                                   static_cast<int64_t>(host.size()))
                  .ok());
  for (int l = 0; l < kLayers; ++l) {
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(std::memcmp(host.data() + (l * ids.size() + i) * kBlockBytes,
                            Block(l, ids[i]), kBlockBytes),
                0)
          << "layer " << l << " position " << i;
    }
  }
  for (size_t k = Packed(ids.size()); k < host.size(); ++k) {
    ASSERT_EQ(host[k], kPoison) << "wrote past the packed blocks at " << k;
  }
}

TEST_F(KvBlocksTest, ScatterWritesOnlyTheNamedBlocks) {
  const std::vector<int32_t> ids = {4, 1, 8};
  const std::vector<uint8_t> host = RandomBytes(rng_, Packed(ids.size()));
  const std::vector<std::vector<uint8_t>> before = layers_;
  ASSERT_TRUE(
      cpu_->ScatterKvBlocks(host.data(), Packed(ids.size()), ids, pool_).ok());
  for (int l = 0; l < kLayers; ++l) {
    for (int32_t b = 0; b < kBlocks; ++b) {
      const uint8_t* want = before[l].data() + b * kBlockBytes;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] == b) {
          want = host.data() + (l * ids.size() + i) * kBlockBytes;
        }
      }
      EXPECT_EQ(std::memcmp(Block(l, b), want, kBlockBytes), 0)
          << "layer " << l << " block " << b;
    }
  }
}

TEST_F(KvBlocksTest, GatherThenScatterElsewhereMovesBlocks) {
  const std::vector<int32_t> from = {3, 5};
  const std::vector<int32_t> to = {6, 0};
  std::vector<uint8_t> host(Packed(2));
  ASSERT_TRUE(cpu_->GatherKvBlocks(pool_, from, host.data(), Packed(2)).ok());
  ASSERT_TRUE(cpu_->ScatterKvBlocks(host.data(), Packed(2), to, pool_).ok());
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(std::memcmp(Block(l, 6), Block(l, 3), kBlockBytes), 0);
    EXPECT_EQ(std::memcmp(Block(l, 0), Block(l, 5), kBlockBytes), 0);
  }
}

TEST_F(KvBlocksTest, CopyKvBlocksMovesNamedBlocksIntoAnotherPool) {
  std::vector<std::vector<uint8_t>> other;
  KvBlockPool dst;
  for (int l = 0; l < kLayers; ++l) {
    other.push_back(RandomBytes(rng_, 7 * kBlockBytes));
    dst.layer_base.push_back(other.back().data());
  }
  dst.num_blocks = 7;
  dst.block_bytes = kBlockBytes;
  const std::vector<std::vector<uint8_t>> before = other;
  const std::vector<int32_t> from = {9, 2, 2};
  const std::vector<int32_t> to = {0, 6, 3};
  ASSERT_TRUE(cpu_->CopyKvBlocks(pool_, from, dst, to).ok());
  for (int l = 0; l < kLayers; ++l) {
    for (int32_t b = 0; b < 7; ++b) {
      const uint8_t* got = other[l].data() + b * kBlockBytes;
      const auto it = std::find(to.begin(), to.end(), b);
      const uint8_t* want =
          it == to.end() ? before[l].data() + b * kBlockBytes
                         : Block(l, from[static_cast<size_t>(it - to.begin())]);
      EXPECT_EQ(std::memcmp(got, want, kBlockBytes), 0)
          << "layer " << l << " block " << b;
    }
  }
  // A destination id past the pool, a destination listed twice, counts or
  // block sizes that differ: InvalidArgument, nothing written.
  const std::vector<std::vector<uint8_t>> after = other;
  const std::vector<int32_t> two = {1, 2};
  const std::vector<int32_t> past = {1, 7};
  const std::vector<int32_t> twice = {4, 4};
  const std::vector<int32_t> one = {1};
  EXPECT_EQ(cpu_->CopyKvBlocks(pool_, two, dst, past).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cpu_->CopyKvBlocks(pool_, two, dst, twice).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cpu_->CopyKvBlocks(pool_, two, dst, one).code(),
            absl::StatusCode::kInvalidArgument);
  KvBlockPool narrow = dst;
  narrow.block_bytes = kBlockBytes / 2;
  EXPECT_EQ(cpu_->CopyKvBlocks(pool_, two, narrow, two).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(other, after);
}

TEST_F(KvBlocksTest, BadArgumentsAreInvalidArgumentAndCopyNothing) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const std::vector<std::vector<uint8_t>> before = layers_;
  std::vector<uint8_t> host(Packed(2), kPoison);
  auto gather = [&](const KvBlockPool& p, std::vector<int32_t> ids,
                    int64_t bytes, void* dst) {
    return cpu_->GatherKvBlocks(p, ids, dst, bytes).code();
  };
  auto scatter = [&](const KvBlockPool& p, std::vector<int32_t> ids,
                     int64_t bytes, const void* src) {
    return cpu_->ScatterKvBlocks(src, bytes, ids, p).code();
  };
  for (int32_t bad : {kBlocks, -1, 1 << 30}) {
    EXPECT_EQ(gather(pool_, {0, bad}, Packed(2), host.data()), kInvalid);
    EXPECT_EQ(scatter(pool_, {0, bad}, Packed(2), host.data()), kInvalid);
  }
  EXPECT_EQ(gather(pool_, {0, 1}, Packed(2) - 1, host.data()), kInvalid);
  EXPECT_EQ(scatter(pool_, {0, 1}, Packed(2) - 1, host.data()), kInvalid);
  EXPECT_EQ(gather(pool_, {0, 1}, -1, host.data()), kInvalid);
  EXPECT_EQ(gather(pool_, {0, 1}, Packed(2), nullptr), kInvalid);
  EXPECT_EQ(scatter(pool_, {0, 1}, Packed(2), nullptr), kInvalid);
  EXPECT_EQ(scatter(pool_, {2, 2}, Packed(2), host.data()), kInvalid);
  KvBlockPool p = pool_;
  p.device = Device::kCuda;  // not this backend's memory
  EXPECT_EQ(gather(p, {0}, Packed(1), host.data()), kInvalid);
  p = pool_;
  p.layer_base[1] = nullptr;
  EXPECT_EQ(scatter(p, {0}, Packed(1), host.data()), kInvalid);
  p = pool_;
  p.layer_base.clear();
  EXPECT_EQ(gather(p, {0}, Packed(1), host.data()), kInvalid);
  p = pool_;
  p.block_bytes = 0;
  EXPECT_EQ(gather(p, {0}, Packed(1), host.data()), kInvalid);
  p = pool_;
  p.num_blocks = 0;
  EXPECT_EQ(gather(p, {}, 0, host.data()), kInvalid);
  EXPECT_EQ(layers_, before);
  EXPECT_EQ(host, std::vector<uint8_t>(Packed(2), kPoison));
  // No ids: nothing to do, even without a host buffer.
  EXPECT_TRUE(cpu_->GatherKvBlocks(pool_, {}, nullptr, 0).ok());
}

// The CPU copy queue runs the reference copies on the caller's thread; its
// marks are reached when taken (every CPU op is done when it returns).
TEST_F(KvBlocksTest, CopyQueueGathersLikeTheBackendAndKeepsDeadlines) {
  absl::StatusOr<std::shared_ptr<const StreamMark>> mark = cpu_->Mark();
  ASSERT_TRUE(mark.ok());
  EXPECT_TRUE((*mark)->Wait(absl::InfinitePast()).ok());
  absl::StatusOr<std::unique_ptr<KvCopyQueue>> queue =
      cpu_->CreateKvCopyQueue();
  ASSERT_TRUE(queue.ok());
  ASSERT_TRUE((*queue)->After(*mark).ok());
  const std::vector<int32_t> ids = {4, 0, 9};
  std::vector<uint8_t> got(static_cast<size_t>(Packed(ids.size())));
  std::vector<uint8_t> want(got.size());
  ASSERT_TRUE((*queue)
                  ->Gather(pool_, ids, got.data(), Packed(ids.size()),
                           absl::InfiniteFuture())
                  .ok());
  ASSERT_TRUE(
      cpu_->GatherKvBlocks(pool_, ids, want.data(), Packed(ids.size())).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ((*queue)
                ->Gather(pool_, ids, got.data(), Packed(ids.size()),
                         absl::Now() - absl::Seconds(1))
                .code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ((*queue)->After(nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HostStagingTest, CpuStagingIsAlignedWritableAndChecked) {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  absl::StatusOr<HostBuffer> staging = cpu->AllocateHostStaging(1000);
  ASSERT_TRUE(staging.ok()) << staging.status();
  EXPECT_GE(staging->size(), 1000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(staging->data()) % 64, 0u);
  std::memset(staging->data(), 0xab, 1000);
  HostBuffer moved = std::move(*staging);
  EXPECT_EQ(staging->data(), nullptr);
  EXPECT_EQ(static_cast<uint8_t*>(moved.data())[999], 0xab);
  EXPECT_EQ(cpu->AllocateHostStaging(0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cpu->AllocateHostStaging(-5).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kernels
