#include "kv_transfer/fault_injection.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/in_process.h"
#include "tests/kv_transfer/kv_test_util.h"

namespace duet::kv_transfer {
namespace {

using testing::AllPoison;
using testing::BlocksCopied;
using ::testing::HasSubstr;
using testing::TestLayout;
using testing::TestPool;

// Counts calls and returns OK (or a fixed status); records the timeout seen.
class FakeSender : public KvSender {
 public:
  absl::Status SendLayers(const KvDescriptor&, std::span<const BlockCopy>,
                          LayerRange, std::shared_ptr<const kernels::StreamMark>,
                          absl::Duration timeout) override {
    ++calls;
    last_timeout = timeout;
    return absl::OkStatus();
  }
  int calls = 0;
  absl::Duration last_timeout;
};

struct Wrapped {
  std::unique_ptr<FaultInjectingSender> sender;
  FakeSender* fake;
};
Wrapped Wrap(FaultPlan plan) {
  auto fake = std::make_unique<FakeSender>();
  FakeSender* raw = fake.get();
  return {MakeFaultInjectingSender(std::move(fake), plan), raw};
}

absl::Status SendOnce(KvSender& s, absl::Duration timeout) {
  return s.Send(KvDescriptor{}, {}, timeout);
}

TEST(FaultInjectionTest, DropBlocksForTheTimeoutThenDeadlineExceeded) {
  Wrapped w = Wrap(*ParseFaultPlan("drop"));
  const absl::Time start = absl::Now();
  absl::Status s = SendOnce(*w.sender, absl::Milliseconds(150));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Milliseconds(150) + absl::Seconds(1));
  EXPECT_EQ(w.fake->calls, 0);
  EXPECT_EQ(w.sender->counters().dropped, 1);
}

TEST(FaultInjectionTest, ErrorIsUnavailableWithoutCallingInner) {
  Wrapped w = Wrap(*ParseFaultPlan("error"));
  absl::Status s = SendOnce(*w.sender, absl::Seconds(5));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("injected fault"));
  EXPECT_EQ(w.fake->calls, 0);
}

TEST(FaultInjectionTest, DelaySleepsThenForwardsTheRemainingTimeout) {
  Wrapped w = Wrap(*ParseFaultPlan("delay:ms=100"));
  const absl::Time start = absl::Now();
  EXPECT_TRUE(SendOnce(*w.sender, absl::Seconds(5)).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_EQ(w.fake->calls, 1);
  EXPECT_EQ(w.fake->last_timeout, absl::Seconds(5) - absl::Milliseconds(100));
  EXPECT_EQ(w.sender->counters().delayed, 1);
}

TEST(FaultInjectionTest, DelayLongerThanTimeoutTimesOut) {
  Wrapped w = Wrap(*ParseFaultPlan("delay:ms=5000"));
  const absl::Time start = absl::Now();
  EXPECT_EQ(SendOnce(*w.sender, absl::Milliseconds(50)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(w.fake->calls, 0);
}

TEST(FaultInjectionTest, EveryNthCallAndCounters) {
  Wrapped w = Wrap(*ParseFaultPlan("error:every=3"));
  std::vector<absl::StatusCode> codes;
  for (int i = 0; i < 7; ++i)
    codes.push_back(SendOnce(*w.sender, absl::Seconds(1)).code());
  const auto ok = absl::StatusCode::kOk;
  const auto un = absl::StatusCode::kUnavailable;
  EXPECT_EQ(codes, (std::vector<absl::StatusCode>{ok, ok, un, ok, ok, un, ok}));
  const FaultCounters c = w.sender->counters();
  EXPECT_EQ(c.calls, 7);
  EXPECT_EQ(c.passed, 5);
  EXPECT_EQ(c.errored, 2);
  EXPECT_EQ(c.dropped, 0);
  EXPECT_EQ(c.delayed, 0);
  EXPECT_EQ(w.fake->calls, 5);
}

TEST(FaultInjectionTest, AfterLetsTheFirstCallsThrough) {
  Wrapped w = Wrap(*ParseFaultPlan("error:after=2"));
  EXPECT_TRUE(SendOnce(*w.sender, absl::Seconds(1)).ok());
  EXPECT_TRUE(SendOnce(*w.sender, absl::Seconds(1)).ok());
  EXPECT_FALSE(SendOnce(*w.sender, absl::Seconds(1)).ok());
  EXPECT_FALSE(SendOnce(*w.sender, absl::Seconds(1)).ok());
}

TEST(FaultInjectionTest, ProbabilityIsDeterministicPerSeed) {
  auto run = [](absl::string_view spec) {
    Wrapped w = Wrap(*ParseFaultPlan(spec));
    std::string pattern;
    for (int i = 0; i < 200; ++i) {
      pattern += SendOnce(*w.sender, absl::Seconds(1)).ok() ? '.' : 'x';
    }
    return pattern;
  };
  const std::string a = run("error:prob=0.5,seed=1");
  EXPECT_EQ(a, run("error:prob=0.5,seed=1"));
  EXPECT_NE(a, run("error:prob=0.5,seed=2"));
  const auto faults = std::count(a.begin(), a.end(), 'x');
  EXPECT_GT(faults, 60);  // ~100 expected; bounds are > 5 sigma wide
  EXPECT_LT(faults, 140);
  EXPECT_EQ(run("error:prob=0,seed=3"), std::string(200, '.'));
  EXPECT_EQ(run("error:prob=1,seed=3"), std::string(200, 'x'));
}

TEST(FaultInjectionTest, PassForwardsRealTransfers) {
  TestPool src(TestLayout(), 16);
  src.FillRandom(7);
  TestPool dst(TestLayout(), 16);
  InProcessRegistry registry;
  auto receiver = MakeInProcessReceiver(registry, "d", dst.view());
  ASSERT_TRUE(receiver.ok());
  auto sender =
      MakeFaultInjectingSender(MakeInProcessSender(registry, src.view()),
                               *ParseFaultPlan("drop:every=2"));
  const testing::CopyPlan plan = testing::MakeCopyPlan(8, 16, 16);
  const KvDescriptor d = *(*receiver)->Describe(/*key=*/1, plan.dest_block_ids);
  EXPECT_TRUE(sender->Send(d, plan.copies, absl::Seconds(1)).ok());
  EXPECT_TRUE(BlocksCopied(src, dst, plan.dest_block_ids, plan.copies));
  dst.Fill(testing::kPoison);
  EXPECT_EQ(sender->Send(d, plan.copies, absl::Milliseconds(20)).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(AllPoison(dst));  // a dropped transfer moves nothing
}

TEST(ParseFaultPlanTest, GoodSpecs) {
  FaultPlan none;
  EXPECT_EQ(*ParseFaultPlan(""), none);
  EXPECT_EQ(*ParseFaultPlan("  none "), none);
  EXPECT_EQ(*ParseFaultPlan("pass"), none);

  FaultPlan drop3;
  drop3.action = FaultAction::kDrop;
  drop3.every = 3;
  EXPECT_EQ(*ParseFaultPlan("drop:every=3"), drop3);

  FaultPlan delay;
  delay.action = FaultAction::kDelay;
  delay.delay = absl::Milliseconds(200);
  EXPECT_EQ(*ParseFaultPlan("delay:ms=200"), delay);

  FaultPlan error;
  error.action = FaultAction::kError;
  error.every = 0;
  error.probability = 0.5;
  error.seed = 1;
  EXPECT_EQ(*ParseFaultPlan("error:prob=0.5,seed=1"), error);
  EXPECT_EQ(*ParseFaultPlan("error: seed=1 , prob=0.5"), error);

  FaultPlan after;
  after.action = FaultAction::kDrop;
  after.after = 2;
  EXPECT_EQ(*ParseFaultPlan("drop:after=2"), after);

  for (const FaultPlan& p : {none, drop3, delay, error, after}) {
    EXPECT_EQ(*ParseFaultPlan(FaultPlanString(p)), p) << FaultPlanString(p);
  }
  EXPECT_EQ(FaultPlanString(drop3), "drop:every=3");
}

TEST(ParseFaultPlanTest, BadSpecsAreInvalidArgument) {
  for (const char* spec :
       {"explode", "drop:every=0", "drop:every=-1", "drop:every=x",
        "drop:every", "drop:", "drop:every=2,every=3", "drop:bogus=1",
        "error:prob=1.5", "error:prob=-0.1", "error:prob=nan",
        "error:prob=0.5,every=2", "delay", "delay:ms=-5", "drop:ms=10",
        "none:every=2", "error:seed=-1", "drop:after=-1", ":every=2"}) {
    absl::StatusOr<FaultPlan> plan = ParseFaultPlan(spec);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
}

}  // namespace
}  // namespace duet::kv_transfer
