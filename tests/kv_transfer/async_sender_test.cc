#include "kv_transfer/async_sender.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "kv_transfer/fault_injection.h"
#include "kv_transfer/in_process.h"
#include "tests/kv_transfer/kv_test_util.h"

namespace duet::kv_transfer {
namespace {

using testing::BlocksCopied;
using testing::CopyPlan;
using testing::MakeCopyPlan;
using testing::TestLayout;
using testing::TestPool;

// A transport that records, when each call starts, how many layers of the
// destination already hold their final bytes, and forwards.
class Recording final : public KvSender {
 public:
  explicit Recording(std::unique_ptr<KvSender> inner)
      : inner_(std::move(inner)) {}
  absl::Status SendLayers(const KvDescriptor& dest,
                          std::span<const BlockCopy> copies, LayerRange layers,
                          std::shared_ptr<const kernels::StreamMark> ready,
                          absl::Duration timeout) override {
    calls_.fetch_add(1);
    absl::SleepFor(delay_);
    absl::Status s = inner_->SendLayers(dest, copies, layers, ready, timeout);
    finished_.fetch_add(1);
    return s;
  }
  std::atomic<int> calls_{0};
  std::atomic<int> finished_{0};
  absl::Duration delay_ = absl::Milliseconds(5);

 private:
  std::unique_ptr<KvSender> inner_;
};

// A mark reached only when the test says so (a forward pass still running).
class ManualMark final : public kernels::StreamMark {
 public:
  absl::Status Wait(absl::Time deadline) const override {
    if (reached_.WaitForNotificationWithTimeout(deadline - absl::Now())) {
      return absl::OkStatus();
    }
    return absl::DeadlineExceededError("mark not reached");
  }
  void Reach() { reached_.Notify(); }

 private:
  absl::Notification reached_;
};

struct Fixture {
  Fixture() : src(TestLayout(), 24), dst(TestLayout(), 40) {
    src.FillRandom(7);
    dst.Fill(testing::kPoison);
    receiver = *MakeInProcessReceiver(registry, "d0", dst.view());
  }
  KvDescriptor Describe(uint64_t key, const CopyPlan& plan) {
    return *receiver->Describe(key, plan.dest_block_ids);
  }
  TestPool src;
  TestPool dst;
  InProcessRegistry registry;
  std::unique_ptr<KvReceiver> receiver;
};

struct Result {
  // A Close / Abort callback that records its status here.
  AsyncKvSender::Done Record() {
    return [this](absl::Status s) {
      status = std::move(s);
      done.Notify();
    };
  }
  absl::Notification done;
  absl::Status status = absl::UnknownError("not called");
  int calls_seen = 0;
  bool copied = false;
};

TEST(AsyncKvSenderTest, CompletesOnlyAfterEveryPieceInAnyLayerOrder) {
  Fixture f;
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  Recording* r = rec.get();
  AsyncKvSender sender(std::move(rec));
  const CopyPlan plan = MakeCopyPlan(3, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  // Layers pushed out of order, each in two halves of the blocks.
  const std::vector<int32_t> order = {2, 0, 3, 1};
  const size_t half = plan.copies.size() / 2;
  for (int32_t l : order) {
    sender.Submit(1, {plan.copies.begin(), plan.copies.begin() + half},
                  {l, l + 1}, nullptr);
    sender.Submit(1, {plan.copies.begin() + half, plan.copies.end()},
                  {l, l + 1}, nullptr);
  }
  Result res;
  ASSERT_TRUE(sender
                  .Close(1,
                         [&](absl::Status s) {
                           res.status = s;
                           res.calls_seen = r->finished_.load();
                           res.copied = BlocksCopied(
                               f.src, f.dst, plan.dest_block_ids, plan.copies);
                           res.done.Notify();
                         })
                  .ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(res.status.ok()) << res.status;
  EXPECT_EQ(res.calls_seen, 8);  // never before the last piece finished
  EXPECT_TRUE(res.copied);
  EXPECT_EQ(sender.pending_pieces(), 0);
}

// A prefill node asks where to write while the prompt runs: pieces of a
// transfer opened without its descriptor wait for it while another
// request's go by, then skip the leading blocks the receiver holds.
TEST(AsyncKvSenderTest, PendingDescriptorHoldsItsPiecesWhileOthersGo) {
  Fixture f;
  TestPool dst2(TestLayout(), 40);
  dst2.Fill(testing::kPoison);
  auto receiver2 = *MakeInProcessReceiver(f.registry, "d1", dst2.view());
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  Recording* r = rec.get();
  AsyncKvSender sender(std::move(rec));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  const CopyPlan plan = MakeCopyPlan(11, 24, 40);
  ASSERT_GT(plan.copies.size(), 3u);
  ASSERT_TRUE(sender.OpenPending(1, deadline).ok());
  const int32_t layers = TestLayout().num_layers;
  for (int32_t l = 0; l < layers; ++l) {
    sender.Submit(1, plan.copies, {l, l + 1}, nullptr);
  }
  Result first;
  ASSERT_TRUE(sender.Close(1, first.Record()).ok());
  // Another request, bound from the start, is not held behind it.
  const CopyPlan other = MakeCopyPlan(12, 24, 40);
  ASSERT_TRUE(
      sender.Open(2, *receiver2->Describe(2, other.dest_block_ids), deadline)
          .ok());
  sender.Submit(2, other.copies, {0, layers}, nullptr);
  Result second;
  ASSERT_TRUE(sender.Close(2, second.Record()).ok());
  ASSERT_TRUE(second.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(second.status.ok()) << second.status;
  EXPECT_TRUE(BlocksCopied(f.src, dst2, other.dest_block_ids, other.copies));
  EXPECT_EQ(r->calls_.load(), 1);  // request 1 sent nothing yet
  EXPECT_FALSE(first.done.HasBeenNotified());
  EXPECT_TRUE(testing::AllPoison(f.dst));

  // The receiver holds the first 2 logical blocks already: the descriptor
  // addresses logical blocks 2.. only.
  constexpr int32_t kHeld = 2;
  const std::vector<int32_t> tail_ids(plan.dest_block_ids.begin() + kHeld,
                                      plan.dest_block_ids.end());
  KvDescriptor d = *f.receiver->Describe(1, tail_ids);
  d.first_block = kHeld;
  ASSERT_TRUE(sender.Bind(1, std::move(d)).ok());
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(first.status.ok()) << first.status;
  std::vector<BlockCopy> shifted;
  for (const BlockCopy& c : plan.copies) {
    if (c.logical_block >= kHeld) {
      shifted.push_back({c.src_block, c.logical_block - kHeld});
    }
  }
  EXPECT_TRUE(BlocksCopied(f.src, f.dst, tail_ids, shifted));
  EXPECT_EQ(sender.pending_pieces(), 0);
}

TEST(AsyncKvSenderTest, BindingAnErrorFailsThePendingTransfer) {
  Fixture f;
  AsyncKvSender sender(MakeInProcessSender(f.registry, f.src.view()));
  const CopyPlan plan = MakeCopyPlan(13, 24, 40);
  EXPECT_EQ(sender.Bind(5, f.Describe(5, plan)).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(sender.OpenPending(5, absl::Now() + absl::Seconds(10)).ok());
  sender.Submit(5, plan.copies, {0, 2}, nullptr);
  ASSERT_TRUE(
      sender.Bind(5, absl::UnavailableError("decode node d: Describe: gone"))
          .ok());
  EXPECT_EQ(sender.Bind(5, f.Describe(6, plan)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sender.status(5).code(), absl::StatusCode::kUnavailable);
  Result res;
  ASSERT_TRUE(sender.Close(5, res.Record()).ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(res.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(testing::AllPoison(f.dst));
  EXPECT_EQ(sender.pending_pieces(), 0);
}

TEST(AsyncKvSenderTest, ShutdownEndsAPendingTransfer) {
  Fixture f;
  AsyncKvSender sender(MakeInProcessSender(f.registry, f.src.view()));
  const CopyPlan plan = MakeCopyPlan(14, 24, 40);
  ASSERT_TRUE(sender.OpenPending(7, absl::Now() + absl::Seconds(10)).ok());
  sender.Submit(7, plan.copies, {0, 1}, nullptr);
  Result res;
  ASSERT_TRUE(sender.Close(7, res.Record()).ok());
  sender.Shutdown();
  ASSERT_TRUE(res.done.HasBeenNotified());
  EXPECT_EQ(res.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(testing::AllPoison(f.dst));
}

TEST(AsyncKvSenderTest, SubmitReturnsWhileTheTransportIsBusy) {
  Fixture f;
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  rec->delay_ = absl::Milliseconds(100);
  AsyncKvSender sender(std::move(rec));
  const CopyPlan plan = MakeCopyPlan(4, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  const absl::Time start = absl::Now();
  for (int32_t l = 0; l < 4; ++l)
    sender.Submit(1, plan.copies, {l, l + 1}, nullptr);
  absl::Notification done;
  ASSERT_TRUE(sender.Close(1, [&](absl::Status) { done.Notify(); }).ok());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_FALSE(done.HasBeenNotified());
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST(AsyncKvSenderTest, WaitsForTheReadyMarkBeforeReading) {
  Fixture f;
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  rec->delay_ = absl::ZeroDuration();
  Recording* r = rec.get();
  AsyncKvSender sender(std::move(rec));
  const CopyPlan plan = MakeCopyPlan(5, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  auto mark = std::make_shared<ManualMark>();
  sender.Submit(1, plan.copies, {}, mark);
  Result res;
  ASSERT_TRUE(sender.Close(1, res.Record()).ok());
  absl::SleepFor(absl::Milliseconds(50));
  // The transport was called but is still waiting: nothing written yet.
  EXPECT_EQ(r->calls_.load(), 1);
  EXPECT_TRUE(testing::AllPoison(f.dst));
  EXPECT_FALSE(res.done.HasBeenNotified());
  mark->Reach();
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(res.status.ok()) << res.status;
  EXPECT_TRUE(BlocksCopied(f.src, f.dst, plan.dest_block_ids, plan.copies));
}

TEST(AsyncKvSenderTest, DroppedLayerFailsAtTheDeadlineAndSkipsTheRest) {
  Fixture f;
  FaultPlan drop;
  drop.action = FaultAction::kDrop;
  drop.every = 2;  // the second piece (layer 1) never arrives
  auto faulty = MakeFaultInjectingSender(
      MakeInProcessSender(f.registry, f.src.view()), drop);
  FaultInjectingSender* counters = faulty.get();
  AsyncKvSender sender(std::move(faulty));
  const CopyPlan plan = MakeCopyPlan(6, 24, 40);
  const absl::Time start = absl::Now();
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), start + absl::Milliseconds(300))
          .ok());
  for (int32_t l = 0; l < 4; ++l)
    sender.Submit(1, plan.copies, {l, l + 1}, nullptr);
  Result res;
  ASSERT_TRUE(sender.Close(1, res.Record()).ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(res.status.code(), absl::StatusCode::kDeadlineExceeded)
      << res.status;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(3));
  // Layers 2 and 3 were skipped, not sent after the failure.
  EXPECT_EQ(counters->counters().calls, 2);
  EXPECT_EQ(sender.pending_pieces(), 0);
  // A later request on the same sender is unaffected.
  f.dst.Fill(testing::kPoison);
  ASSERT_TRUE(
      sender.Open(2, f.Describe(2, plan), absl::Now() + absl::Seconds(10))
          .ok());
  sender.Submit(2, plan.copies, {0, 1}, nullptr);  // call 3: passes
  Result res2;
  ASSERT_TRUE(sender.Close(2, res2.Record()).ok());
  ASSERT_TRUE(res2.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(res2.status.ok()) << res2.status;
}

TEST(AsyncKvSenderTest, StatusReportsAFailureBeforeClose) {
  Fixture f;
  FaultPlan err;
  err.action = FaultAction::kError;
  AsyncKvSender sender(MakeFaultInjectingSender(
      MakeInProcessSender(f.registry, f.src.view()), err));
  const CopyPlan plan = MakeCopyPlan(8, 24, 40);
  ASSERT_TRUE(
      sender.Open(9, f.Describe(9, plan), absl::Now() + absl::Seconds(10))
          .ok());
  sender.Submit(9, plan.copies, {}, nullptr);
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (sender.status(9).ok() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(sender.status(9).code(), absl::StatusCode::kUnavailable);
  Result res;
  ASSERT_TRUE(sender.Close(9, res.Record()).ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(res.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sender.status(9).code(), absl::StatusCode::kNotFound);
}

TEST(AsyncKvSenderTest, AbortSkipsPiecesNotStartedAndWaitsForTheOneRunning) {
  Fixture f;
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  rec->delay_ = absl::Milliseconds(100);
  Recording* r = rec.get();
  AsyncKvSender sender(std::move(rec));
  const CopyPlan plan = MakeCopyPlan(9, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  for (int32_t l = 0; l < 4; ++l)
    sender.Submit(1, plan.copies, {l, l + 1}, nullptr);
  while (r->calls_.load() == 0) absl::SleepFor(absl::Milliseconds(1));
  Result res;
  ASSERT_TRUE(sender
                  .Abort(1, absl::CancelledError("client went away"),
                         [&](absl::Status s) {
                           res.status = s;
                           res.calls_seen = r->finished_.load();
                           res.done.Notify();
                         })
                  .ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(res.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(res.calls_seen, 1);  // the running piece finished first
  EXPECT_EQ(r->calls_.load(), 1);
  EXPECT_EQ(sender.Close(1, nullptr).code(), absl::StatusCode::kNotFound);
}

TEST(AsyncKvSenderTest, ShutdownCancelsWhatIsQueuedAndRunsEveryCallback) {
  Fixture f;
  auto rec = std::make_unique<Recording>(
      MakeInProcessSender(f.registry, f.src.view()));
  rec->delay_ = absl::Milliseconds(50);
  auto sender = std::make_unique<AsyncKvSender>(std::move(rec));
  const CopyPlan plan = MakeCopyPlan(10, 24, 40);
  std::vector<Result> res(3);
  for (uint64_t k = 0; k < 3; ++k) {
    ASSERT_TRUE(
        sender->Open(k, f.Describe(k, plan), absl::Now() + absl::Seconds(10))
            .ok());
    for (int32_t l = 0; l < 4; ++l)
      sender->Submit(k, plan.copies, {l, l + 1}, nullptr);
    ASSERT_TRUE(sender
                    ->Close(k,
                            [&res, k](absl::Status s) {
                              res[k].status = s;
                              res[k].done.Notify();
                            })
                    .ok());
  }
  sender->Shutdown();
  for (uint64_t k = 0; k < 3; ++k) {
    ASSERT_TRUE(res[k].done.HasBeenNotified()) << k;
  }
  EXPECT_EQ(res[2].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(sender->Open(5, KvDescriptor{}, absl::InfiniteFuture()).code(),
            absl::StatusCode::kUnavailable);
}

TEST(AsyncKvSenderTest, RejectsABadLayerRangeOrAReopenedKey) {
  Fixture f;
  AsyncKvSender sender(MakeInProcessSender(f.registry, f.src.view()));
  const CopyPlan plan = MakeCopyPlan(11, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  EXPECT_EQ(sender.Open(1, KvDescriptor{}, absl::InfiniteFuture()).code(),
            absl::StatusCode::kAlreadyExists);
  sender.Submit(1, plan.copies, {4, 5}, nullptr);  // the layout has 4 layers
  Result res;
  ASSERT_TRUE(sender.Close(1, res.Record()).ok());
  ASSERT_TRUE(res.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(res.status.code(), absl::StatusCode::kInvalidArgument)
      << res.status;
}

// The observer (metrics) sees each transfer once as it ends: the bytes of
// the pieces that arrived (every layer, sent per layer or at once) and the
// time since Open; an aborted one carries no bytes and its status.
TEST(AsyncKvSenderTest, ReportsTheBytesAndTimeOfEachTransfer) {
  Fixture f;
  absl::Mutex mu;
  std::vector<AsyncKvSender::TransferReport> reports;
  AsyncKvSender sender(MakeInProcessSender(f.registry, f.src.view()),
                       [&](const AsyncKvSender::TransferReport& r) {
                         absl::MutexLock lock(&mu);
                         reports.push_back(r);
                       });
  const CopyPlan plan = MakeCopyPlan(5, 24, 40);
  ASSERT_TRUE(
      sender.Open(1, f.Describe(1, plan), absl::Now() + absl::Seconds(10))
          .ok());
  ASSERT_TRUE(
      sender.Open(2, f.Describe(2, plan), absl::Now() + absl::Seconds(10))
          .ok());
  for (int32_t l = 0; l < 4; ++l)
    sender.Submit(1, plan.copies, {l, l + 1}, nullptr);
  sender.Submit(2, plan.copies, {}, nullptr);
  Result one, two;
  ASSERT_TRUE(sender.Close(1, one.Record()).ok());
  ASSERT_TRUE(sender.Close(2, two.Record()).ok());
  ASSERT_TRUE(sender.Open(3, f.Describe(3, plan), absl::InfiniteFuture()).ok());
  Result three;
  ASSERT_TRUE(sender
                  .Abort(3, absl::CancelledError("gone"),
                         [&](absl::Status s) {
                           three.status = s;
                           three.done.Notify();
                         })
                  .ok());
  ASSERT_TRUE(one.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(two.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(three.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock lock(&mu);
  ASSERT_EQ(reports.size(), 3u);
  const int64_t want =
      static_cast<int64_t>(plan.copies.size()) * 4 * TestLayout().block_bytes();
  for (const auto& r : reports) {
    if (r.key == 3) {
      EXPECT_EQ(r.bytes, 0);
      EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
    } else {
      EXPECT_EQ(r.bytes, want) << "request " << r.key;
      EXPECT_TRUE(r.status.ok()) << r.status;
    }
    EXPECT_GE(r.elapsed, absl::ZeroDuration());
  }
}

}  // namespace
}  // namespace duet::kv_transfer
