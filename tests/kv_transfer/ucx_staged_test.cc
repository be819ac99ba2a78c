// The UCX transport's staged mode (host staging + the backend's gather /
// scatter), run on host pools with the CPU backend (UcxOptions::staged), so
// the path GPU pools take is exercised without a GPU: byte-exact transfers
// in every combination of staged and direct sides, descriptors that address
// only a request's own staging run, staging exhaustion, quarantine and the
// Describe / Land / Drop contract.
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kv_transfer/ucx_transport.h"
#include "tests/kv_transfer/kv_test_util.h"

namespace duet::kv_transfer {
namespace {

using testing::AllPoison;
using testing::BlocksCopied;
using testing::CopyPlan;
using testing::MakeCopyPlan;
using testing::TestLayout;
using testing::TestPool;

constexpr int32_t kSrcBlocks = 24;
constexpr int32_t kDstBlocks = 40;
constexpr absl::Duration kSendTimeout = absl::Seconds(20);
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

UcxOptions StagedOptions(bool staged) {
  UcxOptions options;
  options.transports = "tcp";
  options.staged = staged;
  // Three blocks of every layer: a Send of a plan goes in several batches.
  options.sender_staging_bytes =
      3 * int64_t{TestLayout().num_layers} * TestLayout().block_bytes();
  return options;
}

// (sender staged, receiver staged).
class UcxStagedTest
    : public ::testing::TestWithParam<std::tuple<bool, bool>> {
 protected:
  void SetUp() override {
    src_.FillRandom(9);
    auto receiver = MakeUcxReceiver(
        dst_.view(), StagedOptions(std::get<1>(GetParam())), backend_.get());
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    receiver_ = std::move(*receiver);
    auto sender = MakeUcxSender(
        src_.view(), StagedOptions(std::get<0>(GetParam())), backend_.get());
    ASSERT_TRUE(sender.ok()) << sender.status();
    sender_ = std::move(*sender);
  }
  bool receiver_staged() const { return std::get<1>(GetParam()); }

  std::unique_ptr<kernels::Backend> backend_ = kernels::MakeCpuBackend();
  TestPool src_{TestLayout(), kSrcBlocks};
  TestPool dst_{TestLayout(), kDstBlocks};
  std::unique_ptr<KvReceiver> receiver_;
  std::unique_ptr<KvSender> sender_;
};

TEST_P(UcxStagedTest, BlocksArriveExactlyAndOnlyOnLand) {
  for (uint64_t seed : {51, 52, 53}) {
    SCOPED_TRACE(seed);
    dst_.Fill(testing::kPoison);
    const CopyPlan plan = MakeCopyPlan(seed, kSrcBlocks, kDstBlocks);
    absl::StatusOr<KvDescriptor> d =
        receiver_->Describe(seed, plan.dest_block_ids);
    ASSERT_TRUE(d.ok()) << d.status();
    const int32_t n = static_cast<int32_t>(plan.dest_block_ids.size());
    EXPECT_EQ(d->num_blocks, receiver_staged() ? n : kDstBlocks);
    absl::Status s = sender_->Send(*d, plan.copies, kSendTimeout);
    ASSERT_TRUE(s.ok()) << s;
    // A staged receiver holds the bytes in staging until Land.
    if (receiver_staged()) EXPECT_TRUE(AllPoison(dst_));
    ASSERT_TRUE(receiver_->Land(seed).ok());
    EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
    EXPECT_EQ(receiver_->Land(seed).code(), absl::StatusCode::kNotFound);
  }
}

TEST_P(UcxStagedTest, ConcurrentRequestsLandIntoTheirOwnBlocks) {
  // Two requests described before either is sent: their staging runs must
  // not overlap, and each lands into its own pool blocks.
  const std::vector<int32_t> ids_a = {30, 3, 17, 18, 19};
  const std::vector<int32_t> ids_b = {4, 5, 39};
  const std::vector<BlockCopy> copies_a = {{0, 0}, {5, 1}, {6, 2}, {7, 3},
                                           {23, 4}};
  const std::vector<BlockCopy> copies_b = {{8, 2}, {1, 0}, {2, 1}};
  const KvDescriptor da = *receiver_->Describe(1, ids_a);
  const KvDescriptor db = *receiver_->Describe(2, ids_b);
  ASSERT_TRUE(sender_->Send(db, copies_b, kSendTimeout).ok());
  ASSERT_TRUE(sender_->Send(da, copies_a, kSendTimeout).ok());
  ASSERT_TRUE(receiver_->Land(2).ok());
  ASSERT_TRUE(receiver_->Land(1).ok());
  std::vector<int32_t> ids = ids_a;
  ids.insert(ids.end(), ids_b.begin(), ids_b.end());
  std::vector<BlockCopy> copies = copies_a;
  for (BlockCopy c : copies_b) {
    c.logical_block += static_cast<int32_t>(ids_a.size());
    copies.push_back(c);
  }
  EXPECT_TRUE(BlocksCopied(src_, dst_, ids, copies));
}

TEST_P(UcxStagedTest, ForgedDescriptorsAreInvalidArgumentAndMoveNothing) {
  const KvDescriptor good = *receiver_->Describe(1, std::vector<int32_t>{6, 2});
  auto code = [&](const KvDescriptor& d, std::vector<BlockCopy> copies) {
    return sender_->Send(d, copies, kSendTimeout).code();
  };
  for (int32_t forged : {good.num_blocks, -1, 1 << 30,
                         std::numeric_limits<int32_t>::max()}) {
    SCOPED_TRACE(forged);
    KvDescriptor d = good;
    d.block_ids[0] = forged;
    EXPECT_EQ(code(d, {{0, 0}}), kInvalid);
  }
  for (int32_t size : {0, -7, 1}) {  // 1: fewer than the two ids
    KvDescriptor d = good;
    d.num_blocks = size;
    EXPECT_EQ(code(d, {{0, 0}}), kInvalid) << size;
  }
  // Nothing was sent: Drop (Land would copy whatever staging holds, which
  // is the caller's bug, not the transport's).
  receiver_->Drop(1);
  EXPECT_TRUE(AllPoison(dst_));
  // Describe checks the pool's ids, staged or not.
  EXPECT_EQ(receiver_->Describe(2, std::vector<int32_t>{kDstBlocks})
                .status()
                .code(),
            kInvalid);
  EXPECT_EQ(receiver_->Describe(2, std::vector<int32_t>{-1}).status().code(),
            kInvalid);
  EXPECT_EQ(receiver_->Describe(2, std::vector<int32_t>{1, 1}).status().code(),
            kInvalid);
  ASSERT_TRUE(receiver_->Describe(2, std::vector<int32_t>{1}).ok());
  EXPECT_EQ(receiver_->Describe(2, std::vector<int32_t>{2}).status().code(),
            absl::StatusCode::kAlreadyExists);
  receiver_->Drop(2);
  receiver_->Drop(99);  // unknown: ignored
  EXPECT_EQ(receiver_->Land(2).code(), absl::StatusCode::kNotFound);
}

TEST_P(UcxStagedTest, DroppedTransferNeverLands) {
  const CopyPlan plan = MakeCopyPlan(61, kSrcBlocks, kDstBlocks);
  const KvDescriptor d = *receiver_->Describe(7, plan.dest_block_ids);
  ASSERT_TRUE(sender_->Send(d, plan.copies, kSendTimeout).ok());
  receiver_->Drop(7);
  EXPECT_EQ(receiver_->Land(7).code(), absl::StatusCode::kNotFound);
  if (receiver_staged()) EXPECT_TRUE(AllPoison(dst_));
}

INSTANTIATE_TEST_SUITE_P(
    Modes, UcxStagedTest,
    ::testing::Values(std::make_tuple(true, true),
                      std::make_tuple(true, false),
                      std::make_tuple(false, true)),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param) ? "StagedSender"
                                                  : "DirectSender",
                          std::get<1>(info.param) ? "StagedReceiver"
                                                  : "DirectReceiver");
    });

// A staged receiver on the CPU backend with 8 staging slots.
struct SmallStagedReceiver {
  explicit SmallStagedReceiver(absl::Duration quarantine)
      : dst(TestLayout(), kDstBlocks) {
    options = StagedOptions(true);
    options.staging_blocks = 8;
    options.staging_quarantine = quarantine;
    auto r = MakeUcxReceiver(dst.view(), options, backend.get());
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) receiver = std::move(*r);
  }
  std::unique_ptr<kernels::Backend> backend = kernels::MakeCpuBackend();
  TestPool dst;
  UcxOptions options;
  std::unique_ptr<KvReceiver> receiver;
};

TEST(UcxStagingTest, SlotsRunOutAndComeBackAfterLandOrQuarantine) {
  SmallStagedReceiver staged(absl::Milliseconds(300));
  ASSERT_NE(staged.receiver, nullptr);
  KvReceiver& r = *staged.receiver;
  const TestPool& dst = staged.dst;
  const UcxOptions& options = staged.options;
  const auto kExhausted = absl::StatusCode::kResourceExhausted;
  ASSERT_TRUE(r.Describe(1, std::vector<int32_t>{0, 1, 2, 3, 4, 5}).ok());
  EXPECT_EQ(r.Describe(2, std::vector<int32_t>{6, 7, 8}).status().code(),
            kExhausted);
  // A failed Describe leaves no key behind.
  EXPECT_EQ(r.Land(2).code(), absl::StatusCode::kNotFound);
  // Landed: reusable at once.
  ASSERT_TRUE(r.Land(1).ok());
  ASSERT_TRUE(r.Describe(2, std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}).ok());
  // Dropped: only after the quarantine.
  const absl::Time dropped = absl::Now();
  r.Drop(2);
  EXPECT_EQ(r.Describe(3, std::vector<int32_t>{9}).status().code(),
            kExhausted);
  absl::SleepFor(options.staging_quarantine - (absl::Now() - dropped) +
                 absl::Milliseconds(20));
  EXPECT_TRUE(r.Describe(3, std::vector<int32_t>{9}).ok());
  // More blocks than the staging has: never fits.
  std::vector<int32_t> all(9);
  for (int32_t i = 0; i < 9; ++i) all[static_cast<size_t>(i)] = 10 + i;
  EXPECT_EQ(r.Describe(4, all).status().code(), kExhausted);
  EXPECT_EQ(r.Describe(5, std::vector<int32_t>{}).status().code(), kInvalid);
  EXPECT_EQ(r.max_blocks_per_request(), 8);
  EXPECT_TRUE(AllPoison(dst));
}

// A completed transfer whose KV is not needed (the request ended at its
// first token) frees its staging at once: no quarantine, no landing.
TEST(UcxStagingTest, DiscardFreesAtOnceAndLandsNothing) {
  SmallStagedReceiver staged(absl::Seconds(30));
  ASSERT_NE(staged.receiver, nullptr);
  KvReceiver& r = *staged.receiver;
  const TestPool& dst = staged.dst;
  ASSERT_TRUE(r.Describe(1, std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}).ok());
  r.Discard(1);
  EXPECT_EQ(r.Land(1).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(r.Describe(2, std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}).ok());
  r.Discard(99);  // unknown: ignored
  EXPECT_TRUE(AllPoison(dst));
}

}  // namespace
}  // namespace duet::kv_transfer
