#include "kv_transfer/staging_slots.h"

#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace duet::kv_transfer::internal {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);
constexpr absl::Duration kQuarantine = absl::Seconds(2);

TEST(StagingSlotsTest, RunsAreFirstFitAndDisjoint) {
  StagingSlots slots(10, kQuarantine);
  EXPECT_EQ(*slots.Allocate(3, kT0), 0);
  EXPECT_EQ(*slots.Allocate(4, kT0), 3);
  EXPECT_EQ(*slots.Allocate(3, kT0), 7);
  EXPECT_EQ(slots.NumFree(kT0), 0);
  EXPECT_EQ(slots.Allocate(1, kT0).status().code(),
            absl::StatusCode::kResourceExhausted);
  slots.Free(3, 4);
  EXPECT_EQ(slots.Allocate(5, kT0).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*slots.Allocate(2, kT0), 3);
  EXPECT_EQ(*slots.Allocate(2, kT0), 5);
}

TEST(StagingSlotsTest, FreedNeighboursMergeIntoOneRun) {
  StagingSlots slots(9, kQuarantine);
  ASSERT_EQ(*slots.Allocate(3, kT0), 0);
  ASSERT_EQ(*slots.Allocate(3, kT0), 3);
  ASSERT_EQ(*slots.Allocate(3, kT0), 6);
  slots.Free(0, 3);
  slots.Free(6, 3);
  slots.Free(3, 3);  // merges with both sides
  EXPECT_EQ(*slots.Allocate(9, kT0), 0);
}

TEST(StagingSlotsTest, QuarantinedRunsComeBackOnlyAfterTheQuarantine) {
  StagingSlots slots(4, kQuarantine);
  ASSERT_EQ(*slots.Allocate(4, kT0), 0);
  slots.Quarantine(0, 4, kT0);
  EXPECT_EQ(slots.NumFree(kT0 + kQuarantine - absl::Milliseconds(1)), 0);
  EXPECT_EQ(slots.Allocate(1, kT0 + absl::Seconds(1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*slots.Allocate(4, kT0 + kQuarantine), 0);
}

TEST(StagingSlotsTest, RequestLargerThanTheStagingIsResourceExhausted) {
  StagingSlots slots(4, kQuarantine);
  EXPECT_EQ(slots.Allocate(5, kT0).status().code(),
            absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace duet::kv_transfer::internal
