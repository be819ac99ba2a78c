// kernels/cpu/cpu_communicator.h: ranks as threads. All-reduce equals the
// rank-ordered sum on random data (f32 and bf16) on every rank; a ring of
// sends and receives inside a group does not deadlock; a rank that never
// arrives makes the waiting rank time out (DEADLINE_EXCEEDED) and every
// other rank fail ABORTED, within the timeout; bad arguments are
// INVALID_ARGUMENT.
#include "kernels/cpu/cpu_communicator.h"

#include <random>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::kernels {
namespace {

TensorView View(std::vector<float>& v) {
  return TensorView{v.data(), DType::kF32,
                    {static_cast<int64_t>(v.size())}, Device::kCpu};
}
TensorView View(std::vector<uint16_t>& v) {
  return TensorView{v.data(), DType::kBF16,
                    {static_cast<int64_t>(v.size())}, Device::kCpu};
}

std::vector<float> Random(int n, int seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// Runs fn(rank, comm) on one thread per rank.
template <typename Fn>
void RunRanks(std::vector<std::unique_ptr<Communicator>>& comms, Fn fn) {
  std::vector<std::thread> threads;
  for (size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] { fn(static_cast<int>(r), *comms[r]); });
  }
  for (auto& t : threads) t.join();
}

TEST(CpuCommunicatorTest, AllReduceIsTheRankOrderedSumOnEveryRank) {
  for (int size : {1, 2, 4}) {
    auto comms = CreateCpuCommunicators(size, absl::Seconds(10));
    ASSERT_TRUE(comms.ok()) << comms.status();
    constexpr int kN = 1000;
    std::vector<std::vector<float>> f32(size);
    std::vector<std::vector<uint16_t>> bf16(size);
    std::vector<float> want_f32(kN, 0.0f);
    std::vector<float> want_bf16(kN, 0.0f);
    for (int r = 0; r < size; ++r) {
      f32[r] = Random(kN, 10 * size + r);
      bf16[r].resize(kN);
      for (int i = 0; i < kN; ++i) {
        want_f32[i] += f32[r][i];
        bf16[r][i] = FloatToBf16(f32[r][i] * 0.5f);
        want_bf16[i] += Bf16ToFloat(bf16[r][i]);
      }
    }
    std::vector<absl::Status> status(size);
    // Three rounds in a row: the rendezvous is reusable.
    RunRanks(*comms, [&](int r, Communicator& c) {
      EXPECT_EQ(c.rank(), r);
      EXPECT_EQ(c.size(), size);
      for (int round = 0; round < 3 && status[r].ok(); ++round) {
        if (round == 0) status[r] = c.AllReduceSum(View(f32[r]));
        if (round == 1) status[r] = c.AllReduceSum(View(bf16[r]));
        if (round == 2) {
          std::vector<float> small = {float(r)};
          status[r] = c.AllReduceSum(View(small));
          EXPECT_EQ(small[0], size * (size - 1) / 2.0f);
        }
      }
      if (status[r].ok()) status[r] = c.Wait(absl::Seconds(1));
    });
    for (int r = 0; r < size; ++r) {
      ASSERT_TRUE(status[r].ok()) << status[r];
      for (int i = 0; i < kN; ++i) {
        ASSERT_EQ(f32[r][i], want_f32[i]) << "rank " << r << " i " << i;
        ASSERT_EQ(bf16[r][i], FloatToBf16(want_bf16[i]))
            << "rank " << r << " i " << i;
      }
    }
  }
}

TEST(CpuCommunicatorTest, RingExchangeInsideAGroupDoesNotDeadlock) {
  constexpr int kSize = 4;
  auto comms = CreateCpuCommunicators(kSize, absl::Seconds(10));
  ASSERT_TRUE(comms.ok());
  std::vector<std::vector<float>> out(kSize), in(kSize), self(kSize);
  for (int r = 0; r < kSize; ++r) {
    out[r] = Random(64, r);
    in[r].assign(64, 0.0f);
    self[r].assign(64, 0.0f);
  }
  std::vector<absl::Status> status(kSize);
  RunRanks(*comms, [&](int r, Communicator& c) {
    c.GroupStart();
    // Every rank sends first: outside a group this would block forever.
    EXPECT_TRUE(c.Send(View(out[r]), (r + 1) % kSize).ok());
    EXPECT_TRUE(c.Recv(View(in[r]), (r + kSize - 1) % kSize).ok());
    EXPECT_TRUE(c.Send(View(out[r]), r).ok());  // to itself
    EXPECT_TRUE(c.Recv(View(self[r]), r).ok());
    status[r] = c.GroupEnd();
  });
  for (int r = 0; r < kSize; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    EXPECT_EQ(in[r], out[(r + kSize - 1) % kSize]);
    EXPECT_EQ(self[r], out[r]);
  }
}

TEST(CpuCommunicatorTest, PointToPointOutsideAGroupAndSizeMismatch) {
  auto comms = CreateCpuCommunicators(2, absl::Seconds(10));
  ASSERT_TRUE(comms.ok());
  std::vector<float> a = Random(8, 1), b(8, 0.0f), c4(4, 0.0f);
  absl::Status s0, s1, m0, m1;
  RunRanks(*comms, [&](int r, Communicator& c) {
    if (r == 0) {
      s0 = c.Send(View(a), 1);
      m0 = c.Send(View(a), 1);
    } else {
      s1 = c.Recv(View(b), 0);
      m1 = c.Recv(View(c4), 0);
    }
  });
  EXPECT_TRUE(s0.ok() && s1.ok()) << s0 << s1;
  EXPECT_EQ(b, a);
  // A mismatched pair fails on both sides, naming both sizes.
  EXPECT_EQ(m0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(m1.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m1.message(), ::testing::HasSubstr("32 bytes"));
  EXPECT_THAT(m1.message(), ::testing::HasSubstr("16 bytes"));
}

TEST(CpuCommunicatorTest, AMissingRankTimesOutAndAbortsTheGroup) {
  constexpr int kSize = 3;
  auto comms = CreateCpuCommunicators(kSize, absl::Milliseconds(200));
  ASSERT_TRUE(comms.ok());
  std::vector<float> v0(16, 1.0f), v1(16, 1.0f);
  absl::Status s0, s1;
  const absl::Time start = absl::Now();
  // Rank 2 never calls; ranks 0 and 1 wait for it.
  std::thread t0([&] { s0 = (*comms)[0]->AllReduceSum(View(v0)); });
  std::thread t1([&] { s1 = (*comms)[1]->AllReduceSum(View(v1)); });
  t0.join();
  t1.join();
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(2));
  // One of them timed out first and aborted the group; the other saw the
  // abort (or timed out itself at the same moment).
  const int deadline = (s0.code() == absl::StatusCode::kDeadlineExceeded) +
                       (s1.code() == absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(deadline, 1) << s0 << " / " << s1;
  for (const auto& s : {s0, s1}) {
    EXPECT_TRUE(s.code() == absl::StatusCode::kDeadlineExceeded ||
                s.code() == absl::StatusCode::kAborted)
        << s;
  }
  EXPECT_TRUE((*comms)[2]->aborted());
  // Later calls on any rank fail at once.
  EXPECT_EQ((*comms)[2]->AllReduceSum(View(v0)).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ((*comms)[0]->Wait(absl::Seconds(1)).code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(v0, std::vector<float>(16, 1.0f));  // untouched
}

TEST(CpuCommunicatorTest, AbortFromAnotherThreadUnblocksAWaitingRank) {
  auto comms = CreateCpuCommunicators(2, absl::Seconds(30));
  ASSERT_TRUE(comms.ok());
  std::vector<float> v(4, 0.0f);
  absl::Status s;
  const absl::Time start = absl::Now();
  std::thread t([&] { s = (*comms)[0]->Recv(View(v), 1); });
  absl::SleepFor(absl::Milliseconds(50));
  (*comms)[1]->Abort();
  t.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(CpuCommunicatorTest, BadArguments) {
  EXPECT_EQ(CreateCpuCommunicators(0, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateCpuCommunicators(2, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto comms = CreateCpuCommunicators(2, absl::Seconds(1));
  ASSERT_TRUE(comms.ok());
  Communicator& c = *(*comms)[0];
  std::vector<float> v(4, 0.0f);
  EXPECT_EQ(c.Send(View(v), 2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Recv(View(v), -1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Send(View(v), 0).code(), absl::StatusCode::kInvalidArgument);
  TensorView f16 = View(v);
  f16.dtype = DType::kF16;
  EXPECT_EQ(c.AllReduceSum(f16).code(), absl::StatusCode::kInvalidArgument);
  TensorView device = View(v);
  device.device = Device::kCuda;
  EXPECT_EQ(c.AllReduceSum(device).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(c.aborted());
}

}  // namespace
}  // namespace duet::kernels
