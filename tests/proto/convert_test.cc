// serving/convert.h for KV descriptors: the fields survive the round trip,
// and a descriptor whose ids are outside what it says it addresses is
// rejected at the RPC edge, before it reaches a sender.
#include "serving/convert.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/cuda_ipc.h"
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

// Peer blobs are size-checked before UCX parses them.
TEST(ConvertKvDescriptorTest, OversizedOrEmptyUcxBlobsAreRejected) {
  v1::KvTransferDescriptor huge = ToProto(UcxDescriptor());
  huge.mutable_ranks(0)->set_ucx_worker_address(std::string(1 << 20, 'a'));
  absl::Status s = FromProto(huge).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("worker address of 1048576"));
  v1::KvTransferDescriptor empty_rkey = ToProto(UcxDescriptor());
  empty_rkey.mutable_ranks(0)->set_rkeys(1, "");
  s = FromProto(empty_rkey).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::HasSubstr("rkey of layer 1"));
}

// A peer's layout fields are uint32 on the wire and int32 inside: every
// field above 2^20 is refused before the narrowing cast (tp_size once slipped
// through and wrapped negative; found by fuzz_node_rpc).
TEST(ConvertKvLayoutTest, FieldsAboveTheCapAreRejected) {
  const v1::KvLayout good = ToProto(UcxDescriptor().layout);
  ASSERT_TRUE(FromProto(good).ok());
  for (int field = 0; field < 5; ++field) {
    v1::KvLayout bad = good;
    const uint32_t huge = 2415919033u;  // > INT32_MAX
    switch (field) {
      case 0:
        bad.set_num_layers(huge);
        break;
      case 1:
        bad.set_num_kv_heads(huge);
        break;
      case 2:
        bad.set_head_dim(huge);
        break;
      case 3:
        bad.set_block_size(huge);
        break;
      case 4:
        bad.set_tp_size(huge);
        bad.set_tp_rank(64);
        break;
    }
    const absl::Status s = FromProto(bad).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(s.message(), ::testing::HasSubstr("KV layout out of range"));
  }
}

// A receiver of TP size 2 sends one endpoint per rank; each comes back as
// that rank's descriptor with the shared ids. Endpoint counts or ranks that
// disagree with the layout are refused.
TEST(ConvertKvDescriptorTest, TensorParallelEndpointsRoundTrip) {
  kv_transfer::KvDescriptor top = UcxDescriptor();
  top.layout.tp_size = 2;
  for (int r = 0; r < 2; ++r) {
    kv_transfer::KvDescriptor one = top;
    one.layout.tp_rank = r;
    one.ucx_worker_address = absl::StrCat("worker", r);
    one.remote_layer_base = {0x1000u + r, 0x9000u + r};
    top.ranks.push_back(one);
  }
  const v1::KvTransferDescriptor p = ToProto(top);
  ASSERT_EQ(p.ranks_size(), 2);
  absl::StatusOr<kv_transfer::KvDescriptor> back = FromProto(p);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->ranks.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(back->ranks[r].layout, top.ranks[r].layout);
    EXPECT_EQ(back->ranks[r].ucx_worker_address,
              top.ranks[r].ucx_worker_address);
    EXPECT_EQ(back->ranks[r].remote_layer_base, top.ranks[r].remote_layer_base);
    EXPECT_EQ(back->ranks[r].block_ids, top.block_ids);
  }
  EXPECT_EQ(back->layout.tp_rank, 0);
  v1::KvTransferDescriptor missing = p;
  missing.mutable_ranks()->RemoveLast();
  EXPECT_EQ(FromProto(missing).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::KvTransferDescriptor swapped = p;
  swapped.mutable_ranks(0)->set_tp_rank(1);
  EXPECT_THAT(FromProto(swapped).status().message(),
              ::testing::HasSubstr("endpoint 0 says it is rank 1"));
}

TEST(ConvertKvDescriptorTest, IdsOutsideTheAddressedBlocksAreRejected) {
  for (int32_t bad : {6, -1, std::numeric_limits<int32_t>::max()}) {
    v1::KvTransferDescriptor p = ToProto(UcxDescriptor());
    p.set_block_ids(1, bad);
    EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  for (int32_t size : {0, -4}) {  // 0: also a descriptor without the field
    v1::KvTransferDescriptor p = ToProto(UcxDescriptor());
    p.set_num_blocks(size);
    EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument)
        << size;
  }
}

kv_transfer::KvDescriptor CudaIpcDescriptor() {
  kv_transfer::KvDescriptor d = UcxDescriptor();
  d.transport = kv_transfer::Transport::kCudaIpc;
  d.ucx_worker_address.clear();
  d.ucx_rkeys.clear();
  d.remote_layer_base.clear();
  d.cuda_ipc_handles = {std::string(64, 'a'), std::string(64, 'b')};
  d.host_id = "boot-1";
  d.gpu_uuid = std::string(16, 'u');
  return d;
}

TEST(ConvertKvDescriptorTest, CudaIpcRoundTripAndMalformedHandles) {
  const kv_transfer::KvDescriptor d = CudaIpcDescriptor();
  absl::StatusOr<kv_transfer::KvDescriptor> back = FromProto(ToProto(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->transport, kv_transfer::Transport::kCudaIpc);
  EXPECT_EQ(back->cuda_ipc_handles, d.cuda_ipc_handles);
  EXPECT_EQ(back->host_id, d.host_id);
  EXPECT_EQ(back->gpu_uuid, d.gpu_uuid);
  EXPECT_EQ(back->block_ids, d.block_ids);
  // A handle of the wrong size, one handle short, a short UUID, no host:
  // refused at the edge, before a sender could open anything.
  v1::KvTransferDescriptor p = ToProto(d);
  p.mutable_ranks(0)->set_cuda_ipc_handles(1, std::string(63, 'b'));
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ToProto(d);
  p.mutable_ranks(0)->mutable_cuda_ipc_handles()->RemoveLast();
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ToProto(d);
  p.mutable_ranks(0)->set_gpu_uuid("short");
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ToProto(d);
  p.mutable_ranks(0)->clear_host_id();
  EXPECT_FALSE(FromProto(p).ok());
}

TEST(ConvertKvDescriptorTest, NcclRoundTripNeverCarriesAnAddress) {
  kv_transfer::KvDescriptor d = CudaIpcDescriptor();
  d.transport = kv_transfer::Transport::kNccl;
  d.cuda_ipc_handles.clear();
  d.host_id.clear();
  d.gpu_uuid.clear();
  d.endpoint_name = "3f2a9c01d4e5b607";
  d.channel_secret = std::string(16, '\x11');
  d.control_address = "10.0.0.9:1";  // the prefill node's own knowledge
  absl::StatusOr<kv_transfer::KvDescriptor> back = FromProto(ToProto(d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->transport, kv_transfer::Transport::kNccl);
  EXPECT_EQ(back->endpoint_name, d.endpoint_name);
  EXPECT_EQ(back->channel_secret, d.channel_secret);
  EXPECT_EQ(back->block_ids, d.block_ids);
  EXPECT_TRUE(back->control_address.empty());
  // A secret of the wrong size, no pool id, an oversized one: refused.
  v1::KvTransferDescriptor p = ToProto(d);
  p.mutable_ranks(0)->set_channel_secret("short");
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ToProto(d);
  p.mutable_ranks(0)->clear_channel_pool_id();
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = ToProto(d);
  p.mutable_ranks(0)->set_channel_pool_id(std::string(65, 'p'));
  EXPECT_EQ(FromProto(p).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConvertKvDescriptorTest, CudaIpcFromAnotherHostIsRefused) {
  const kv_transfer::KvDescriptor d = CudaIpcDescriptor();
  EXPECT_TRUE(kv_transfer::CheckCudaIpcDescriptor(d, d.layout, "boot-1").ok());
  const absl::Status other =
      kv_transfer::CheckCudaIpcDescriptor(d, d.layout, "boot-2");
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(other.message().find("--kv-transport ucx"), std::string::npos);
  EXPECT_FALSE(kv_transfer::LocalHostId().empty());
}

}  // namespace
}  // namespace duet::serving
