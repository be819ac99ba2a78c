// serving/convert.h for KV descriptors: the fields survive the round trip,
// and a descriptor whose ids are outside what it says it addresses is
// rejected at the RPC edge, before it reaches a sender.
#include "serving/convert.h"

#include <cstdint>
#include <limits>

#include "gtest/gtest.h"
#include "kv_transfer/kv_transfer.h"

namespace duet::serving {
namespace {

kv_transfer::KvDescriptor UcxDescriptor() {
  kv_transfer::KvDescriptor d;
  d.transport = kv_transfer::Transport::kUcx;
  d.layout.num_layers = 2;
  d.layout.num_kv_heads = 8;
  d.layout.head_dim = 128;
  d.layout.block_size = 16;
  d.layout.dtype = DType::kBF16;
  d.block_ids = {5, 0, 2};
  d.num_blocks = 6;
  d.ucx_worker_address = "worker";
  d.ucx_rkeys = {"rkey0", "rkey1"};
  d.remote_layer_base = {0x1000, 0x9000};
  return d;
}

TEST(ConvertKvDescriptorTest, RoundTripKeepsEveryField) {
  const kv_transfer::KvDescriptor d = UcxDescriptor();
  const v1::KvTransferDescriptor p = ToProto(d);
  EXPECT_EQ(p.num_blocks(), 6);
  absl::StatusOr<kv_transfer::KvDescriptor> back = FromProto(p);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->num_blocks, d.num_blocks);
  EXPECT_EQ(back->block_ids, d.block_ids);
  EXPECT_EQ(back->layout, d.layout);
  EXPECT_EQ(back->ucx_rkeys, d.ucx_rkeys);
  EXPECT_EQ(back->remote_layer_base, d.remote_layer_base);
}

TEST(ConvertKvDescriptorTest, IdsOutsideTheAddressedBlocksAreRejected) {
  for (int32_t bad : {6, -1, std::numeric_limits<int32_t>::max()}) {
    v1::KvTransferDescriptor p = ToProto(UcxDescriptor());
    p.set_block_ids(1, bad);
    EXPECT_EQ(FromProto(p).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  for (int32_t size : {0, -4}) {  // 0: also a descriptor without the field
    v1::KvTransferDescriptor p = ToProto(UcxDescriptor());
    p.set_num_blocks(size);
    EXPECT_EQ(FromProto(p).status().code(),
              absl::StatusCode::kInvalidArgument)
        << size;
  }
}

}  // namespace
}  // namespace duet::serving
