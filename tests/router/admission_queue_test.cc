// router/admission_queue.h: only the head gets a turn, and only after a
// capacity change; tickets are served in arrival order; the queue is
// bounded; deadlines and cancellation end a wait.
#include "router/admission_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::router {
namespace {

TEST(AdmissionQueueTest, HeadOnlyAfterANotifyInArrivalOrder) {
  AdmissionQueue q(8);
  constexpr int kWaiters = 4;
  std::vector<int> order;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  std::atomic<int> entered{0};
  for (int i = 0; i < kWaiters; ++i) {
    // Enter in a known order.
    while (entered.load() != i) absl::SleepFor(absl::Milliseconds(1));
    threads.emplace_back([&, i] {
      std::optional<AdmissionQueue::Ticket> t;
      ASSERT_TRUE(q.Enter(&t).ok());
      ++entered;
      EXPECT_EQ(q.WaitTurn(*t, absl::Now() + absl::Seconds(10),
                           [] { return false; }),
                AdmissionQueue::Wake::kTurn);
      absl::MutexLock lock(&mu);
      order.push_back(i);
      // Leaving (the ticket's destructor) gives the next one its turn.
    });
  }
  while (entered.load() != kWaiters) absl::SleepFor(absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(150));
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(order.empty());  // no turn without a capacity change
  }
  EXPECT_EQ(q.size(), kWaiters);
  q.Notify();
  for (auto& t : threads) t.join();
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2, 3));
  EXPECT_FALSE(q.busy());
}

TEST(AdmissionQueueTest, BoundedDeadlineAndCancel) {
  AdmissionQueue q(2);
  std::optional<AdmissionQueue::Ticket> a, b, c;
  ASSERT_TRUE(q.Enter(&a).ok());
  ASSERT_TRUE(q.Enter(&b).ok());
  const absl::Status full = q.Enter(&c);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(full.message(), ::testing::HasSubstr("--max-queued-requests 2"));
  const absl::Time start = absl::Now();
  EXPECT_EQ(q.WaitTurn(*a, start + absl::Milliseconds(200),
                       [] { return false; }),
            AdmissionQueue::Wake::kDeadline);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(190));
  std::atomic<bool> cancelled{false};
  std::thread cancel([&] {
    absl::SleepFor(absl::Milliseconds(100));
    cancelled = true;
    q.Poke();  // what the call watcher does when a client goes away
  });
  // b is not the head: it waits until cancelled and poked.
  q.Notify();
  EXPECT_EQ(q.WaitTurn(*b, absl::Now() + absl::Seconds(10),
                       [&] { return cancelled.load(); }),
            AdmissionQueue::Wake::kCancelled);
  cancel.join();
  a.reset();  // leaves: b is the head and the leave counts as a change
  EXPECT_EQ(q.WaitTurn(*b, absl::Now() + absl::Seconds(1),
                       [] { return false; }),
            AdmissionQueue::Wake::kTurn);
}

}  // namespace
}  // namespace duet::router
