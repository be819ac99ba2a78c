#include "common/strong_id.h"

#include <cstdint>
#include <sstream>
#include <type_traits>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/hash/hash_testing.h"
#include "gtest/gtest.h"

namespace duet {
namespace {

// Ids of different kinds do not mix, and raw integers need an explicit
// constructor.
static_assert(!std::is_convertible_v<RequestId, BlockId>);
static_assert(!std::is_convertible_v<BlockId, RequestId>);
static_assert(!std::is_constructible_v<BlockId, RequestId>);
static_assert(!std::is_assignable_v<BlockId&, RequestId>);
static_assert(!std::is_convertible_v<RequestId, NodeId>);
static_assert(!std::is_same_v<RequestId, NodeId>);
static_assert(!std::is_convertible_v<uint64_t, RequestId>);
static_assert(!std::is_convertible_v<int32_t, BlockId>);
static_assert(!std::is_convertible_v<BlockId, int32_t>);
static_assert(std::is_constructible_v<BlockId, int32_t>);
static_assert(std::is_same_v<RequestId::ValueType, uint64_t>);
static_assert(std::is_same_v<BlockId::ValueType, int32_t>);
static_assert(std::is_trivially_copyable_v<RequestId>);
static_assert(sizeof(BlockId) == sizeof(int32_t));
// Usable in constant expressions.
static_assert(BlockId(3) < BlockId(4));
static_assert(BlockId(5).value() == 5);
static_assert(BlockId().value() == 0);

TEST(StrongIdTest, Comparison) {
  EXPECT_EQ(RequestId(7), RequestId(7));
  EXPECT_NE(RequestId(7), RequestId(8));
  EXPECT_LT(RequestId(7), RequestId(8));
  EXPECT_LE(RequestId(8), RequestId(8));
  EXPECT_GT(BlockId(-1) < BlockId(0), false);
  EXPECT_TRUE(BlockId(-1) < BlockId(0));  // signed representation
  EXPECT_TRUE(RequestId(UINT64_MAX) > RequestId(0));  // unsigned
  EXPECT_EQ(RequestId(3) <=> RequestId(5), std::strong_ordering::less);
  EXPECT_EQ(RequestId(5) <=> RequestId(5), std::strong_ordering::equal);
  EXPECT_EQ(RequestId().value(), 0u);
}

TEST(StrongIdTest, HashesLikeItsValue) {
  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly(
      {RequestId(0), RequestId(1), RequestId(2), RequestId(UINT64_MAX),
       RequestId(1ull << 40)}));
  EXPECT_TRUE(absl::VerifyTypeImplementsAbslHashCorrectly(
      {BlockId(0), BlockId(-1), BlockId(1), BlockId(INT32_MAX)}));
  EXPECT_EQ(absl::Hash<RequestId>()(RequestId(99)),
            absl::Hash<RequestId>()(RequestId(99)));
}

TEST(StrongIdTest, WorksInFlatHashContainers) {
  absl::flat_hash_set<RequestId> set;
  for (uint64_t i = 0; i < 1000; ++i) set.insert(RequestId(i % 250));
  EXPECT_EQ(set.size(), 250u);
  EXPECT_TRUE(set.contains(RequestId(0)));
  EXPECT_TRUE(set.contains(RequestId(249)));
  EXPECT_FALSE(set.contains(RequestId(250)));
  EXPECT_EQ(set.erase(RequestId(17)), 1u);
  EXPECT_FALSE(set.contains(RequestId(17)));

  absl::flat_hash_map<BlockId, int> refs;
  refs[BlockId(4)] += 2;
  refs[BlockId(4)] += 1;
  refs[BlockId(-4)] += 1;
  EXPECT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[BlockId(4)], 3);
}

TEST(StrongIdTest, Streaming) {
  std::ostringstream os;
  os << RequestId(42) << " " << BlockId(-3) << " " << NodeId(18446744073709551615ull);
  EXPECT_EQ(os.str(), "42 -3 18446744073709551615");
}

}  // namespace
}  // namespace duet
