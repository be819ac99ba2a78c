// kv_transfer/transfer_plan.h for every pair of TP sizes 1, 2, 4, 8: a
// whole-model block is split among the source ranks as the model splits
// heads, the plan's slices are copied byte by byte into the destination
// ranks' blocks, and every destination block must equal the whole block
// split the destination's way; every destination byte is written exactly
// once. Plus the slices a rank sends/receives, and layouts the plan refuses.
#include "kv_transfer/transfer_plan.h"

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::kv_transfer {
namespace {

KvLayout Layout(int32_t tp_size) {
  KvLayout l;
  l.num_layers = 3;
  l.num_kv_heads = 8;
  l.head_dim = 4;
  l.block_size = 2;
  l.dtype = DType::kBF16;
  l.tp_size = tp_size;
  return l;
}

// One layer's block of rank `rank` of `tp` ranks, cut from a whole-model
// block [2][heads][block_size][head_dim] of distinct bytes.
std::vector<uint8_t> RankBlock(const KvLayout& l, int32_t tp, int32_t rank,
                               const std::vector<uint8_t>& whole) {
  const int64_t head_bytes =
      int64_t{l.block_size} * l.head_dim * DTypeSize(l.dtype);
  const int32_t local = l.num_kv_heads / tp;
  std::vector<uint8_t> out;
  for (int kv = 0; kv < 2; ++kv) {
    const uint8_t* from =
        whole.data() + (kv * l.num_kv_heads + rank * local) * head_bytes;
    out.insert(out.end(), from, from + local * head_bytes);
  }
  return out;
}

TEST(TransferPlanTest, EveryPairOfTpSizesReassemblesTheBlocks) {
  for (int32_t n : {1, 2, 4, 8}) {
    for (int32_t m : {1, 2, 4, 8}) {
      SCOPED_TRACE(testing::Message() << "P TP=" << n << " -> D TP=" << m);
      const KvLayout src = Layout(n), dst = Layout(m);
      auto plan = MakeTransferPlan(src, dst);
      ASSERT_TRUE(plan.ok()) << plan.status();
      const int64_t whole_bytes =
          2 * int64_t{8} * src.block_size * src.head_dim * 2;
      std::vector<uint8_t> whole(static_cast<size_t>(whole_bytes));
      for (size_t i = 0; i < whole.size(); ++i) {
        whole[i] = static_cast<uint8_t>(i * 7 + 3);
      }
      std::vector<std::vector<uint8_t>> p(n), d(m), writes(m);
      for (int32_t r = 0; r < n; ++r) p[r] = RankBlock(src, n, r, whole);
      for (int32_t r = 0; r < m; ++r) {
        d[r].assign(whole.size() / m, 0);
        writes[r].assign(whole.size() / m, 0);
        // A rank's block is what KvLayout says of it.
        KvLayout l = dst;
        l.tp_rank = r;
        ASSERT_EQ(static_cast<int64_t>(d[r].size()), l.block_bytes());
      }
      int32_t heads_moved = 0;
      for (const TransferSlice& s : plan->slices) {
        heads_moved += s.num_heads;
        for (int kv = 0; kv < 2; ++kv) {
          ASSERT_LE(s.src_offset[kv] + s.bytes,
                    static_cast<int64_t>(p[s.src_rank].size()));
          ASSERT_LE(s.dst_offset[kv] + s.bytes,
                    static_cast<int64_t>(d[s.dst_rank].size()));
          std::memcpy(d[s.dst_rank].data() + s.dst_offset[kv],
                      p[s.src_rank].data() + s.src_offset[kv], s.bytes);
          for (int64_t i = 0; i < s.bytes; ++i) {
            ++writes[s.dst_rank][s.dst_offset[kv] + i];
          }
        }
      }
      EXPECT_EQ(heads_moved, 8);
      EXPECT_EQ(plan->slices.size(), static_cast<size_t>(std::max(n, m)));
      for (int32_t r = 0; r < m; ++r) {
        EXPECT_EQ(d[r], RankBlock(dst, m, r, whole)) << "D rank " << r;
        EXPECT_THAT(writes[r], ::testing::Each(1)) << "D rank " << r;
      }
      // FromRank / ToRank partition the slices.
      size_t from = 0, to = 0;
      for (int32_t r = 0; r < n; ++r) from += plan->FromRank(r).size();
      for (int32_t r = 0; r < m; ++r) to += plan->ToRank(r).size();
      EXPECT_EQ(from, plan->slices.size());
      EXPECT_EQ(to, plan->slices.size());
    }
  }
}

TEST(TransferPlanTest, TwoToOneSendsEachHalfIntoPlace) {
  auto plan = MakeTransferPlan(Layout(2), Layout(1));
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->slices.size(), 2u);
  const int64_t head = 2 * 4 * 2;  // block_size * head_dim * bf16
  const TransferSlice& s1 = plan->slices[1];
  EXPECT_EQ(s1.src_rank, 1);
  EXPECT_EQ(s1.dst_rank, 0);
  EXPECT_EQ(s1.head_begin, 4);
  EXPECT_EQ(s1.bytes, 4 * head);
  EXPECT_EQ(s1.src_offset[0], 0);
  EXPECT_EQ(s1.src_offset[1], 4 * head);  // V after the rank's 4 K heads
  EXPECT_EQ(s1.dst_offset[0], 4 * head);  // heads 4..7 of 8
  EXPECT_EQ(s1.dst_offset[1], (8 + 4) * head);
}

TEST(TransferPlanTest, RefusesOtherLayoutsAndNonDividingSizes) {
  KvLayout other = Layout(1);
  other.head_dim = 8;
  EXPECT_EQ(MakeTransferPlan(Layout(1), other).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad = MakeTransferPlan(Layout(3), Layout(1));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              ::testing::HasSubstr("tensor-parallel size 3 does not divide "
                                   "the 8 KV heads"));
  // The ranks' own tp_rank does not matter.
  KvLayout ranked = Layout(2);
  ranked.tp_rank = 1;
  EXPECT_TRUE(MakeTransferPlan(ranked, Layout(4)).ok());
}

}  // namespace
}  // namespace duet::kv_transfer
