// Scheduler bookkeeping driven step by step, with made-up sampled tokens: no
// model, no device, no threads.
#include "runtime/scheduler.h"

#include <map>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::runtime {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int32_t> Tokens(int32_t n, int32_t base = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), base);
  return t;
}

std::unique_ptr<Scheduler> Make(int32_t blocks, int32_t budget,
                                int32_t max_seqs = 64,
                                int32_t block_size = 16) {
  SchedulerOptions o;
  o.block_size = block_size;
  o.num_blocks = blocks;
  o.max_num_batched_tokens = budget;
  o.max_num_seqs = max_seqs;
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// Draws token 7000 + sequence id * 100 + its generated count, so every
// sampled token says whose it is and where it was drawn.
std::vector<int32_t> FakeSample(const Scheduler& s, const StepPlan& plan) {
  std::vector<int32_t> out;
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.sample) continue;
    const Sequence* seq = s.Find(c.id);
    out.push_back(7000 + static_cast<int32_t>(c.id.value()) * 100 +
                  seq->num_generated());
  }
  return out;
}

// Runs steps until every sequence has `generate` tokens past its prompt,
// removing finished ones as the engine loop does. Returns the steps taken.
int RunToEnd(Scheduler& s, int32_t generate,
             std::map<uint64_t, std::vector<int32_t>>* finished = nullptr) {
  int steps = 0;
  while (s.num_running() + s.num_waiting() > 0) {
    StepPlan plan = s.Schedule();
    EXPECT_FALSE(plan.empty()) << "stuck with " << s.num_running()
                               << " running, " << s.num_waiting() << " waiting";
    if (plan.empty()) return steps;
    EXPECT_TRUE(s.Update(plan, FakeSample(s, plan)).ok());
    ++steps;
    for (const ScheduledChunk& c : plan.chunks) {
      const Sequence* seq = s.Find(c.id);
      if (seq != nullptr && seq->num_generated() >= generate) {
        if (finished != nullptr) (*finished)[c.id.value()] = seq->tokens;
        s.Remove(c.id);
      }
    }
    if (steps > 10000) {
      ADD_FAILURE() << "no progress";
      return steps;
    }
  }
  return steps;
}

TEST(SchedulerTest, RejectsBadOptions) {
  SchedulerOptions o;
  o.num_blocks = 0;
  EXPECT_EQ(Scheduler::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, ChunksPromptsUnderTheTokenBudgetFcfs) {
  auto s = Make(/*blocks=*/64, /*budget=*/64);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(100), 100).ok());
  ASSERT_TRUE(s->Add(RequestId(2), Tokens(50), 50).ok());
  StepPlan p1 = s->Schedule();
  ASSERT_EQ(p1.chunks.size(), 1u);  // the budget is gone on request 1
  EXPECT_EQ(p1.chunks[0].id, RequestId(1));
  EXPECT_EQ(p1.chunks[0].start, 0);
  EXPECT_EQ(p1.chunks[0].len, 64);
  EXPECT_FALSE(p1.chunks[0].sample);
  EXPECT_EQ(s->num_free_blocks(), 64 - 7);  // all of its prompt's blocks
  ASSERT_TRUE(s->Update(p1, std::vector<int32_t>{}).ok());

  StepPlan p2 = s->Schedule();
  ASSERT_EQ(p2.chunks.size(), 2u);
  EXPECT_EQ(p2.chunks[0].start, 64);
  EXPECT_EQ(p2.chunks[0].len, 36);
  EXPECT_TRUE(p2.chunks[0].sample);
  EXPECT_EQ(p2.chunks[1].id, RequestId(2));
  EXPECT_EQ(p2.chunks[1].len, 28);
  EXPECT_FALSE(p2.chunks[1].sample);
  ASSERT_TRUE(s->Update(p2, std::vector<int32_t>{42}).ok());
  EXPECT_EQ(s->Find(RequestId(1))->tokens.back(), 42);
  EXPECT_EQ(s->Find(RequestId(1))->num_generated(), 1);
  // 1 decode token of request 1 + the rest (22) of request 2.
  StepPlan p3 = s->Schedule();
  ASSERT_EQ(p3.chunks.size(), 2u);
  EXPECT_EQ(p3.chunks[0].len, 1);
  EXPECT_EQ(p3.chunks[1].len, 22);
  EXPECT_TRUE(p3.chunks[1].sample);
  EXPECT_EQ(s->num_uncomputed_tokens(), 1 + 22);
}

TEST(SchedulerTest, UpdateChecksTheSampledCount) {
  auto s = Make(8, 64);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(10), 10).ok());
  StepPlan p = s->Schedule();
  EXPECT_EQ(s->Update(p, std::vector<int32_t>{}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(s->Update(p, std::vector<int32_t>{5}).ok());
}

TEST(SchedulerTest, AddValidates) {
  auto s = Make(4, 64);
  EXPECT_EQ(s->Add(RequestId(1), {}, 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Add(RequestId(1), Tokens(65), 65).code(),
            absl::StatusCode::kInvalidArgument);  // 5 blocks > 4
  EXPECT_EQ(
      s->Add(RequestId(1), Tokens(10), 10, 0, {}, /*max_total=*/65).code(),
      absl::StatusCode::kInvalidArgument);  // could grow to 5 > 4
  EXPECT_EQ(s->Add(RequestId(1), Tokens(10), 10, 10).code(),
            absl::StatusCode::kInvalidArgument);  // nothing left to run
  EXPECT_EQ(s->Add(RequestId(1), Tokens(20), 20, 17).code(),
            absl::StatusCode::kInvalidArgument);  // no blocks for 17 tokens
  // Blocks that were never reserved, or listed twice.
  std::vector<int32_t> t = Tokens(5);
  EXPECT_EQ(s->Add(RequestId(1), t, 4, 4, {BlockId(2)}).code(),
            absl::StatusCode::kInvalidArgument);
  auto held = s->Reserve(1);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(
      s->Add(RequestId(1), Tokens(20), 19, 16, {(*held)[0], (*held)[0]}).code(),
      absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s->Unreserve(*held).ok());
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(10), 10).ok());
  EXPECT_EQ(s->Add(RequestId(1), Tokens(10), 10).code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(SchedulerTest, DecodeGrowsOneBlockAtABoundary) {
  auto s = Make(/*blocks=*/8, /*budget=*/64);
  // A request whose 16-token prompt arrived with its KV in 2 reserved
  // blocks (the prompt's plus one), and its first token.
  auto reserved = s->Reserve(2);
  ASSERT_TRUE(reserved.ok());
  std::vector<int32_t> tokens = Tokens(16);
  tokens.push_back(5000);
  ASSERT_TRUE(s->Add(RequestId(1), tokens, 16, 16, *reserved).ok());
  EXPECT_EQ(s->num_free_blocks(), 6);
  for (int i = 0; i < 16; ++i) {  // tokens 17..32 fit in the two blocks
    StepPlan p = s->Schedule();
    ASSERT_EQ(p.chunks.size(), 1u);
    EXPECT_EQ(p.chunks[0].len, 1);
    EXPECT_TRUE(p.chunks[0].sample);
    ASSERT_TRUE(s->Update(p, std::vector<int32_t>{1}).ok());
    EXPECT_EQ(s->num_free_blocks(), 6) << "step " << i;
  }
  StepPlan p = s->Schedule();  // position 32 needs block 3
  EXPECT_EQ(s->num_free_blocks(), 5);
  EXPECT_EQ(s->Find(RequestId(1))->blocks.size(), 3u);
  ASSERT_TRUE(s->Update(p, std::vector<int32_t>{1}).ok());
  EXPECT_TRUE(s->Remove(RequestId(1)));
  EXPECT_EQ(s->num_free_blocks(), 8);
  EXPECT_FALSE(s->Remove(RequestId(1)));
}

TEST(SchedulerTest, FullPoolPreemptsTheMostRecentlyAdmittedAndRecomputes) {
  // 6 blocks of 4 tokens; two 8-token prompts take 2 blocks each (+1 to
  // start decoding); growing both past 12 tokens needs 8 blocks.
  auto s = Make(/*blocks=*/6, /*budget=*/32, /*max_seqs=*/8, /*bs=*/4);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(8, 10), 8).ok());
  ASSERT_TRUE(s->Add(RequestId(2), Tokens(8, 20), 8).ok());
  std::map<uint64_t, std::vector<int32_t>> finished;
  bool saw_preemption = false;
  int steps = 0;
  while (s->num_running() + s->num_waiting() > 0 && steps < 200) {
    StepPlan plan = s->Schedule();
    for (RequestId id : plan.preempted) {
      saw_preemption = true;
      EXPECT_EQ(id, RequestId(2)) << "the later request is the victim";
      const Sequence* victim = s->Find(id);
      EXPECT_EQ(victim->num_computed, 0);
      EXPECT_TRUE(victim->blocks.empty());
      EXPECT_FALSE(victim->running);
    }
    ASSERT_FALSE(plan.empty());
    for (const ScheduledChunk& c : plan.chunks) {
      const Sequence* seq = s->Find(c.id);
      if (c.start == 0 && seq->num_generated() > 0) {
        // Recompute: prompt and generated tokens again, sampling the next.
        EXPECT_EQ(c.len, static_cast<int32_t>(seq->tokens.size()));
        EXPECT_TRUE(c.sample);
      }
    }
    ASSERT_TRUE(s->Update(plan, FakeSample(*s, plan)).ok());
    ++steps;
    for (const ScheduledChunk& c : plan.chunks) {
      const Sequence* seq = s->Find(c.id);
      if (seq != nullptr && seq->num_generated() >= 10) {
        finished[c.id.value()] = seq->tokens;
        s->Remove(c.id);
      }
    }
  }
  EXPECT_TRUE(saw_preemption);
  EXPECT_GE(s->num_preemptions(), 1);
  EXPECT_EQ(s->num_free_blocks(), 6);
  // Each token was drawn at the right sampler step despite the recompute.
  for (uint64_t id : {1u, 2u}) {
    ASSERT_EQ(finished[id].size(), 18u);
    for (int g = 0; g < 10; ++g) {
      EXPECT_EQ(finished[id][8 + g], 7000 + static_cast<int32_t>(id) * 100 + g);
    }
  }
}

TEST(SchedulerTest, ReservationsAreNeverPreempted) {
  auto s = Make(/*blocks=*/4, /*budget=*/32, 8, /*bs=*/4);
  auto held = s->Reserve(2);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(s->Reserve(3).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(4), 4).ok());
  // Request 1 needs a third block at position 8: with 2 reserved it is
  // preempted (it is the only running one), then waits for room.
  std::vector<int32_t> none;
  for (int i = 0; i < 6; ++i) {
    StepPlan p = s->Schedule();
    if (p.empty()) break;
    ASSERT_TRUE(s->Update(p, FakeSample(*s, p)).ok());
  }
  EXPECT_EQ(s->num_running(), 0);
  EXPECT_EQ(s->num_waiting(), 1);
  EXPECT_TRUE(s->Schedule().empty());  // still no room
  ASSERT_TRUE(s->Unreserve(*held).ok());
  EXPECT_FALSE(s->Schedule().empty());
}

TEST(SchedulerTest, MaxNumSeqsCapsTheRunningSet) {
  auto s = Make(64, 1024, /*max_seqs=*/2);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(s->Add(RequestId(i), Tokens(5), 5).ok());
  }
  StepPlan p = s->Schedule();
  EXPECT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(s->num_waiting(), 1);
}

TEST(SchedulerTest, WaitingHeadIsNotOvertaken) {
  auto s = Make(/*blocks=*/4, 1024, 8, /*bs=*/4);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(12), 12).ok());  // 3 blocks
  ASSERT_TRUE(s->Add(RequestId(2), Tokens(8), 8).ok());    // 2 blocks
  ASSERT_TRUE(s->Add(RequestId(3), Tokens(2), 2).ok());    // 1 block
  StepPlan p = s->Schedule();
  // 2 does not fit after 1; 3 would, but must wait behind 2.
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].id, RequestId(1));
}

// The decode node's deadlock that reserved KV must not cause: a preempted
// request waits for more blocks than are free while a newer request holds
// its reserved blocks in the waiting queue behind it. The newer one may
// run (it takes no blocks) and the reservation that would starve the
// preempted one is refused.
TEST(SchedulerTest, ReservedSequencesRunPastABlockedHeadAndReservationsWait) {
  auto s = Make(/*blocks=*/8, /*budget=*/64, 8, /*bs=*/4);
  auto add_reserved = [&](uint64_t id) {
    auto blocks = s->Reserve(3);  // 8 prompt tokens + 1 block
    ASSERT_TRUE(blocks.ok()) << blocks.status();
    std::vector<int32_t> t = Tokens(8, static_cast<int32_t>(10 * id));
    t.push_back(1);
    ASSERT_TRUE(s->Add(RequestId(id), t, 8, 8, *blocks).ok());
  };
  add_reserved(1);
  add_reserved(2);
  // Grow both until request 2 is preempted.
  int guard = 0;
  while (s->num_preemptions() == 0 && ++guard < 100) {
    StepPlan p = s->Schedule();
    ASSERT_FALSE(p.empty());
    ASSERT_TRUE(s->Update(p, FakeSample(*s, p)).ok());
  }
  ASSERT_EQ(s->num_preemptions(), 1);
  ASSERT_NE(s->Find(RequestId(2)), nullptr);
  EXPECT_FALSE(s->Find(RequestId(2))->running);
  const int64_t owed = s->num_blocks_owed();
  EXPECT_GT(owed, 0);
  // A reservation that would leave less than is owed is refused.
  EXPECT_EQ(s->Reserve(s->num_free_blocks()).status().code(),
            absl::StatusCode::kResourceExhausted);
  // Request 1 finishes; 2 resumes.
  s->Remove(RequestId(1));
  StepPlan p = s->Schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].id, RequestId(2));
  EXPECT_EQ(p.chunks[0].start, 0);  // recompute
  // Now a request holding reserved blocks queued behind a blocked head.
  auto held = s->Reserve(2);
  ASSERT_TRUE(held.ok()) << held.status();
  std::vector<int32_t> t = Tokens(4, 900);
  t.push_back(1);
  ASSERT_TRUE(s->Add(RequestId(3), t, 4, 4, *held).ok());
  ASSERT_TRUE(s->Add(RequestId(4), Tokens(30), 30).ok());  // 8 blocks: blocked
  ASSERT_TRUE(s->Update(p, FakeSample(*s, p)).ok());
  s->Remove(RequestId(2));
  // 4 waits for all 8 blocks (3 holds 2); 3 joins anyway and runs.
  ASSERT_TRUE(s->Add(RequestId(5), Tokens(2), 2).ok());  // needs 1 block
  StepPlan q = s->Schedule();
  ASSERT_EQ(q.chunks.size(), 1u);
  EXPECT_EQ(q.chunks[0].id, RequestId(3));  // 5 must not overtake 4
}

// Cancelling any request at any step leaves no block behind and lets the
// others finish.
TEST(SchedulerTest, CancellationAtEveryStepLeaksNothing) {
  const int total_steps = [] {
    auto s = Make(/*blocks=*/12, /*budget=*/16, 8, /*bs=*/4);
    for (int i = 1; i <= 3; ++i) {
      EXPECT_TRUE(s->Add(RequestId(i), Tokens(10 + 3 * i), 10 + 3 * i).ok());
    }
    return RunToEnd(*s, 12);
  }();
  ASSERT_GT(total_steps, 5);
  for (int victim = 1; victim <= 3; ++victim) {
    for (int at = 0; at <= total_steps; ++at) {
      auto s = Make(12, 16, 8, 4);
      for (int i = 1; i <= 3; ++i) {
        ASSERT_TRUE(s->Add(RequestId(i), Tokens(10 + 3 * i), 10 + 3 * i).ok());
      }
      std::map<uint64_t, std::vector<int32_t>> finished;
      int step = 0;
      while (s->num_running() + s->num_waiting() > 0) {
        if (step == at) s->Remove(RequestId(victim));
        StepPlan plan = s->Schedule();
        if (plan.empty()) break;
        ASSERT_TRUE(s->Update(plan, FakeSample(*s, plan)).ok());
        // Removing between Schedule and Update is what a failed chunk
        // does; Update already skipped nothing here, so remove after.
        for (const ScheduledChunk& c : plan.chunks) {
          const Sequence* seq = s->Find(c.id);
          if (seq != nullptr && seq->num_generated() >= 12) {
            finished[c.id.value()] = seq->tokens;
            s->Remove(c.id);
          }
        }
        ++step;
        ASSERT_LT(step, 1000);
      }
      EXPECT_EQ(s->num_running() + s->num_waiting(), 0)
          << "victim " << victim << " at step " << at;
      EXPECT_EQ(s->num_free_blocks(), 12)
          << "victim " << victim << " at step " << at;
      for (int i = 1; i <= 3; ++i) {
        if (i == victim && at < total_steps) continue;
        EXPECT_TRUE(finished.contains(i) || i == victim)
            << "request " << i << " did not finish (victim " << victim << " at "
            << at << ")";
      }
    }
  }
}

TEST(SchedulerTest, RemoveBetweenScheduleAndUpdateIsSkipped) {
  auto s = Make(8, 64);
  ASSERT_TRUE(s->Add(RequestId(1), Tokens(10), 10).ok());
  ASSERT_TRUE(s->Add(RequestId(2), Tokens(10), 10).ok());
  StepPlan p = s->Schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_TRUE(s->Remove(RequestId(1)));
  ASSERT_TRUE(s->Update(p, std::vector<int32_t>{1, 2}).ok());
  EXPECT_THAT(s->Find(RequestId(2))->tokens.back(), 2);
  EXPECT_EQ(s->Find(RequestId(1)), nullptr);
}

}  // namespace
}  // namespace duet::runtime

namespace duet::runtime {
namespace {

std::unique_ptr<Scheduler> MakeWith(SchedulingPolicy policy, int32_t blocks,
                                    int32_t budget) {
  SchedulerOptions o;
  o.policy = policy;
  o.block_size = 16;
  o.num_blocks = blocks;
  o.max_num_batched_tokens = budget;
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

TEST(SchedulingPolicyTest, ParsesBothNamesAndRejectsOthers) {
  EXPECT_EQ(*ParseSchedulingPolicy("piggyback"), SchedulingPolicy::kPiggyback);
  EXPECT_EQ(*ParseSchedulingPolicy("prefill-first"),
            SchedulingPolicy::kPrefillFirst);
  const absl::Status bad = ParseSchedulingPolicy("fifo").status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("piggyback or prefill-first"));
}

// Random mixes of prompt lengths and arrival steps under both policies:
// every step stays within the budget, piggyback plans one token of every
// decode that was running before the step (never starved) ahead of any
// prefill chunk, only a chunk reaching a sequence's last token samples, and
// every sequence ends with all its tokens.
TEST(SchedulingPolicyTest, PiggybackNeverStarvesDecodesAndKeepsTheBudget) {
  for (SchedulingPolicy policy :
       {SchedulingPolicy::kPiggyback, SchedulingPolicy::kPrefillFirst}) {
    for (uint32_t seed = 1; seed <= 20; ++seed) {
      SCOPED_TRACE(absl::StrCat(SchedulingPolicyName(policy), " seed ", seed));
      std::mt19937 rng(seed);
      const int32_t budget = 32 + static_cast<int32_t>(rng() % 200);
      auto s = MakeWith(policy, 4096, budget);
      constexpr int32_t kGenerate = 6;
      std::map<uint64_t, int32_t> prompt_len;
      uint64_t next_id = 1;
      int starved_steps = 0;
      for (int step = 0; step < 400; ++step) {
        if (next_id <= 24 && rng() % 3 == 0) {
          const int32_t len = 1 + static_cast<int32_t>(rng() % 700);
          prompt_len[next_id] = len;
          ASSERT_TRUE(s->Add(RequestId(next_id), Tokens(len), len, 0, {},
                             len + kGenerate)
                          .ok());
          ++next_id;
        }
        // Decodes running before this step: their last token is the only
        // one left to compute.
        std::vector<uint64_t> decodes;
        for (const auto& [id, len] : prompt_len) {
          const Sequence* q = s->Find(RequestId(id));
          if (q != nullptr && q->running &&
              static_cast<int32_t>(q->tokens.size()) - q->num_computed == 1) {
            decodes.push_back(id);
          }
        }
        StepPlan plan = s->Schedule();
        if (plan.empty()) {
          if (next_id > 24 && s->num_running() + s->num_waiting() == 0) break;
          continue;
        }
        int32_t tokens = 0;
        bool prefill_seen = false;
        for (const ScheduledChunk& c : plan.chunks) {
          tokens += c.len;
          const Sequence* q = s->Find(c.id);
          EXPECT_EQ(c.sample,
                    c.start + c.len == static_cast<int32_t>(q->tokens.size()));
          const bool decode =
              c.len == 1 &&
              c.start + 1 == static_cast<int32_t>(q->tokens.size()) &&
              q->num_generated() > 0;
          if (policy == SchedulingPolicy::kPiggyback) {
            if (!decode) prefill_seen = true;
            EXPECT_FALSE(decode && prefill_seen)
                << "a decode planned after a prefill chunk";
          }
        }
        EXPECT_LE(tokens, budget);
        size_t planned_decodes = 0;
        for (uint64_t id : decodes) {
          planned_decodes += std::count_if(
              plan.chunks.begin(), plan.chunks.end(),
              [&](const ScheduledChunk& c) { return c.id.value() == id; });
        }
        if (planned_decodes < std::min<size_t>(decodes.size(), budget)) {
          ++starved_steps;
        }
        ASSERT_TRUE(s->Update(plan, FakeSample(*s, plan)).ok());
        for (const ScheduledChunk& c : plan.chunks) {
          const Sequence* q = s->Find(c.id);
          if (q != nullptr && q->num_generated() >= kGenerate) {
            EXPECT_EQ(static_cast<int32_t>(q->tokens.size()),
                      prompt_len[c.id.value()] + kGenerate);
            s->Remove(c.id);
          }
        }
      }
      EXPECT_EQ(s->num_running() + s->num_waiting(), 0);
      EXPECT_EQ(s->num_free_blocks(), 4096);
      if (policy == SchedulingPolicy::kPiggyback) {
        EXPECT_EQ(starved_steps, 0);
      }
    }
  }
}

// The case that tells the two orders apart: a long prompt arrives while a
// short one is decoding.
TEST(SchedulingPolicyTest, PrefillFirstPausesDecodesPiggybackDoesNot) {
  for (SchedulingPolicy policy :
       {SchedulingPolicy::kPiggyback, SchedulingPolicy::kPrefillFirst}) {
    SCOPED_TRACE(SchedulingPolicyName(policy));
    auto s = MakeWith(policy, 256, 64);
    ASSERT_TRUE(s->Add(RequestId(2), Tokens(8), 8).ok());
    StepPlan first = s->Schedule();
    ASSERT_TRUE(s->Update(first, FakeSample(*s, first)).ok());
    ASSERT_EQ(s->Find(RequestId(2))->num_generated(), 1);
    ASSERT_TRUE(s->Add(RequestId(1), Tokens(1000), 1000).ok());
    int decode_steps = 0;
    int steps = 0;
    while (s->Find(RequestId(1))->num_generated() == 0) {
      StepPlan plan = s->Schedule();
      ASSERT_FALSE(plan.empty());
      int32_t tokens = 0;
      for (const ScheduledChunk& c : plan.chunks) {
        tokens += c.len;
        if (c.id.value() == 1) {
          EXPECT_EQ(c.sample, c.start + c.len == 1000);
        }
      }
      EXPECT_LE(tokens, 64);
      decode_steps += std::any_of(
          plan.chunks.begin(), plan.chunks.end(),
          [](const ScheduledChunk& c) { return c.id.value() == 2; });
      if (policy == SchedulingPolicy::kPiggyback) {
        EXPECT_EQ(plan.chunks.front().id.value(), 2u);
        EXPECT_EQ(plan.chunks.front().len, 1);
      }
      ASSERT_TRUE(s->Update(plan, FakeSample(*s, plan)).ok());
      ++steps;
    }
    if (policy == SchedulingPolicy::kPiggyback) {
      // A decode token every step beside 63-token chunks of the prompt.
      EXPECT_EQ(decode_steps, steps);
      EXPECT_EQ(steps, 16);  // ceil(1000 / 63)
    } else {
      // The prompt's 16 chunks of 64 ran alone.
      EXPECT_EQ(decode_steps, 0);
      EXPECT_EQ(steps, 16);
    }
  }
}

}  // namespace
}  // namespace duet::runtime

namespace duet::runtime {
namespace {

std::unique_ptr<Scheduler> MakeCaching(int32_t blocks, int32_t budget,
                                       bool caching = true) {
  SchedulerOptions o;
  o.block_size = 16;
  o.num_blocks = blocks;
  o.max_num_batched_tokens = budget;
  o.enable_prefix_caching = caching;
  auto s = Scheduler::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// Runs until `id` has drawn `n` tokens; returns the tokens computed for it
// (what the forward passes ran).
int32_t RunUntilGenerated(Scheduler& s, uint64_t id, int32_t n) {
  int32_t computed = 0;
  while (s.Find(RequestId(id))->num_generated() < n) {
    StepPlan plan = s.Schedule();
    EXPECT_FALSE(plan.empty());
    if (plan.empty()) break;
    for (const ScheduledChunk& c : plan.chunks) {
      if (c.id.value() == id) computed += c.len;
    }
    EXPECT_TRUE(s.Update(plan, FakeSample(s, plan)).ok());
  }
  return computed;
}

TEST(PrefixCachingTest, ASharedPrefixIsComputedOnce) {
  auto s = MakeCaching(64, 512);
  // 100 shared tokens (6 full blocks + 4), then distinct suffixes.
  std::vector<int32_t> a = Tokens(100), b = Tokens(100);
  for (int32_t i = 0; i < 20; ++i) {
    a.push_back(900 + i);
    b.push_back(950 + i);
  }
  ASSERT_TRUE(s->Add(RequestId(1), a, 120).ok());
  EXPECT_EQ(RunUntilGenerated(*s, 1, 1), 120);
  ASSERT_TRUE(s->Add(RequestId(2), b, 120).ok());
  // The 6 full shared blocks come from the cache: 96 tokens not computed.
  EXPECT_EQ(RunUntilGenerated(*s, 2, 1), 24);
  EXPECT_EQ(s->Find(RequestId(2))->num_cached_tokens, 96);
  EXPECT_EQ(s->prefix_cache_hits(), 96);
  EXPECT_EQ(s->prefix_cache_queries(), 240);
  // Shared blocks: both hold the same 6 ids.
  for (int j = 0; j < 6; ++j) {
    EXPECT_EQ(s->Find(RequestId(1))->blocks[j],
              s->Find(RequestId(2))->blocks[j]);
  }
  const int32_t free_both = s->num_free_blocks();
  // Cancelling one sharer frees only its own references: the shared
  // blocks stay held by the other.
  ASSERT_TRUE(s->Remove(RequestId(1)));
  // Its 8 blocks: the 6 shared ones stay held by request 2, its own 2
  // (one cached, one partial) come back.
  EXPECT_EQ(s->num_free_blocks(), free_both + 2);
  ASSERT_TRUE(s->Remove(RequestId(2)));
  // Every block is free or idle in the cache.
  EXPECT_EQ(s->num_free_blocks(), 64);
  EXPECT_GT(s->num_cached_blocks(), 0);
}

TEST(PrefixCachingTest, TheLastTokenAlwaysRunsAndOffMeansOff) {
  for (bool caching : {true, false}) {
    auto s = MakeCaching(64, 512, caching);
    // 64 tokens: exactly 4 full blocks.
    ASSERT_TRUE(s->Add(RequestId(1), Tokens(64), 64).ok());
    RunUntilGenerated(*s, 1, 1);
    ASSERT_TRUE(s->Remove(RequestId(1)));
    ASSERT_TRUE(s->Add(RequestId(2), Tokens(64), 64).ok());
    // 3 blocks from the cache; the 4th holds the last prompt token, which
    // must run to be sampled.
    EXPECT_EQ(RunUntilGenerated(*s, 2, 1), caching ? 16 : 64);
    EXPECT_EQ(s->prefix_cache_hits(), caching ? 48 : 0);
  }
}

// Many distinct and shared prompts on a pool too small to keep them all:
// evictions happen, sequences still run to the end with the right amount
// of work, and everything is free or cached afterwards.
TEST(PrefixCachingTest, EvictionsUnderASmallPoolLeakNothing) {
  auto s = MakeCaching(40, 128);
  std::mt19937 rng(5);
  uint64_t next = 1;
  int64_t computed_total = 0;
  for (int round = 0; round < 30; ++round) {
    const int32_t prefix = static_cast<int32_t>(rng() % 4);
    std::vector<int32_t> p = Tokens(64, 1000 * prefix);
    const int32_t suffix = 1 + static_cast<int32_t>(rng() % 40);
    for (int32_t i = 0; i < suffix; ++i) p.push_back(5000 + round * 50 + i);
    const int32_t len = static_cast<int32_t>(p.size());
    ASSERT_TRUE(s->Add(RequestId(next), p, len, 0, {}, len + 8).ok());
    const int32_t work = RunUntilGenerated(*s, next, 8);
    const int32_t cached = s->Find(RequestId(next))->num_cached_tokens;
    EXPECT_EQ(work, len - cached + 7) << "round " << round;
    EXPECT_EQ(cached % 16, 0);
    computed_total += work;
    ASSERT_TRUE(s->Remove(RequestId(next)));
    EXPECT_EQ(s->num_free_blocks(), 40);
    ++next;
  }
  EXPECT_GT(s->prefix_cache_hits(), 0);
  EXPECT_GT(s->num_cache_evictions(), 0);
}

// A decode node's reservation links the cached leading blocks of its
// prompt, the sequence then holds them shared, registers the rest once
// decoding computed them, and every block ends free or cached.
TEST(PrefixCachingTest, ReservePromptLinksCachedBlocksAndLeaksNothing) {
  auto s = MakeCaching(32, 512);
  // A finished request leaves its 6 full prompt blocks cached.
  const std::vector<int32_t> first = Tokens(100);
  ASSERT_TRUE(s->Add(RequestId(1), first, 100).ok());
  RunUntilGenerated(*s, 1, 1);
  ASSERT_TRUE(s->Remove(RequestId(1)));
  ASSERT_EQ(s->num_free_blocks(), 32);

  // The same 100 tokens plus 20: blocks 0..5 are cached; at most 3 may be
  // linked here, and 9 blocks are wanted in all.
  std::vector<int32_t> prompt = first;
  for (int32_t i = 0; i < 20; ++i) prompt.push_back(700 + i);
  auto capped = s->ReservePrompt(prompt, 9, 3);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(capped->cached_uids.size(), 3u);
  EXPECT_EQ(capped->blocks.size(), 9u);
  ASSERT_TRUE(s->Unreserve(capped->blocks).ok());
  EXPECT_EQ(s->num_free_blocks(), 32);

  const int64_t hits = s->prefix_cache_hits();
  auto taken = s->ReservePrompt(prompt, 9, 7);
  ASSERT_TRUE(taken.ok());
  ASSERT_EQ(taken->cached_uids.size(), 6u);
  EXPECT_EQ(s->prefix_cache_hits(), hits + 96);
  // Another request shares the cached blocks meanwhile.
  ASSERT_TRUE(s->Add(RequestId(2), first, 100).ok());
  RunUntilGenerated(*s, 2, 1);
  EXPECT_EQ(s->Find(RequestId(2))->blocks[0], taken->blocks[0]);

  // The reserved prompt's KV "arrives"; it joins with all 120 computed.
  std::vector<int32_t> tokens = prompt;
  tokens.push_back(5);
  ASSERT_TRUE(s->Add(RequestId(3), tokens, 120, 120, taken->blocks, 130,
                     taken->cached_uids)
                  .ok());
  RunUntilGenerated(*s, 3, 3);
  // Its own full block 6 (tokens 96..111) was registered after decoding:
  // a third prompt finds 7 blocks cached.
  auto third = s->ReservePrompt(prompt, 9, 7);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->cached_uids.size(), 7u);
  ASSERT_TRUE(s->Unreserve(third->blocks).ok());
  ASSERT_TRUE(s->Remove(RequestId(2)));
  ASSERT_TRUE(s->Remove(RequestId(3)));
  EXPECT_EQ(s->num_free_blocks(), 32);
}

TEST(PrefixCachingTest, ReservePromptWithoutCachingOrRoomTakesNothing) {
  auto off = MakeCaching(16, 512, /*caching=*/false);
  auto plain = off->ReservePrompt(Tokens(64), 5, 3);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->cached_uids.empty());
  // Cached uids are refused without prefix caching.
  EXPECT_FALSE(
      off->Add(RequestId(1), Tokens(65), 64, 64, plain->blocks, 0, {1, 2})
          .ok());
  ASSERT_TRUE(off->Unreserve(plain->blocks).ok());

  auto on = MakeCaching(8, 512);
  ASSERT_TRUE(on->Add(RequestId(1), Tokens(64), 64).ok());
  RunUntilGenerated(*on, 1, 1);
  ASSERT_TRUE(on->Remove(RequestId(1)));
  // 3 cached blocks would be linked, but 10 are wanted of a pool of 8: the
  // reservation fails and the cached blocks are not kept referenced.
  EXPECT_EQ(on->ReservePrompt(Tokens(64), 10, 3).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(on->num_free_blocks(), 8);
}

}  // namespace
}  // namespace duet::runtime
