#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::kv_transfer {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(KvLayoutTest, BlockBytesMatchesDesignNumbers) {
  // DESIGN.md §3: Qwen3-4B, bf16, 16-token block per layer (K+V) = 64 KiB.
  KvLayout layout{.num_layers = 36,
                  .num_kv_heads = 8,
                  .head_dim = 128,
                  .block_size = 16,
                  .dtype = DType::kBF16};
  EXPECT_EQ(layout.block_bytes(), 64 * 1024);
  // A TP=2 rank holds half of the heads.
  layout.tp_size = 2;
  layout.tp_rank = 1;
  EXPECT_EQ(layout.block_bytes(), 32 * 1024);
  layout.dtype = DType::kF32;
  EXPECT_EQ(layout.block_bytes(), 64 * 1024);
}

TEST(KvLayoutTest, BlockBytesOfMalformedLayoutIsZero) {
  KvLayout layout{.num_layers = 1,
                  .num_kv_heads = 8,
                  .head_dim = 4,
                  .block_size = 4,
                  .tp_size = 0};
  EXPECT_EQ(layout.block_bytes(), 0);
}

TEST(KvLayoutTest, StringNamesEveryField) {
  KvLayout layout{.num_layers = 36,
                  .num_kv_heads = 8,
                  .head_dim = 128,
                  .block_size = 16,
                  .dtype = DType::kBF16,
                  .tp_rank = 1,
                  .tp_size = 2};
  EXPECT_EQ(KvLayoutString(layout),
            "{layers=36 kv_heads=8 head_dim=128 block_size=16 dtype=bf16 "
            "tp=1/2}");
}

TEST(KvLayoutTest, CheckSameLayout) {
  KvLayout a{.num_layers = 2,
             .num_kv_heads = 4,
             .head_dim = 8,
             .block_size = 16,
             .dtype = DType::kBF16};
  EXPECT_TRUE(CheckSameLayout(a, a).ok());
  KvLayout b = a;
  b.block_size = 32;
  absl::Status s = CheckSameLayout(a, b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              AllOf(HasSubstr("block_size=16"), HasSubstr("block_size=32")));
  b = a;
  b.tp_rank = 1;
  b.tp_size = 2;
  EXPECT_EQ(CheckSameLayout(a, b).code(), absl::StatusCode::kInvalidArgument);
  b = a;
  b.dtype = DType::kF16;
  EXPECT_EQ(CheckSameLayout(a, b).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::kv_transfer
