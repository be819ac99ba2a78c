// The channel transport (--kv-transport nccl) on host pools with the CPU
// backend and CPU communicators, the control plane as direct calls: the
// whole protocol (open, join, packed messages, sequence, secrets, retries,
// aborts) runs in CI without a GPU. NCCL itself is tested on the GPU
// (tests/kernels/cuda/nccl_communicator_test.cc, the GPU cluster test).
#include "kv_transfer/kv_channel.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_communicator.h"
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
constexpr absl::Duration kTimeout = absl::Seconds(20);

// Two-rank CPU communicators met by id: Join waits (bounded) for the other
// rank, as NCCL's init does.
class CpuFactory final : public CommunicatorFactory {
 public:
  absl::StatusOr<std::string> NewId() override {
    absl::MutexLock lock(&mu_);
    return absl::StrCat("cpu-", next_++);
  }
  absl::StatusOr<std::unique_ptr<kernels::Communicator>> Join(
      const std::string& id, int rank, absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    Pair& p = pairs_[id];
    if (p.comms.empty()) {
      auto comms = kernels::CreateCpuCommunicators(2, timeout);
      if (!comms.ok()) return comms.status();
      p.comms = std::move(*comms);
    }
    ++p.joined;
    auto both = [&p] { return p.joined >= 2; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&both), timeout)) {
      return absl::DeadlineExceededError(
          absl::StrCat("rank ", rank, " of channel ", id, ": peer never came"));
    }
    return std::move(p.comms[static_cast<size_t>(rank)]);
  }

 private:
  struct Pair {
    std::vector<std::unique_ptr<kernels::Communicator>> comms;
    int joined = 0;
  };
  absl::Mutex mu_;
  int next_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Pair> pairs_ ABSL_GUARDED_BY(mu_);
};

// The control plane as direct calls to receivers by address, with hooks
// that play a broken or hostile network.
class DirectClient final : public KvChannelClient {
 public:
  void Add(const std::string& address, KvChannelServer* server) {
    servers_[address] = server;
  }
  absl::StatusOr<KvChannelGrant> Open(const KvDescriptor& dest,
                                      int32_t sender_rank,
                                      absl::Time) override {
    ++opens;
    return servers_.at(dest.control_address)->Open(sender_rank);
  }
  absl::Status Push(const KvDescriptor& dest, const KvChannelPush& push,
                    absl::Time deadline) override {
    ++pushes;
    if (lose_headers) {
      absl::SleepFor(absl::Milliseconds(200));
      return absl::DeadlineExceededError("header lost");
    }
    KvChannelPush p = push;
    if (tamper) tamper(p);
    return servers_.at(dest.control_address)->Push(p, deadline);
  }

  std::atomic<int> opens{0};
  std::atomic<int> pushes{0};
  bool lose_headers = false;
  std::function<void(KvChannelPush&)> tamper;

 private:
  std::map<std::string, KvChannelServer*> servers_;
};

KvChannelOptions SmallMessages() {
  KvChannelOptions o;
  // Three blocks of every layer per message: a plan goes in several.
  o.buffer_bytes =
      3 * int64_t{TestLayout().num_layers} * TestLayout().block_bytes();
  o.join_timeout = absl::Seconds(5);
  return o;
}

class KvChannelTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(SmallMessages()); }

  void Build(const KvChannelOptions& o) {
    src_.FillRandom(7);
    dst_.Fill(testing::kPoison);
    auto r = MakeKvChannelReceiver(dst_.view(), backend_.get(), factory_, o);
    ASSERT_TRUE(r.ok()) << r.status();
    receiver_ = std::move(*r);
    client_->Add("decode:1", receiver_.get());
    auto s = MakeKvChannelSender(src_.view(), backend_.get(), 0, factory_,
                                 client_, o);
    ASSERT_TRUE(s.ok()) << s.status();
    sender_ = std::move(*s);
  }

  absl::StatusOr<KvDescriptor> Describe(uint64_t key,
                                        const std::vector<int32_t>& ids) {
    absl::StatusOr<KvDescriptor> d = receiver_->Describe(key, ids);
    if (d.ok()) d->control_address = "decode:1";
    return d;
  }

  std::unique_ptr<kernels::Backend> backend_ = kernels::MakeCpuBackend();
  std::shared_ptr<CpuFactory> factory_ = std::make_shared<CpuFactory>();
  std::shared_ptr<DirectClient> client_ = std::make_shared<DirectClient>();
  TestPool src_{TestLayout(), kSrcBlocks};
  TestPool dst_{TestLayout(), kDstBlocks};
  std::unique_ptr<KvChannelReceiver> receiver_;
  std::unique_ptr<KvSender> sender_;
};

TEST_F(KvChannelTest, BlocksArriveExactlyOverOneReusedChannel) {
  for (uint64_t seed : {11, 12, 13}) {
    SCOPED_TRACE(seed);
    dst_.Fill(testing::kPoison);
    const CopyPlan plan = MakeCopyPlan(seed, kSrcBlocks, kDstBlocks);
    absl::StatusOr<KvDescriptor> d = Describe(seed, plan.dest_block_ids);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->transport, Transport::kNccl);
    ASSERT_TRUE(sender_->Send(*d, plan.copies, kTimeout).ok());
    // A direct receiver: the blocks hold the KV before Land.
    EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
    EXPECT_TRUE(receiver_->Land(seed).ok());
  }
  // Several messages per plan, one channel for all of them.
  EXPECT_EQ(client_->opens.load(), 1);
  EXPECT_GT(client_->pushes.load(), 3);
}

TEST_F(KvChannelTest, LayerByLayerEqualsWhole) {
  const CopyPlan plan = MakeCopyPlan(21, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = Describe(21, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  for (int32_t l = 0; l < TestLayout().num_layers; ++l) {
    ASSERT_TRUE(
        sender_->SendLayers(*d, plan.copies, {l, l + 1}, nullptr, kTimeout)
            .ok());
  }
  EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
}

TEST_F(KvChannelTest, WrongSecretWritesNothingAndTheNextSendWorks) {
  const CopyPlan plan = MakeCopyPlan(31, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = Describe(31, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  KvDescriptor forged = *d;
  forged.channel_secret = std::string(kKvChannelSecretBytes, 'x');
  const absl::Status s = sender_->Send(forged, plan.copies, kTimeout);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_TRUE(AllPoison(dst_));
  // The refused channel is closed on both sides; a new one carries the
  // real descriptor.
  ASSERT_TRUE(sender_->Send(*d, plan.copies, kTimeout).ok());
  EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
  EXPECT_EQ(client_->opens.load(), 2);
}

TEST_F(KvChannelTest, DroppedReservationTakesNoBytes) {
  const CopyPlan plan = MakeCopyPlan(41, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = Describe(41, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  receiver_->Drop(41);
  const absl::Status s = sender_->Send(*d, plan.copies, kTimeout);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << s;
  EXPECT_TRUE(AllPoison(dst_));
}

TEST_F(KvChannelTest, TamperedHeadersAreRefusedBeforeAnyByteLands) {
  const CopyPlan plan = MakeCopyPlan(51, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = Describe(51, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  const std::vector<std::function<void(KvChannelPush&)>> tampers = {
      [](KvChannelPush& p) { p.logical_blocks[0] = 1000; },
      [](KvChannelPush& p) { p.logical_blocks[1] = p.logical_blocks[0]; },
      [](KvChannelPush& p) { p.bytes *= 2; },
      [](KvChannelPush& p) { p.layer_end = 99; },
      [](KvChannelPush& p) { p.layer_begin = p.layer_end; },
  };
  for (size_t i = 0; i < tampers.size(); ++i) {
    SCOPED_TRACE(i);
    client_->tamper = tampers[i];
    const absl::Time start = absl::Now();
    const absl::Status s = sender_->Send(*d, plan.copies, kTimeout);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    // The refusal aborts the channel: the sender's Send does not wait for
    // a Recv that never comes.
    EXPECT_LT(absl::Now() - start, absl::Seconds(4));
    EXPECT_TRUE(AllPoison(dst_));
  }
  client_->tamper = [](KvChannelPush& p) { p.seq += 5; };
  EXPECT_EQ(sender_->Send(*d, plan.copies, kTimeout).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(AllPoison(dst_));
  client_->tamper = nullptr;
  ASSERT_TRUE(sender_->Send(*d, plan.copies, kTimeout).ok());
  EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
}

TEST_F(KvChannelTest, UnknownChannelIsFailedPrecondition) {
  absl::StatusOr<KvDescriptor> d = Describe(61, {0, 1});
  ASSERT_TRUE(d.ok()) << d.status();
  KvChannelPush p;
  p.channel_id = 12345;
  p.secret = d->channel_secret;
  p.logical_blocks = {0};
  p.layer_end = 1;
  p.bytes = TestLayout().block_bytes();
  EXPECT_EQ(receiver_->Push(p, absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(KvChannelTest, LostHeadersFailWithinTheDeadlineAndReopen) {
  const CopyPlan plan = MakeCopyPlan(71, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = Describe(71, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  client_->lose_headers = true;
  const absl::Time start = absl::Now();
  const absl::Status s = sender_->Send(*d, plan.copies, absl::Seconds(2));
  EXPECT_FALSE(s.ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  client_->lose_headers = false;
  ASSERT_TRUE(sender_->Send(*d, plan.copies, kTimeout).ok());
  EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
}

TEST_F(KvChannelTest, EvictedChannelIsReopenedOnce) {
  KvChannelOptions o = SmallMessages();
  o.max_channels = 1;
  Build(o);
  // A second sender (rank 1) takes the receiver's only channel slot,
  // evicting the first sender's idle channel; the first sender's next
  // send finds it gone and reopens, unseen by its caller.
  auto other =
      MakeKvChannelSender(src_.view(), backend_.get(), 1, factory_, client_, o);
  ASSERT_TRUE(other.ok()) << other.status();
  for (uint64_t key : {81, 82, 83, 84}) {
    SCOPED_TRACE(key);
    dst_.Fill(testing::kPoison);
    const CopyPlan plan = MakeCopyPlan(key, kSrcBlocks, kDstBlocks);
    absl::StatusOr<KvDescriptor> d = Describe(key, plan.dest_block_ids);
    ASSERT_TRUE(d.ok()) << d.status();
    KvSender& s = key % 2 ? *sender_ : **other;
    ASSERT_TRUE(s.Send(*d, plan.copies, kTimeout).ok());
    EXPECT_TRUE(BlocksCopied(src_, dst_, plan.dest_block_ids, plan.copies));
  }
  EXPECT_EQ(client_->opens.load(), 4);
}

TEST_F(KvChannelTest, DescribeLandDropContract) {
  ASSERT_TRUE(Describe(91, {0, 1}).ok());
  EXPECT_EQ(Describe(91, {2}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Describe(92, {kDstBlocks}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(receiver_->Land(91).ok());
  EXPECT_EQ(receiver_->Land(91).code(), absl::StatusCode::kNotFound);
  receiver_->Drop(12345);  // unknown: ignored
  // Secrets differ per request.
  absl::StatusOr<KvDescriptor> a = Describe(93, {0});
  absl::StatusOr<KvDescriptor> b = Describe(94, {1});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->channel_secret, b->channel_secret);
  EXPECT_EQ(a->channel_secret.size(), kKvChannelSecretBytes);
}

TEST_F(KvChannelTest, DescriptorWithoutAddressIsInvalid) {
  const CopyPlan plan = MakeCopyPlan(95, kSrcBlocks, kDstBlocks);
  absl::StatusOr<KvDescriptor> d = receiver_->Describe(95, plan.dest_block_ids);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(sender_->Send(*d, plan.copies, kTimeout).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvChannelOptionsTest, BufferMustHoldABlockOfEveryLayer) {
  auto backend = kernels::MakeCpuBackend();
  TestPool pool(TestLayout(), 4);
  KvChannelOptions o;
  o.buffer_bytes = TestLayout().block_bytes();
  EXPECT_EQ(MakeKvChannelReceiver(pool.view(), backend.get(),
                                  std::make_shared<CpuFactory>(), o)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kv_transfer
