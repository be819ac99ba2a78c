#include "router/node_registry.h"

#include "gtest/gtest.h"

namespace duet::router {
namespace {

v1::RegisterRequest Node(v1::NodeRole role, const std::string& address,
                         uint32_t blocks = 100) {
  v1::RegisterRequest r;
  r.set_role(role);
  r.set_address(address);
  r.mutable_kv_layout()->set_num_layers(2);
  r.set_total_kv_blocks(blocks);
  r.set_max_model_len(4096);
  return r;
}

v1::NodeLoad Load(uint32_t free_blocks, uint64_t queued) {
  v1::NodeLoad l;
  l.set_free_kv_blocks(free_blocks);
  l.set_total_kv_blocks(100);
  l.set_queued_prefill_tokens(queued);
  return l;
}

TEST(NodeRegistryTest, PicksDecodeByFreeBlocksAndPrefillByQueuedTokens) {
  NodeRegistry reg(absl::Milliseconds(100), absl::Seconds(10));
  auto d1 = reg.Register(Node(v1::NODE_ROLE_DECODE, "h:1"));
  auto d2 = reg.Register(Node(v1::NODE_ROLE_DECODE, "h:2"));
  auto p1 = reg.Register(Node(v1::NODE_ROLE_PREFILL, "h:3"));
  auto p2 = reg.Register(Node(v1::NODE_ROLE_PREFILL, "h:4"));
  ASSERT_TRUE(d1.ok() && d2.ok() && p1.ok() && p2.ok());
  ASSERT_TRUE(*reg.Heartbeat(*d1, Load(10, 0)));
  ASSERT_TRUE(*reg.Heartbeat(*d2, Load(90, 0)));
  ASSERT_TRUE(*reg.Heartbeat(*p1, Load(0, 500)));
  ASSERT_TRUE(*reg.Heartbeat(*p2, Load(0, 20)));
  EXPECT_EQ(reg.DecodeCandidates().front().id, *d2);
  EXPECT_EQ(reg.PrefillCandidates().front().id, *p2);
  // Router-side adjustments between heartbeats move the choice.
  reg.AddReservedBlocks(*d2, 85);
  EXPECT_EQ(reg.DecodeCandidates().front().id, *d1);
  reg.AddPrefillTokens(*p2, 1000);
  EXPECT_EQ(reg.PrefillCandidates().front().id, *p1);
  // ... and fade after two heartbeat intervals.
  absl::SleepFor(absl::Milliseconds(250));
  EXPECT_EQ(reg.DecodeCandidates().front().id, *d2);
  EXPECT_EQ(reg.PrefillCandidates().front().id, *p2);
  EXPECT_EQ(reg.CountLive(v1::NODE_ROLE_DECODE), 2);
  EXPECT_EQ(reg.List(v1::NODE_ROLE_PREFILL).size(), 2u);
  EXPECT_EQ(reg.MaxModelLen(), 4096);
}

TEST(NodeRegistryTest, SilentNodeLeavesRotationAndMustReRegister) {
  NodeRegistry reg(absl::Milliseconds(10), absl::Milliseconds(100));
  auto d = reg.Register(Node(v1::NODE_ROLE_DECODE, "h:1"));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(reg.DecodeCandidates().size(), 1u);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_TRUE(reg.DecodeCandidates().empty());
  EXPECT_FALSE(*reg.Heartbeat(*d, Load(100, 0)));  // "unknown": re-register
  auto again = reg.Register(Node(v1::NODE_ROLE_DECODE, "h:1"));
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *d);
  EXPECT_TRUE(*reg.Heartbeat(*again, Load(100, 0)));
  EXPECT_EQ(reg.DecodeCandidates().size(), 1u);
}

TEST(NodeRegistryTest, SameAddressReplacesTheOldEntry) {
  NodeRegistry reg(absl::Milliseconds(100), absl::Seconds(10));
  auto a = reg.Register(Node(v1::NODE_ROLE_PREFILL, "h:1"));
  auto b = reg.Register(Node(v1::NODE_ROLE_PREFILL, "h:1"));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(reg.CountLive(v1::NODE_ROLE_PREFILL), 1);
  EXPECT_FALSE(*reg.Heartbeat(*a, Load(0, 0)));
}

TEST(NodeRegistryTest, RejectsBadRegistrations) {
  NodeRegistry reg(absl::Milliseconds(100), absl::Seconds(10));
  EXPECT_EQ(
      reg.Register(Node(v1::NODE_ROLE_UNSPECIFIED, "h:1")).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      reg.Register(Node(v1::NODE_ROLE_DECODE, "nohostport")).status().code(),
      absl::StatusCode::kInvalidArgument);
  v1::RegisterRequest no_layout = Node(v1::NODE_ROLE_DECODE, "h:1");
  no_layout.clear_kv_layout();
  EXPECT_EQ(reg.Register(no_layout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// One model and one KV layout per cluster; loads that contradict the
// registration are refused.
TEST(NodeRegistryTest, PinsTheModelAndLayoutAndChecksLoads) {
  NodeRegistry reg(absl::Milliseconds(100), absl::Seconds(10));
  v1::RegisterRequest a = Node(v1::NODE_ROLE_DECODE, "h:1");
  a.set_model_name("/models/Qwen3-4B/");
  auto id = reg.Register(a);
  ASSERT_TRUE(id.ok());
  v1::RegisterRequest same = Node(v1::NODE_ROLE_PREFILL, "h:2");
  same.set_model_name("/mnt/other/Qwen3-4B");  // another path, same model
  same.mutable_kv_layout()->set_tp_size(2);    // TP may differ
  EXPECT_TRUE(reg.Register(same).ok());
  v1::RegisterRequest other = Node(v1::NODE_ROLE_PREFILL, "h:3");
  other.set_model_name("made-up");
  EXPECT_EQ(reg.Register(other).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::RegisterRequest layout = Node(v1::NODE_ROLE_PREFILL, "h:4");
  layout.set_model_name("Qwen3-4B");
  layout.mutable_kv_layout()->set_block_size(32);
  EXPECT_EQ(reg.Register(layout).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::NodeLoad lie = Load(100, 0);
  lie.set_total_kv_blocks(1 << 20);
  lie.set_free_kv_blocks(1 << 20);
  EXPECT_EQ(reg.Heartbeat(*id, lie).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::NodeLoad more_free = Load(101, 0);
  EXPECT_EQ(reg.Heartbeat(*id, more_free).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelBaseName("/a/b/"), "b");
  EXPECT_EQ(ModelBaseName("b"), "b");
}

}  // namespace
}  // namespace duet::router

namespace duet::router {
namespace {

NodeRef Ref(std::vector<v1::KvTransport> transports, std::string host) {
  NodeRef r;
  r.kv_transports = std::move(transports);
  r.host_id = std::move(host);
  return r;
}

TEST(PickKvTransportTest, CudaIpcOnOneHostUcxAcrossHostsNoneWithoutACommonOne) {
  const auto ipc = v1::KV_TRANSPORT_CUDA_IPC;
  const auto ucx = v1::KV_TRANSPORT_UCX;
  // --kv-transport auto on GPU nodes: IPC on one host, UCX across hosts.
  EXPECT_EQ(PickKvTransport(Ref({ipc, ucx}, "a"), Ref({ipc, ucx}, "a")), ipc);
  EXPECT_EQ(PickKvTransport(Ref({ipc, ucx}, "a"), Ref({ipc, ucx}, "b")), ucx);
  // A CPU node offers UCX only.
  EXPECT_EQ(PickKvTransport(Ref({ipc, ucx}, "a"), Ref({ucx}, "a")), ucx);
  // Registrations without transports mean UCX.
  EXPECT_EQ(PickKvTransport(Ref({}, ""), Ref({ipc, ucx}, "a")), ucx);
  // Explicit cuda-ipc on both: only on one host (or where a node did not
  // say which host it is on).
  EXPECT_EQ(PickKvTransport(Ref({ipc}, "a"), Ref({ipc}, "a")), ipc);
  EXPECT_EQ(PickKvTransport(Ref({ipc}, ""), Ref({ipc}, "a")), ipc);
  EXPECT_EQ(PickKvTransport(Ref({ipc}, "a"), Ref({ipc}, "b")), std::nullopt);
  EXPECT_EQ(PickKvTransport(Ref({ipc}, "a"), Ref({ucx}, "a")), std::nullopt);
}

NodeRef TpRef(std::vector<v1::KvTransport> transports, std::string host,
              uint32_t tp) {
  NodeRef r = Ref(std::move(transports), std::move(host));
  r.layout.set_tp_size(tp);
  return r;
}

TEST(PickKvTransportTest, NcclOnAnyHostForEqualTensorParallelSizes) {
  const auto nccl = v1::KV_TRANSPORT_NCCL;
  const auto ipc = v1::KV_TRANSPORT_CUDA_IPC;
  const auto ucx = v1::KV_TRANSPORT_UCX;
  EXPECT_EQ(PickKvTransport(TpRef({nccl}, "a", 1), TpRef({nccl}, "b", 1)),
            nccl);
  EXPECT_EQ(PickKvTransport(TpRef({nccl}, "a", 2), TpRef({nccl}, "a", 2)),
            nccl);
  // Whole blocks only: different TP sizes need UCX's head slices.
  EXPECT_EQ(PickKvTransport(TpRef({nccl}, "a", 2), TpRef({nccl}, "b", 1)),
            std::nullopt);
  EXPECT_EQ(
      PickKvTransport(TpRef({nccl, ucx}, "a", 1), TpRef({nccl, ucx}, "b", 2)),
      ucx);
  // On one host CUDA IPC still wins where both offer it.
  EXPECT_EQ(
      PickKvTransport(TpRef({ipc, nccl}, "a", 1), TpRef({ipc, nccl}, "a", 1)),
      ipc);
  EXPECT_EQ(PickKvTransport(TpRef({nccl}, "a", 1), TpRef({ucx}, "a", 1)),
            std::nullopt);
}

}  // namespace
}  // namespace duet::router
