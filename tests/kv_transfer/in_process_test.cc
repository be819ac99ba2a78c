#include "kv_transfer/in_process.h"

#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/kv_transfer/kv_test_util.h"

namespace duet::kv_transfer {
namespace {

using testing::AllPoison;
using testing::BlocksCopied;
using testing::CopyPlan;
using testing::MakeCopyPlan;
using testing::TestLayout;
using testing::TestPool;

constexpr absl::Duration kTimeout = absl::Seconds(5);

TEST(InProcessTest, CopiesPermutedBlocksOfEveryLayerExactly) {
  TestPool src(TestLayout(), 24);
  src.FillRandom(1);
  TestPool dst(TestLayout(), 40);
  InProcessRegistry registry;
  auto receiver = MakeInProcessReceiver(registry, "decode0", dst.view());
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  std::unique_ptr<KvSender> sender = MakeInProcessSender(registry, src.view());

  for (uint64_t seed : {11, 12, 13}) {
    SCOPED_TRACE(seed);
    dst.Fill(testing::kPoison);
    const CopyPlan plan = MakeCopyPlan(seed, 24, 40);
    absl::StatusOr<KvDescriptor> d =
        (*receiver)->Describe(seed, plan.dest_block_ids);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->transport, Transport::kInProcess);
    EXPECT_EQ(d->endpoint_name, "decode0");
    EXPECT_EQ(d->num_blocks, 40);
    ASSERT_TRUE(sender->Send(*d, plan.copies, kTimeout).ok());
    EXPECT_TRUE((*receiver)->Land(seed).ok());
    EXPECT_TRUE(BlocksCopied(src, dst, plan.dest_block_ids, plan.copies));
  }
}

TEST(InProcessTest, EmptyCopyListIsOk) {
  TestPool src(TestLayout(), 4);
  TestPool dst(TestLayout(), 4);
  InProcessRegistry registry;
  auto receiver = MakeInProcessReceiver(registry, "d", dst.view());
  ASSERT_TRUE(receiver.ok());
  auto d = (*receiver)->Describe(1, std::vector<int32_t>{1, 2});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(
      MakeInProcessSender(registry, src.view())->Send(*d, {}, kTimeout).ok());
  EXPECT_TRUE(AllPoison(dst));
}

TEST(InProcessTest, UnknownOrDestroyedReceiverIsUnavailable) {
  TestPool src(TestLayout(), 8);
  src.FillRandom(2);
  TestPool dst(TestLayout(), 8);
  InProcessRegistry registry;
  std::unique_ptr<KvSender> sender = MakeInProcessSender(registry, src.view());
  KvDescriptor d;
  {
    auto receiver = MakeInProcessReceiver(registry, "gone", dst.view());
    ASSERT_TRUE(receiver.ok());
    EXPECT_TRUE(registry.Contains("gone"));
    d = *(*receiver)->Describe(1, std::vector<int32_t>{3});
  }
  EXPECT_FALSE(registry.Contains("gone"));
  const std::vector<BlockCopy> copies = {{0, 0}};
  EXPECT_EQ(sender->Send(d, copies, kTimeout).code(),
            absl::StatusCode::kUnavailable);
  d.endpoint_name = "never-registered";
  EXPECT_EQ(sender->Send(d, copies, kTimeout).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(AllPoison(dst));
}

TEST(InProcessTest, DuplicateNameIsAlreadyExists) {
  TestPool dst(TestLayout(), 4);
  InProcessRegistry registry;
  auto a = MakeInProcessReceiver(registry, "x", dst.view());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(MakeInProcessReceiver(registry, "x", dst.view()).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(InProcessTest, InvalidPoolsAreRejected) {
  InProcessRegistry registry;
  TestPool good(TestLayout(), 4);
  KvPoolView v = good.view();
  v.layer_base.pop_back();
  EXPECT_EQ(MakeInProcessReceiver(registry, "a", v).status().code(),
            absl::StatusCode::kInvalidArgument);
  v = good.view();
  v.num_blocks = 0;
  EXPECT_EQ(MakeInProcessReceiver(registry, "b", v).status().code(),
            absl::StatusCode::kInvalidArgument);
  v = good.view();
  v.layout.tp_size = 3;  // does not divide 8 kv heads
  EXPECT_EQ(MakeInProcessReceiver(registry, "c", v).status().code(),
            absl::StatusCode::kInvalidArgument);
  v = good.view();
  v.device = Device::kCuda;
  EXPECT_EQ(MakeInProcessReceiver(registry, "d", v).status().code(),
            absl::StatusCode::kInvalidArgument);
}

class InProcessValidationTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kKey = 42;
  void SetUp() override {
    src_.FillRandom(3);
    auto r = MakeInProcessReceiver(registry_, "d", dst_.view());
    ASSERT_TRUE(r.ok());
    receiver_ = std::move(*r);
    sender_ = MakeInProcessSender(registry_, src_.view());
    desc_ = *receiver_->Describe(kKey, std::vector<int32_t>{5, 6});
  }
  absl::StatusCode SendCode(const KvDescriptor& d,
                            std::vector<BlockCopy> copies) {
    return sender_->Send(d, copies, kTimeout).code();
  }

  TestPool src_{TestLayout(), 8};
  TestPool dst_{TestLayout(), 8};
  InProcessRegistry registry_;
  std::unique_ptr<KvReceiver> receiver_;
  std::unique_ptr<KvSender> sender_;
  KvDescriptor desc_;
};

TEST_F(InProcessValidationTest, LayoutMismatchIsInvalidArgument) {
  KvDescriptor d = desc_;
  d.layout.head_dim *= 2;
  EXPECT_EQ(SendCode(d, {{0, 0}}), absl::StatusCode::kInvalidArgument);
  // A sender whose pool differs from the receiver's.
  KvLayout other = TestLayout();
  other.num_kv_heads = 4;
  TestPool small(other, 8);
  auto s = MakeInProcessSender(registry_, small.view());
  d = desc_;
  d.layout = other;  // matches the sender but not the receiver's pool
  EXPECT_EQ(s->Send(d, std::vector<BlockCopy>{{0, 0}}, kTimeout).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Send(desc_, std::vector<BlockCopy>{{0, 0}}, kTimeout).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AllPoison(dst_));
}

TEST_F(InProcessValidationTest, OutOfRangeBlocksAreInvalidArgument) {
  EXPECT_EQ(SendCode(desc_, {{8, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCode(desc_, {{-1, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCode(desc_, {{0, 2}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCode(desc_, {{0, -1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SendCode(desc_, {{0, 0}, {1, 0}}),
            absl::StatusCode::kInvalidArgument);  // logical block twice
  KvDescriptor d = desc_;
  d.block_ids[1] = 8;  // beyond the receiver's pool
  EXPECT_EQ(SendCode(d, {{0, 1}}), absl::StatusCode::kInvalidArgument);
  d.block_ids[1] = -3;
  EXPECT_EQ(SendCode(d, {{0, 1}}), absl::StatusCode::kInvalidArgument);
  d = desc_;
  d.transport = Transport::kUcx;
  EXPECT_EQ(SendCode(d, {{0, 0}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(receiver_->Describe(1, std::vector<int32_t>{8}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(receiver_->Describe(2, std::vector<int32_t>{1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(receiver_->Describe(3, std::vector<int32_t>{-1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AllPoison(dst_));
}

// A forged descriptor (ids past what the receiver exposed, a wrong or
// missing pool size, two copies into one block) is rejected before any
// byte moves, whatever the receiver's real pool would allow.
TEST_F(InProcessValidationTest, ForgedDescriptorsAreInvalidArgument) {
  const std::vector<BlockCopy> one = {{0, 0}};
  for (int32_t forged : {8, -1, 1 << 30, std::numeric_limits<int32_t>::max(),
                         std::numeric_limits<int32_t>::min()}) {
    SCOPED_TRACE(forged);
    KvDescriptor d = desc_;
    d.block_ids[0] = forged;
    EXPECT_EQ(SendCode(d, one), absl::StatusCode::kInvalidArgument);
    // Claiming a bigger pool does not help: the in-process sender checks
    // the size against the real one.
    d.num_blocks = std::numeric_limits<int32_t>::max();
    EXPECT_EQ(SendCode(d, one), absl::StatusCode::kInvalidArgument);
  }
  KvDescriptor d = desc_;
  for (int32_t size : {0, -5, 1}) {  // 1: fewer than its two block ids
    d.num_blocks = size;
    EXPECT_EQ(SendCode(d, one), absl::StatusCode::kInvalidArgument) << size;
  }
  d = desc_;
  d.num_blocks = 9;  // consistent in itself, but not the receiver's pool
  EXPECT_EQ(SendCode(d, one), absl::StatusCode::kInvalidArgument);
  d = desc_;
  d.block_ids[1] = d.block_ids[0];
  EXPECT_EQ(SendCode(d, {{0, 0}, {1, 1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AllPoison(dst_));
  EXPECT_TRUE(sender_->Send(desc_, one, kTimeout).ok());  // still works
}

TEST_F(InProcessValidationTest, KeysAreDescribedOnceAndLandedOrDroppedOnce) {
  EXPECT_EQ(receiver_->Describe(kKey, std::vector<int32_t>{1}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(receiver_->Land(7).code(), absl::StatusCode::kNotFound);
  receiver_->Drop(7);  // unknown: ignored
  EXPECT_TRUE(receiver_->Land(kKey).ok());
  EXPECT_EQ(receiver_->Land(kKey).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(receiver_->Describe(kKey, std::vector<int32_t>{1}).ok());
  receiver_->Drop(kKey);
  EXPECT_EQ(receiver_->Land(kKey).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(receiver_->Describe(kKey, std::vector<int32_t>{1}).ok());
}

TEST_F(InProcessValidationTest, NonPositiveTimeoutIsDeadlineExceeded) {
  EXPECT_EQ(
      sender_->Send(desc_, std::vector<BlockCopy>{{0, 0}}, absl::ZeroDuration())
          .code(),
      absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(AllPoison(dst_));
}

TEST(InProcessTest, ConcurrentSendsAndReceiverTeardown) {
  // Senders race with the receiver's destruction: every Send either lands
  // completely or reports UNAVAILABLE, and nothing crashes. Each thread owns
  // four destination blocks (concurrent writes to one block would be the
  // caller's bug).
  constexpr int kThreads = 4;
  TestPool src(TestLayout(), 16);
  src.FillRandom(4);
  TestPool dst(TestLayout(), 4 * kThreads);
  InProcessRegistry registry;
  auto receiver = MakeInProcessReceiver(registry, "d", dst.view());
  ASSERT_TRUE(receiver.ok());
  std::vector<KvDescriptor> descriptors;
  for (int t = 0; t < kThreads; ++t) {
    descriptors.push_back(*(*receiver)->Describe(
        static_cast<uint64_t>(t), std::vector<int32_t>{4 * t + 3, 4 * t, 4 * t + 2, 4 * t + 1}));
  }
  const std::vector<BlockCopy> copies = {{7, 0}, {1, 1}, {2, 2}, {12, 3}};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto sender = MakeInProcessSender(registry, src.view());
      for (int i = 0; i < 50; ++i) {
        absl::Status s = sender->Send(descriptors[t], copies, kTimeout);
        EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kUnavailable) << s;
      }
    });
  }
  receiver->reset();
  for (auto& t : threads) t.join();
}

}  // namespace
}  // namespace duet::kv_transfer
