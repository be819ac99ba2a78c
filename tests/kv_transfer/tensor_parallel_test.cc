// kv_transfer/tensor_parallel.h over the in-process transport, for every
// pair of TP sizes 1, 2, 4 on both sides: each receiving rank's blocks end
// up holding, head by head, K and V of the sending rank that owns the head;
// blocks not sent stay untouched; a layer range moves only those layers.
// Plus the checks: a slice that is not the plan's, a descriptor whose rank
// count does not match its TP size, a transport without slices.
#include "kv_transfer/tensor_parallel.h"

#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/in_process.h"
#include "kv_transfer/transfer_plan.h"
#include "tests/kv_transfer/kv_test_util.h"

namespace duet::kv_transfer {
namespace {

using testing::kPoison;
using testing::TestPool;

KvLayout Layout(int32_t tp_size, int32_t tp_rank = 0) {
  KvLayout l = testing::TestLayout();  // 8 KV heads
  l.tp_size = tp_size;
  l.tp_rank = tp_rank;
  return l;
}

// Bytes of (layer, block, kv, global head) as the sending ranks hold them.
const uint8_t* SourceHead(const std::vector<TestPool>& p, int32_t n,
                          int32_t layer, int32_t block, int kv, int32_t head) {
  const KvLayout l = Layout(n);
  const int32_t local = l.num_kv_heads / n;
  const int64_t head_bytes =
      int64_t{l.block_size} * l.head_dim * DTypeSize(l.dtype);
  const int32_t rank = head / local;
  return p[rank].block(layer, block) +
         (kv * local + head - rank * local) * head_bytes;
}

void RunPair(int32_t n, int32_t m) {
  SCOPED_TRACE(::testing::Message() << "P TP=" << n << " -> D TP=" << m);
  constexpr int32_t kBlocks = 12;
  InProcessRegistry registry;
  std::vector<TestPool> p, d;
  for (int32_t r = 0; r < n; ++r) {
    p.emplace_back(Layout(n, r), kBlocks);
    p.back().FillRandom(100 + r);
  }
  std::vector<std::unique_ptr<KvReceiver>> receivers;
  for (int32_t r = 0; r < m; ++r) {
    d.emplace_back(Layout(m, r), kBlocks);
    d.back().Fill(kPoison);
    auto rx = MakeInProcessReceiver(registry, "d" + std::to_string(r),
                                    d.back().view());
    ASSERT_TRUE(rx.ok()) << rx.status();
    receivers.push_back(std::move(*rx));
  }
  std::vector<std::unique_ptr<KvSender>> senders;
  for (int32_t r = 0; r < n; ++r) {
    senders.push_back(MakeInProcessSender(registry, p[r].view()));
  }
  auto receiver = MakeTensorParallelReceiver(std::move(receivers));
  ASSERT_TRUE(receiver.ok());
  auto sender = MakeTensorParallelSender(std::move(senders), Layout(n));
  ASSERT_TRUE(sender.ok());
  const std::vector<int32_t> ids = {7, 2, 3, 10};
  auto desc = (*receiver)->Describe(1, ids);
  ASSERT_TRUE(desc.ok()) << desc.status();
  EXPECT_EQ(desc->ranks.size(), m == 1 ? 0u : static_cast<size_t>(m));
  const std::vector<BlockCopy> copies = {{5, 0}, {0, 1}, {1, 2}, {9, 3}};
  // Layers [1, 3) first, then the rest: layer by layer as a prefill would.
  ASSERT_TRUE((*sender)
                  ->SendLayers(*desc, copies, LayerRange{1, 3}, nullptr,
                               absl::Seconds(5))
                  .ok());
  ASSERT_TRUE((*sender)
                  ->SendLayers(*desc, copies, LayerRange{0, 1}, nullptr,
                               absl::Seconds(5))
                  .ok());
  ASSERT_TRUE((*sender)
                  ->SendLayers(*desc, copies, LayerRange{3, 4}, nullptr,
                               absl::Seconds(5))
                  .ok());
  ASSERT_TRUE((*receiver)->Land(1).ok());
  const KvLayout whole = Layout(1);
  const int64_t head_bytes =
      int64_t{whole.block_size} * whole.head_dim * DTypeSize(whole.dtype);
  const int32_t local = whole.num_kv_heads / m;
  for (int32_t r = 0; r < m; ++r) {
    for (int32_t layer = 0; layer < whole.num_layers; ++layer) {
      for (int32_t b = 0; b < kBlocks; ++b) {
        const uint8_t* got = d[r].block(layer, b);
        int32_t src_block = -1;
        for (const BlockCopy& c : copies) {
          if (ids[c.logical_block] == b) src_block = c.src_block;
        }
        for (int kv = 0; kv < 2; ++kv) {
          for (int32_t h = 0; h < local; ++h) {
            const uint8_t* at = got + (kv * local + h) * head_bytes;
            if (src_block < 0) {
              for (int64_t i = 0; i < head_bytes; ++i) {
                ASSERT_EQ(at[i], kPoison) << "untouched block " << b;
              }
              continue;
            }
            const uint8_t* want =
                SourceHead(p, n, layer, src_block, kv, r * local + h);
            ASSERT_EQ(std::memcmp(at, want, head_bytes), 0)
                << "D rank " << r << " layer " << layer << " block " << b
                << " kv " << kv << " head " << r * local + h;
          }
        }
      }
    }
  }
}

TEST(TensorParallelKvTest, EveryPairOfTpSizesMovesEachHeadIntoPlace) {
  for (int32_t n : {1, 2, 4}) {
    for (int32_t m : {1, 2, 4}) RunPair(n, m);
  }
}

TEST(TensorParallelKvTest, RefusesForeignSlicesAndMismatchedDescriptors) {
  InProcessRegistry registry;
  TestPool src(Layout(2, 0), 4), dst(Layout(1), 4);
  src.FillRandom(1);
  dst.Fill(kPoison);
  auto rx = MakeInProcessReceiver(registry, "d", dst.view());
  ASSERT_TRUE(rx.ok());
  auto desc = (*rx)->Describe(1, std::vector<int32_t>{0, 1});
  ASSERT_TRUE(desc.ok());
  auto tx = MakeInProcessSender(registry, src.view());
  const std::vector<BlockCopy> copies = {{0, 0}, {1, 1}};
  auto plan = MakeTransferPlan(Layout(2), Layout(1));
  ASSERT_TRUE(plan.ok());
  // Rank 0 presenting rank 1's slice (other offsets): refused, nothing moves.
  TransferSlice foreign = plan->FromRank(1)[0];
  absl::Status s = tx->SendSlice(*desc, copies, {}, foreign, nullptr,
                                 absl::Seconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("is not what source rank 0"));
  foreign = plan->FromRank(0)[0];
  foreign.bytes *= 2;  // would run past the block
  EXPECT_EQ(tx->SendSlice(*desc, copies, {}, foreign, nullptr, absl::Seconds(1))
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::AllPoison(dst));
  // The whole-block path refuses another TP size outright.
  EXPECT_EQ(tx->SendLayers(*desc, copies, {}, nullptr, absl::Seconds(1)).code(),
            absl::StatusCode::kInvalidArgument);
  // A descriptor claiming TP=2 with one rank endpoint.
  std::vector<std::unique_ptr<KvSender>> ranks;
  ranks.push_back(MakeInProcessSender(registry, src.view()));
  TestPool src1(Layout(2, 1), 4);
  ranks.push_back(MakeInProcessSender(registry, src1.view()));
  auto tp = MakeTensorParallelSender(std::move(ranks), Layout(2));
  ASSERT_TRUE(tp.ok());
  KvDescriptor lying = *desc;
  lying.layout.tp_size = 2;
  s = (*tp)->SendLayers(lying, copies, {}, nullptr, absl::Seconds(1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing::AllPoison(dst));
  EXPECT_EQ(MakeTensorParallelSender({}, Layout(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kv_transfer
