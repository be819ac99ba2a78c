#include "model/kv_cache.h"

#include <random>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace duet::model {
namespace {

TEST(BlocksForTokensTest, RoundsUp) {
  EXPECT_EQ(BlocksForTokens(0, 16), 0);
  EXPECT_EQ(BlocksForTokens(1, 16), 1);
  EXPECT_EQ(BlocksForTokens(16, 16), 1);
  EXPECT_EQ(BlocksForTokens(17, 16), 2);
}

TEST(BlockPoolTest, AllocatesDistinctBlocksAndExhausts) {
  BlockPool pool(10);
  auto a = pool.Allocate(4);
  ASSERT_TRUE(a.ok());
  auto b = pool.Allocate(6);
  ASSERT_TRUE(b.ok());
  absl::flat_hash_set<BlockId> seen(a->begin(), a->end());
  seen.insert(b->begin(), b->end());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(pool.num_free(), 0);
  auto c = pool.Allocate(1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_EQ(pool.num_free(), 4);
}

TEST(BlockPoolTest, AllOrNothing) {
  BlockPool pool(5);
  ASSERT_TRUE(pool.Allocate(3).ok());
  EXPECT_EQ(pool.Allocate(3).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.num_free(), 2);  // the failed request took nothing
}

TEST(BlockPoolTest, RefCounting) {
  BlockPool pool(3);
  auto a = pool.Allocate(1);
  ASSERT_TRUE(a.ok());
  const BlockId id = (*a)[0];
  ASSERT_TRUE(pool.AddRef(id).ok());
  EXPECT_EQ(pool.RefCount(id), 2);
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_EQ(pool.RefCount(id), 1);
  EXPECT_EQ(pool.num_free(), 2);
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_EQ(pool.RefCount(id), 0);
  EXPECT_EQ(pool.num_free(), 3);
}

TEST(BlockPoolTest, RejectsBadFreesWithoutSideEffects) {
  BlockPool pool(4);
  auto a = pool.Allocate(2);
  ASSERT_TRUE(a.ok());
  // Double free in one call: rejected, nothing released.
  std::vector<BlockId> twice = {(*a)[0], (*a)[0]};
  EXPECT_EQ(pool.Free(twice).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.num_free(), 2);
  // Out of range.
  std::vector<BlockId> bad = {(*a)[1], BlockId(99)};
  EXPECT_EQ(pool.Free(bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.RefCount((*a)[1]), 1);
  // Free of a free block.
  ASSERT_TRUE(pool.Free(*a).ok());
  EXPECT_EQ(pool.Free(*a).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.AddRef((*a)[0]).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(pool.Allocate(-1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BlockPoolTest, RandomChurnNeverLeaks) {
  BlockPool pool(64);
  std::mt19937 rng(7);
  std::vector<std::vector<BlockId>> live;
  for (int i = 0; i < 2000; ++i) {
    if (live.empty() || rng() % 2 == 0) {
      auto got = pool.Allocate(static_cast<int32_t>(rng() % 9));
      if (got.ok()) live.push_back(std::move(*got));
    } else {
      const size_t k = rng() % live.size();
      ASSERT_TRUE(pool.Free(live[k]).ok());
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    int32_t held = 0;
    for (const auto& l : live) held += static_cast<int32_t>(l.size());
    ASSERT_EQ(pool.num_free() + held, 64);
  }
}

// Prefix caching in the pool: exact content keys, idle blocks counted as
// free, LRU eviction, children unreachable once their parent is evicted.
TEST(BlockPoolPrefixTest, RegisteredBlocksAreFoundByExactContentOnly) {
  BlockPool pool(8);
  auto got = pool.Allocate(2);
  ASSERT_TRUE(got.ok());
  const std::vector<int32_t> a = {1, 2, 3, 4}, b = {5, 6, 7, 8};
  auto ua = pool.Register((*got)[0], kNoParentBlock, a);
  ASSERT_TRUE(ua.ok());
  auto ub = pool.Register((*got)[1], *ua, b);
  ASSERT_TRUE(ub.ok());
  EXPECT_NE(*ua, *ub);
  EXPECT_EQ(pool.num_cached(), 2);
  // Registering twice is refused; an identical block elsewhere is not
  // registered but gets the canonical uid.
  EXPECT_EQ(pool.Register((*got)[0], kNoParentBlock, a).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto dup = pool.Allocate(1);
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(*pool.Register((*dup)[0], kNoParentBlock, a), *ua);
  EXPECT_EQ(pool.num_cached(), 2);
  // Lookups: same tokens after the same parent only.
  auto hit = pool.Acquire(*ua, b);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->id, (*got)[1]);
  EXPECT_EQ(pool.RefCount((*got)[1]), 2);
  EXPECT_FALSE(pool.Acquire(kNoParentBlock, b).has_value());
  EXPECT_FALSE(pool.Acquire(*ua, std::vector<int32_t>{5, 6, 7, 9}).has_value());
  EXPECT_FALSE(pool.Acquire(*ub, b).has_value());
  ASSERT_TRUE(pool.Free(std::vector<BlockId>{(*got)[1]}).ok());
}

TEST(BlockPoolPrefixTest, IdleCachedBlocksAreFreeAndEvictedLeastRecentFirst) {
  BlockPool pool(4);
  auto blocks = pool.Allocate(4);
  ASSERT_TRUE(blocks.ok());
  std::vector<uint64_t> uids;
  for (int i = 0; i < 4; ++i) {
    auto u = pool.Register((*blocks)[i], kNoParentBlock,
                           std::vector<int32_t>{i, i, i});
    ASSERT_TRUE(u.ok());
    uids.push_back(*u);
  }
  // Freed in order 2, 0, 3, 1: idle, still cached, all count as free.
  for (int i : {2, 0, 3, 1}) {
    ASSERT_TRUE(pool.Free(std::vector<BlockId>{(*blocks)[i]}).ok());
  }
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.num_idle_cached(), 4);
  // Taking block 2 again moves it out of the eviction order.
  auto again = pool.Acquire(kNoParentBlock, std::vector<int32_t>{2, 2, 2});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(pool.num_free(), 3);
  // Two fresh blocks evict the two least recently idle: 0, then 3.
  auto fresh = pool.Allocate(2);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(pool.num_evictions(), 2);
  EXPECT_FALSE(pool.Acquire(kNoParentBlock, std::vector<int32_t>{0, 0, 0}));
  EXPECT_FALSE(pool.Acquire(kNoParentBlock, std::vector<int32_t>{3, 3, 3}));
  auto one = pool.Acquire(kNoParentBlock, std::vector<int32_t>{1, 1, 1});
  ASSERT_TRUE(one.has_value());
  // An evicted block's id is reused under a new uid: a child keyed by the
  // old uid is never found under the new one.
  auto reused = pool.Register((*fresh)[0], kNoParentBlock,
                              std::vector<int32_t>{7, 7, 7});
  ASSERT_TRUE(reused.ok());
  EXPECT_NE(*reused, uids[0]);
  EXPECT_NE(*reused, uids[3]);
  EXPECT_EQ(pool.RefCount(again->id), 1);
  // Everything given back: free or idle, nothing held.
  std::vector<BlockId> all = *fresh;
  all.push_back(again->id);
  all.push_back(one->id);
  ASSERT_TRUE(pool.Free(all).ok());
  EXPECT_EQ(pool.num_free(), 4);
}

TEST(KvCacheStorageTest, AllocatesLayersWithTheDesignLayout) {
  auto backend = kernels::MakeCpuBackend();
  kernels::AttentionShape shape{8, 2, 16, 16, 10};
  auto storage = KvCacheStorage::Create(*backend, 3, shape);
  ASSERT_TRUE(storage.ok()) << storage.status();
  EXPECT_EQ(storage->num_layers(), 3);
  EXPECT_EQ(storage->layer(0).shape, (Shape{10, 2, 2, 16, 16}));
  EXPECT_EQ(storage->bytes_per_block(), 3 * 2 * 2 * 16 * 16 * 4);
  EXPECT_EQ(KvCacheStorage::Create(*backend, 0, shape).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::model
