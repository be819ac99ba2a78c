// The router's prefix record and the prefix-aware ordering of candidates.
#include "router/prefix_index.h"

#include <numeric>

#include "gtest/gtest.h"

namespace duet::router {
namespace {

std::vector<int32_t> Iota(int32_t n, int32_t base = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), base);
  return v;
}

TEST(PrefixIndexTest, HashesAreChainedOverFullBlocksOnly) {
  const std::vector<uint64_t> a = PrefixBlockHashes(Iota(40), 16);
  ASSERT_EQ(a.size(), 2u);  // 40 tokens: two full blocks
  // Same second block after a different first one: a different hash.
  std::vector<int32_t> other = Iota(40);
  other[0] = 999;
  const std::vector<uint64_t> b = PrefixBlockHashes(other, 16);
  EXPECT_NE(a[0], b[0]);
  EXPECT_NE(a[1], b[1]);
  // A longer prompt with the same start shares the leading hashes.
  const std::vector<uint64_t> c = PrefixBlockHashes(Iota(70), 16);
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0], a[0]);
  EXPECT_EQ(c[1], a[1]);
  EXPECT_TRUE(PrefixBlockHashes(Iota(15), 16).empty());
  EXPECT_TRUE(PrefixBlockHashes(Iota(15), 0).empty());
}

TEST(PrefixIndexTest, MatchCountsLeadingBlocksAndLruForgets) {
  PrefixIndex index;
  const std::vector<uint64_t> a = PrefixBlockHashes(Iota(64), 16);  // 4
  const std::vector<uint64_t> b = PrefixBlockHashes(Iota(64, 500), 16);
  index.Record(1, a, /*capacity=*/6);
  EXPECT_EQ(index.Match(1, a), 4);
  EXPECT_EQ(index.Match(2, a), 0);  // unknown node
  // A prompt that diverges after two blocks matches two.
  std::vector<int32_t> fork = Iota(64);
  fork[40] = -1;
  EXPECT_EQ(index.Match(1, PrefixBlockHashes(fork, 16)), 2);
  // Recording b (4 blocks) into a capacity of 6 forgets a's least recently
  // used blocks: its leaves go first, so its first two blocks remain.
  index.Record(1, b, 6);
  EXPECT_EQ(index.size(1), 6);
  EXPECT_EQ(index.Match(1, b), 4);
  EXPECT_EQ(index.Match(1, a), 2);
  index.Forget(1);
  EXPECT_EQ(index.Match(1, b), 0);
  // Only live nodes are kept.
  index.Record(1, a, 6);
  index.Record(2, a, 6);
  index.Record(3, a, 6);
  index.Retain({2});
  EXPECT_EQ(index.num_nodes(), 1);
  EXPECT_EQ(index.Match(2, a), 4);
  EXPECT_EQ(index.Match(1, a), 0);
}

NodeRef Prefill(uint64_t id, int64_t queued) {
  NodeRef n;
  n.id = id;
  n.queued_prefill_tokens = queued;
  return n;
}

NodeRef Decode(uint64_t id, int64_t free) {
  NodeRef n;
  n.id = id;
  n.free_kv_blocks = free;
  n.total_kv_blocks = 1000;
  return n;
}

TEST(PrefixRoutingTest, PrefillGoesWhereThePrefixIsUnlessItsQueueIsLonger) {
  PrefixIndex index;
  const std::vector<int32_t> prompt = Iota(2100);  // 131 full blocks + 4
  const std::vector<uint64_t> hashes = PrefixBlockHashes(prompt, 16);
  index.Record(2, std::span(hashes).first(125), 10000);  // 2,000 tokens

  // Node 1 is idle; node 2 holds 2,000 tokens and has 1,500 queued:
  // 1,500 + 100 < 0 + 2,100, so node 2.
  std::vector<NodeRef> nodes = {Prefill(1, 0), Prefill(2, 1500)};
  EXPECT_EQ(OrderPrefillByPrefix(nodes, index, hashes, 2100, 16), 125);
  EXPECT_EQ(nodes.front().id, 2u);
  // With 2,500 queued there it is overloaded for this request: node 1.
  nodes = {Prefill(1, 0), Prefill(2, 2500)};
  EXPECT_EQ(OrderPrefillByPrefix(nodes, index, hashes, 2100, 16), 0);
  EXPECT_EQ(nodes.front().id, 1u);
  EXPECT_EQ(nodes.back().id, 2u);
  // No prefix anywhere: the least-loaded order stands (ties keep it).
  const std::vector<uint64_t> fresh = PrefixBlockHashes(Iota(2100, 7000), 16);
  nodes = {Prefill(3, 10), Prefill(1, 10), Prefill(2, 20)};
  OrderPrefillByPrefix(nodes, index, fresh, 2100, 16);
  EXPECT_EQ(nodes[0].id, 3u);
  EXPECT_EQ(nodes[1].id, 1u);
  EXPECT_EQ(nodes[2].id, 2u);
}

TEST(PrefixRoutingTest, TheLastPromptBlockIsNeverCountedAsCached) {
  EXPECT_EQ(UsableCachedBlocks(4, 64, 16), 3);  // exactly 4 full blocks
  EXPECT_EQ(UsableCachedBlocks(4, 65, 16), 4);
  EXPECT_EQ(UsableCachedBlocks(2, 65, 16), 2);
  EXPECT_EQ(UsableCachedBlocks(2, 0, 16), 0);
}

TEST(PrefixRoutingTest, DecodeKeepsTheMostFreeBlocksAfterTheRequest) {
  PrefixIndex index;
  const std::vector<uint64_t> hashes = PrefixBlockHashes(Iota(1610), 16);
  index.Record(2, hashes, 10000);  // all 100 full blocks
  // 101 blocks needed: node 1 keeps 300 - 101, node 2 keeps 250 - 2
  // (its 99 usable cached blocks are not taken anew).
  std::vector<NodeRef> nodes = {Decode(1, 300), Decode(2, 250)};
  EXPECT_EQ(OrderDecodeByPrefix(nodes, index, hashes, 1610, 16), 100);
  EXPECT_EQ(nodes.front().id, 2u);
  // Node 2 nearly full: node 1.
  nodes = {Decode(1, 300), Decode(2, 120)};
  OrderDecodeByPrefix(nodes, index, hashes, 1610, 16);
  EXPECT_EQ(nodes.front().id, 1u);
}

TEST(PrefixRoutingTest, ParsesTheFlag) {
  EXPECT_EQ(*ParseRoutingMode("prefix-aware"), RoutingMode::kPrefixAware);
  EXPECT_EQ(*ParseRoutingMode("least-loaded"), RoutingMode::kLeastLoaded);
  const auto bad = ParseRoutingMode("random");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("prefix-aware or least-loaded"),
            std::string::npos);
  EXPECT_STREQ(RoutingModeName(RoutingMode::kPrefixAware), "prefix-aware");
}

}  // namespace
}  // namespace duet::router
