// kernels/cuda/nccl_communicator.h on real GPUs. One GPU: a communicator of
// one rank (all-reduce is the identity, a send to itself inside a group is
// a copy), and a group whose second rank never joins times out within its
// bound instead of hanging. Two GPUs (skipped with fewer): all-reduce
// equals the sum, and a ring exchange inside a group completes. Argument
// checks run everywhere.
#include "kernels/cuda/nccl_communicator.h"

#include <cuda_runtime.h>

#include <random>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace duet::kernels {
namespace {

using testing::NoCudaReason;

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

// A device buffer with `values` (as f32 or bf16), freed on destruction.
struct DeviceBuffer {
  DeviceBuffer(const std::vector<float>& values, DType dtype) : n(values.size()) {
    view.dtype = dtype;
    view.shape = {static_cast<int64_t>(n)};
    view.device = Device::kCuda;
    EXPECT_EQ(cudaMalloc(&view.data, view.nbytes()), cudaSuccess);
    Set(values);
  }
  ~DeviceBuffer() { cudaFree(view.data); }
  void Set(const std::vector<float>& values) {
    if (view.dtype == DType::kF32) {
      cudaMemcpy(view.data, values.data(), view.nbytes(), cudaMemcpyDefault);
    } else {
      std::vector<uint16_t> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = FloatToBf16(values[i]);
      cudaMemcpy(view.data, h.data(), view.nbytes(), cudaMemcpyDefault);
    }
  }
  std::vector<float> Get() const {
    std::vector<float> out(n);
    if (view.dtype == DType::kF32) {
      cudaMemcpy(out.data(), view.data, view.nbytes(), cudaMemcpyDefault);
    } else {
      std::vector<uint16_t> h(n);
      cudaMemcpy(h.data(), view.data, view.nbytes(), cudaMemcpyDefault);
      for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(h[i]);
    }
    return out;
  }
  size_t n;
  TensorView view;
};

std::vector<float> Random(size_t n, int seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  return testing::RandomBf16(rng, n);  // bf16-exact, never zero
}

TEST(NcclCommunicatorTest, RejectsBadArgumentsBeforeTouchingTheDevice) {
  NcclCommunicatorOptions o;
  o.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  int dummy = 0;
  o.stream = &dummy;
  o.rank = 2;
  o.size = 2;
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.rank = 0;
  o.unique_id = "short";
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.unique_id = std::string(kNcclUniqueIdBytes, '\0');
  // A null stream is valid (the communicator makes its own: KV channels);
  // a timeout that is not positive is not.
  o.timeout = absl::ZeroDuration();
  EXPECT_EQ(CreateNcclCommunicator(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclCommunicatorTest, OneRankAllReduceIsIdentityAndSelfSendCopies) {
  DUET_SKIP_WITHOUT_CUDA();
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  {
    NcclCommunicatorOptions o;
    o.unique_id = *id;
    o.stream = stream;
    o.timeout = absl::Seconds(30);
    auto comm = CreateNcclCommunicator(o);
    ASSERT_TRUE(comm.ok()) << comm.status();
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const std::vector<float> values = Random(4099, 1);
      DeviceBuffer buf(values, dtype);
      ASSERT_TRUE((*comm)->AllReduceSum(buf.view).ok());
      ASSERT_TRUE((*comm)->Wait(absl::Seconds(10)).ok());
      EXPECT_EQ(buf.Get(), values);
    }
    const std::vector<float> src_values = Random(1000, 2);
    DeviceBuffer src(src_values, DType::kF32);
    DeviceBuffer dst(std::vector<float>(1000, 0.0f), DType::kF32);
    (*comm)->GroupStart();
    ASSERT_TRUE((*comm)->Send(src.view, 0).ok());
    ASSERT_TRUE((*comm)->Recv(dst.view, 0).ok());
    const absl::Status s = (*comm)->GroupEnd();
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_TRUE((*comm)->Wait(absl::Seconds(10)).ok());
    EXPECT_EQ(dst.Get(), src_values);
    EXPECT_EQ((*comm)->Send(src.view, 1).code(),
              absl::StatusCode::kInvalidArgument);
  }
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicatorTest, APeerThatNeverJoinsTimesOut) {
  DUET_SKIP_WITHOUT_CUDA();
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  NcclCommunicatorOptions o;
  o.unique_id = *id;
  o.stream = stream;
  o.size = 2;  // rank 1 never comes
  o.timeout = absl::Seconds(3);
  const absl::Time start = absl::Now();
  auto comm = CreateNcclCommunicator(o);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded)
      << comm.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  cudaStreamDestroy(stream);
}

TEST(NcclCommunicatorTest, TwoGpusAllReduceAndRing) {
  DUET_SKIP_WITHOUT_CUDA();
  if (DeviceCount() < 2) GTEST_SKIP() << "needs 2 GPUs";
  auto id = NewNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  constexpr int kSize = 2;
  std::vector<std::vector<float>> in(kSize), ring(kSize), reduced(kSize);
  for (int r = 0; r < kSize; ++r) in[r] = Random(1 << 16, 10 + r);
  std::vector<absl::Status> status(kSize);
  std::vector<std::thread> threads;
  for (int r = 0; r < kSize; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      cudaStream_t stream;
      cudaStreamCreate(&stream);
      {
        NcclCommunicatorOptions o;
        o.rank = r;
        o.size = kSize;
        o.device = r;
        o.unique_id = *id;
        o.stream = stream;
        auto comm = CreateNcclCommunicator(o);
        status[r] = comm.status();
        if (comm.ok()) {
          DeviceBuffer sum(in[r], DType::kF32);
          DeviceBuffer send(in[r], DType::kF32);
          DeviceBuffer recv(std::vector<float>(in[r].size(), 0.0f),
                            DType::kF32);
          status[r] = (*comm)->AllReduceSum(sum.view);
          (*comm)->GroupStart();
          (void)(*comm)->Send(send.view, (r + 1) % kSize);
          (void)(*comm)->Recv(recv.view, (r + kSize - 1) % kSize);
          if (status[r].ok()) status[r] = (*comm)->GroupEnd();
          if (status[r].ok()) status[r] = (*comm)->Wait(absl::Seconds(30));
          reduced[r] = sum.Get();
          ring[r] = recv.Get();
        }
      }
      cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kSize; ++r) {
    ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
    for (size_t i = 0; i < in[r].size(); ++i) {
      ASSERT_FLOAT_EQ(reduced[r][i], in[0][i] + in[1][i]);
    }
    EXPECT_EQ(ring[r], in[(r + kSize - 1) % kSize]);
  }
}

}  // namespace
}  // namespace duet::kernels
