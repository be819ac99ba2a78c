// PrefillEngine + DecodeEngine wired through the in-process KV transport:
// the whole disaggregated request path without gRPC or processes, so the
// schedulers' bookkeeping can be checked precisely and fast.
#include <thread>

#include "decode_node/decode_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/fault_injection.h"
#include "kv_transfer/in_process.h"
#include "model/engine.h"
#include "prefill_node/prefill_engine.h"
#include "tests/testing/test_model.h"

namespace duet {
namespace {

using ::testing::HasSubstr;

struct Pair {
  kv_transfer::InProcessRegistry registry;
  std::unique_ptr<prefill_node::PrefillEngine> prefill;
  std::unique_ptr<decode_node::DecodeEngine> decode;
};

std::unique_ptr<Pair> MakePair(
    int32_t prefill_budget, int32_t decode_blocks, int32_t max_batch = 8,
    const std::string& fault = "",
    prefill_node::KvPush push = prefill_node::KvPush::kLayer) {
  auto p = std::make_unique<Pair>();
  decode_node::DecodeEngineOptions d;
  d.max_num_seqs = max_batch;
  d.release_quarantine = absl::Milliseconds(200);
  auto decode = decode_node::DecodeEngine::Create(
      testing::MakeCpuRunner(testing::SyntheticModelDir("tiny"), decode_blocks),
      d, [&](runtime::ModelRunner& r) {
        return kv_transfer::MakeInProcessReceiver(p->registry, "decode0",
                                                  r.pool_view());
      });
  EXPECT_TRUE(decode.ok()) << decode.status();
  p->decode = std::move(*decode);
  prefill_node::PrefillEngineOptions o;
  o.max_num_batched_tokens = prefill_budget;
  o.transfer_timeout = absl::Milliseconds(300);
  o.push = push;
  auto plan = kv_transfer::ParseFaultPlan(fault);
  EXPECT_TRUE(plan.ok());
  auto prefill = prefill_node::PrefillEngine::Create(
      testing::MakeCpuRunner(testing::SyntheticModelDir("tiny"), 128), o,
      [&](runtime::ModelRunner& r)
          -> absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>> {
        return std::unique_ptr<kv_transfer::KvSender>(
            kv_transfer::MakeFaultInjectingSender(
                kv_transfer::MakeInProcessSender(p->registry, r.pool_view()),
                *plan));
      });
  EXPECT_TRUE(prefill.ok()) << prefill.status();
  p->prefill = std::move(*prefill);
  return p;
}

model::SamplingParams Greedy(int32_t max_tokens) {
  model::SamplingParams s;
  s.max_tokens = max_tokens;
  s.ignore_eos = true;
  return s;
}

// Reserve -> prefill -> decode for one request; returns all tokens.
absl::StatusOr<std::vector<int32_t>> RunOne(Pair& p, uint64_t id,
                                            const std::vector<int32_t>& prompt,
                                            const model::SamplingParams& s) {
  auto desc =
      p.decode->Reserve(id, static_cast<int32_t>(prompt.size()), s.max_tokens,
                        p.prefill->layout(), absl::ZeroDuration());
  if (!desc.ok()) return desc.status();
  auto job =
      p.prefill->Submit(id, prompt, s, *desc, absl::Now() + absl::Seconds(30));
  if (!job.ok()) return job.status();
  auto result = (*job)->Wait(absl::Seconds(30));
  if (!result.has_value()) return absl::DeadlineExceededError("prefill hung");
  if (!result->ok()) {
    p.decode->Release(id);
    return result->status();
  }
  auto stream = p.decode->StartDecode(id, prompt, (*result)->first_token, s);
  if (!stream.ok()) return stream.status();
  // The stream starts at token 2; token 1 is the prefill node's.
  std::vector<int32_t> tokens = {(*result)->first_token};
  while (true) {
    auto u = (*stream)->Next(absl::Seconds(10));
    tokens.insert(tokens.end(), u.tokens.begin(), u.tokens.end());
    if (u.done) {
      if (!u.error.ok()) return u.error;
      return tokens;
    }
  }
}

class PushModeTest : public ::testing::TestWithParam<prefill_node::KvPush> {};

// Prompts of 3..190 tokens in a 48-token budget: single-chunk and
// many-chunk prompts, partial last blocks, chunks of several requests in
// one pass; every push mode gives the single-process engine's tokens.
TEST_P(PushModeTest, ConcurrentRequestsMatchTheSingleProcessEngine) {
  auto p =
      MakePair(/*prefill_budget=*/48, /*decode_blocks=*/256, 8, "", GetParam());
  auto engine = model::Engine::Create(
      testing::LoadCpuModel(testing::SyntheticModelDir("tiny")), {});
  ASSERT_TRUE(engine.ok());
  constexpr int kN = 12;
  std::vector<std::vector<int32_t>> prompts, want(kN);
  std::vector<absl::StatusOr<std::vector<int32_t>>> got(kN,
                                                        absl::UnknownError(""));
  for (int i = 0; i < kN; ++i) {
    prompts.push_back(testing::LcgPrompt(3 + 17 * i, 100000));
    auto r = (*engine)->Generate(prompts[i], Greedy(5 + i));
    ASSERT_TRUE(r.ok());
    want[i] = r->tokens;
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back(
        [&, i] { got[i] = RunOne(*p, 100 + i, prompts[i], Greedy(5 + i)); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ(*got[i], want[i]) << "request " << i;
  }
  EXPECT_EQ(p->decode->Load().free_blocks, 256);
  EXPECT_EQ(p->prefill->free_blocks(), 128);
  EXPECT_EQ(p->prefill->queued_tokens(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    DisaggregatedEnginesTest, PushModeTest,
    ::testing::Values(prefill_node::KvPush::kLayer,
                      prefill_node::KvPush::kChunk,
                      prefill_node::KvPush::kRequest),
    [](const ::testing::TestParamInfo<prefill_node::KvPush>& info) {
      return std::string(prefill_node::KvPushName(info.param));
    });

TEST(DisaggregatedEnginesTest, FullPoolIsResourceExhaustedAndRunningIsIntact) {
  auto p = MakePair(64, /*decode_blocks=*/4);
  // 40 + 20 - 1 tokens need 4 blocks: the whole pool.
  const auto prompt = testing::LcgPrompt(40, 1000);
  auto first =
      p->decode->Reserve(1, 40, 20, p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(first.ok());
  auto second =
      p->decode->Reserve(2, 5, 5, p->prefill->layout(), absl::ZeroDuration());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("KV cache full"));
  // The first request still completes correctly.
  ASSERT_TRUE(p->decode->Release(1));
  // Released blocks are quarantined before they can be reserved again.
  EXPECT_EQ(p->decode->Load().quarantined_blocks, 4);
  EXPECT_EQ(
      p->decode->Reserve(4, 5, 5, p->prefill->layout(), absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kResourceExhausted);
  absl::SleepFor(absl::Milliseconds(400));
  auto engine = model::Engine::Create(
      testing::LoadCpuModel(testing::SyntheticModelDir("tiny")), {});
  auto want = (*engine)->Generate(prompt, Greedy(20));
  auto got = RunOne(*p, 3, prompt, Greedy(20));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, want->tokens);
  EXPECT_EQ(p->decode->Load().free_blocks, 4);
}

TEST(DisaggregatedEnginesTest, AbandonedReservationExpires) {
  auto p = MakePair(64, 16);
  ASSERT_TRUE(
      p->decode
          ->Reserve(7, 10, 10, p->prefill->layout(), absl::Milliseconds(100))
          .ok());
  EXPECT_LT(p->decode->Load().free_blocks, 16);
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(p->decode->Load().free_blocks, 16);
  auto late =
      p->decode->StartDecode(7, testing::LcgPrompt(10, 1000), 1, Greedy(4));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DisaggregatedEnginesTest, RejectsBadRequestsWithClearErrors) {
  auto p = MakePair(64, 16);
  // A TTL past the cap (10 min) would pin blocks for as long as asked.
  const absl::Status weeks =
      p->decode->Reserve(1, 4, 4, p->prefill->layout(), absl::Hours(24 * 14))
          .status();
  EXPECT_EQ(weeks.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(weeks.message(), HasSubstr("--max-reservation-ttl-ms"));
  kv_transfer::KvLayout other = p->prefill->layout();
  other.block_size = 32;
  EXPECT_EQ(
      p->decode->Reserve(1, 4, 4, other, absl::ZeroDuration()).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      p->decode->Reserve(1, 0, 4, p->prefill->layout(), absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      p->decode
          ->Reserve(1, 4090, 100, p->prefill->layout(), absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  auto desc =
      p->decode->Reserve(1, 4, 4, p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(desc.ok());
  EXPECT_EQ(
      p->decode->Reserve(1, 4, 4, p->prefill->layout(), absl::ZeroDuration())
          .status()
          .code(),
      absl::StatusCode::kAlreadyExists);
  // Prefill side: out-of-vocabulary id, descriptor too small.
  EXPECT_EQ(p->prefill
                ->Submit(1, {1, 999999999}, Greedy(4), *desc,
                         absl::Now() + absl::Seconds(5))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->prefill
                ->Submit(1, testing::LcgPrompt(100, 1000), Greedy(4), *desc,
                         absl::Now() + absl::Seconds(5))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->decode->StartDecode(99, {1, 2}, 1, Greedy(4)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(p->decode->Release(1));
  EXPECT_FALSE(p->decode->Release(1));
}

// A prefill node runs the prompt while it asks the decode node where to
// write: a destination that comes after the compute still gets all of the
// KV (the output equals the single-process engine's), a bad one or none
// fails the request with why, and every block comes back.
TEST(DisaggregatedEnginesTest, DestinationMayComeAfterTheCompute) {
  auto p = MakePair(/*prefill_budget=*/48, /*decode_blocks=*/256);
  auto engine = model::Engine::Create(
      testing::LoadCpuModel(testing::SyntheticModelDir("tiny")), {});
  ASSERT_TRUE(engine.ok());
  const std::vector<int32_t> prompt = testing::LcgPrompt(100, 100000);
  auto want = (*engine)->Generate(prompt, Greedy(6));
  ASSERT_TRUE(want.ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);

  auto job = p->prefill->SubmitPending(1, prompt, Greedy(6), deadline);
  ASSERT_TRUE(job.ok()) << job.status();
  // Three chunks of 48 tokens compute; the job waits for its KV to land.
  EXPECT_FALSE((*job)->Wait(absl::Milliseconds(300)).has_value());
  auto desc = p->decode->Reserve(1, static_cast<int32_t>(prompt.size()), 6,
                                 p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(desc.ok()) << desc.status();
  p->prefill->SetDestination(**job, *desc);
  auto result = (*job)->Wait(absl::Seconds(10));
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status();
  auto stream =
      p->decode->StartDecode(1, prompt, (*result)->first_token, Greedy(6));
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::vector<int32_t> tokens = {(*result)->first_token};
  while (true) {
    auto u = (*stream)->Next(absl::Seconds(10));
    tokens.insert(tokens.end(), u.tokens.begin(), u.tokens.end());
    if (u.done) {
      ASSERT_TRUE(u.error.ok()) << u.error;
      break;
    }
  }
  EXPECT_EQ(tokens, want->tokens);

  // A descriptor too small for the prompt: INVALID_ARGUMENT.
  auto small =
      p->decode->Reserve(2, 4, 2, p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(small.ok());
  job = p->prefill->SubmitPending(2, prompt, Greedy(2), deadline);
  ASSERT_TRUE(job.ok());
  p->prefill->SetDestination(**job, *small);
  result = (*job)->Wait(absl::Seconds(10));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status().code(), absl::StatusCode::kInvalidArgument)
      << result->status();
  EXPECT_TRUE(p->decode->Release(2));

  // No descriptor (the decode node refused Describe): its error.
  job = p->prefill->SubmitPending(3, prompt, Greedy(2), deadline);
  ASSERT_TRUE(job.ok());
  p->prefill->SetDestination(
      **job, absl::NotFoundError("decode node d: Describe: no reservation"));
  result = (*job)->Wait(absl::Seconds(10));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(result->status().message(), HasSubstr("no reservation"));

  // The first answer stands: a cancelled request's error, then Describe's
  // late reply, moves no KV.
  auto late = p->decode->Reserve(4, static_cast<int32_t>(prompt.size()), 2,
                                 p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(late.ok());
  job = p->prefill->SubmitPending(4, prompt, Greedy(2), deadline);
  ASSERT_TRUE(job.ok());
  p->prefill->SetDestination(**job, absl::CancelledError("prefill cancelled"));
  p->prefill->SetDestination(**job, *late);
  result = (*job)->Wait(absl::Seconds(10));
  ASSERT_TRUE(result.has_value());
  // (The late descriptor would have let it complete OK.)
  EXPECT_EQ(result->status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(p->decode->Release(4));

  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (p->prefill->free_blocks() != p->prefill->total_blocks() &&
         absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(p->prefill->free_blocks(), p->prefill->total_blocks());
}

TEST(DisaggregatedEnginesTest, DroppedTransferFailsWithinTheTimeoutAndFrees) {
  auto p = MakePair(64, 16, 8, "drop:every=1");
  const absl::Time start = absl::Now();
  auto got = RunOne(*p, 5, testing::LcgPrompt(20, 1000), Greedy(4));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(got.status().message(), HasSubstr("KV transfer"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(p->prefill->free_blocks(), 128);
  absl::SleepFor(absl::Milliseconds(400));  // the quarantine
  EXPECT_EQ(p->decode->Load().free_blocks, 16);
}

// Layer-wise push with layer 1 of every chunk lost: the request fails with
// DEADLINE_EXCEEDED within the transfer timeout, the prefill node's blocks
// come back once the sender has given up on them, the decode node's after
// the release, and the next request is served.
TEST(DisaggregatedEnginesTest, DroppedLayerFailsCleanlyAndFreesBothSides) {
  auto p = MakePair(/*prefill_budget=*/16, 16, 8, "drop:every=2");
  const absl::Time start = absl::Now();
  auto got = RunOne(*p, 5, testing::LcgPrompt(40, 1000), Greedy(4));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded)
      << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("KV transfer"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(p->prefill->free_blocks(), 128);
  EXPECT_EQ(p->prefill->active_requests(), 0);
  absl::SleepFor(absl::Milliseconds(400));  // the quarantine
  EXPECT_EQ(p->decode->Load().free_blocks, 16);
}

TEST(DisaggregatedEnginesTest, CancelledStreamFreesBlocksAtTheNextStep) {
  auto p = MakePair(64, 64);
  const auto prompt = testing::LcgPrompt(20, 1000);
  auto desc = p->decode->Reserve(9, 20, 500, p->prefill->layout(),
                                 absl::ZeroDuration());
  ASSERT_TRUE(desc.ok());
  auto job = p->prefill->Submit(9, prompt, Greedy(500), *desc,
                                absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(job.ok());
  auto first = (*job)->Wait(absl::Seconds(10));
  ASSERT_TRUE(first.has_value() && first->ok());
  auto stream =
      p->decode->StartDecode(9, prompt, (*first)->first_token, Greedy(500));
  ASSERT_TRUE(stream.ok());
  (*stream)->Next(absl::Seconds(5));
  (*stream)->Cancel();
  decode_node::DecodeStream::Update u;
  for (int i = 0; i < 1000 && !u.done; ++i)
    u = (*stream)->Next(absl::Seconds(1));
  ASSERT_TRUE(u.done);
  EXPECT_EQ(u.error.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(p->decode->Load().free_blocks, 64);
}

TEST(DisaggregatedEnginesTest, LongAndShortPromptsShareTheTokenBudget) {
  // A 300-token prompt (5 passes of 64) submitted before a 5-token prompt:
  // the short one waits its turn in the shared budget but is never starved,
  // and the long one is not delayed behind later arrivals.
  auto p = MakePair(/*prefill_budget=*/64, 128);
  auto d1 =
      p->decode->Reserve(1, 300, 4, p->prefill->layout(), absl::ZeroDuration());
  auto d2 =
      p->decode->Reserve(2, 5, 4, p->prefill->layout(), absl::ZeroDuration());
  ASSERT_TRUE(d1.ok() && d2.ok());
  auto long_job =
      p->prefill->Submit(1, testing::LcgPrompt(300, 1000), Greedy(4), *d1,
                         absl::Now() + absl::Seconds(30));
  auto short_job = p->prefill->Submit(2, testing::LcgPrompt(5, 1000), Greedy(4),
                                      *d2, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(long_job.ok() && short_job.ok());
  auto a = (*long_job)->Wait(absl::Seconds(30));
  auto b = (*short_job)->Wait(absl::Seconds(30));
  ASSERT_TRUE(a.has_value() && a->ok() && b.has_value() && b->ok());
  p->decode->Release(1);
  p->decode->Release(2);
  EXPECT_EQ(p->prefill->queued_tokens(), 0);
}

// A decode pool too small for the concurrent requests' growth: the most
// recently admitted ones are preempted, recomputed on the decode node, and
// every stream still equals the single-process engine token for token.
TEST(DisaggregatedEnginesTest, PreemptionByRecomputeKeepsOutputsIdentical) {
  constexpr int kN = 4;
  constexpr int32_t kPrompt = 20, kGen = 40;
  // Each reservation takes 2 + 1 blocks (12 in all); growing every request
  // to 59 tokens would need 16.
  auto p = MakePair(/*prefill_budget=*/64, /*decode_blocks=*/12, kN);
  auto engine = model::Engine::Create(
      testing::LoadCpuModel(testing::SyntheticModelDir("tiny")), {});
  ASSERT_TRUE(engine.ok());
  std::vector<std::vector<int32_t>> prompts, want;
  std::vector<std::shared_ptr<decode_node::DecodeStream>> streams;
  std::vector<kv_transfer::KvDescriptor> descs;
  for (int i = 0; i < kN; ++i) {
    prompts.push_back(testing::LcgPrompt(kPrompt + i, 100000 + i));
    auto r = (*engine)->Generate(prompts[i], Greedy(kGen));
    ASSERT_TRUE(r.ok());
    want.push_back(r->tokens);
    auto d = p->decode->Reserve(i + 1, kPrompt + i, kGen, p->prefill->layout(),
                                absl::ZeroDuration());
    ASSERT_TRUE(d.ok()) << d.status();
    descs.push_back(*d);
  }
  EXPECT_EQ(p->decode->Load().free_blocks, 0);
  std::vector<int32_t> firsts;
  for (int i = 0; i < kN; ++i) {
    auto job = p->prefill->Submit(i + 1, prompts[i], Greedy(kGen), descs[i],
                                  absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(job.ok());
    auto r = (*job)->Wait(absl::Seconds(30));
    ASSERT_TRUE(r.has_value() && r->ok());
    firsts.push_back((*r)->first_token);
  }
  for (int i = 0; i < kN; ++i) {
    auto s = p->decode->StartDecode(i + 1, prompts[i], firsts[i], Greedy(kGen));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (int i = 0; i < kN; ++i) {
    std::vector<int32_t> got = {firsts[i]};  // the stream starts at token 2
    decode_node::DecodeStream::Update u;
    for (int k = 0; k < 1000 && !u.done; ++k) {
      u = streams[i]->Next(absl::Seconds(5));
      got.insert(got.end(), u.tokens.begin(), u.tokens.end());
    }
    ASSERT_TRUE(u.done && u.error.ok()) << u.error;
    EXPECT_EQ(got, want[i]) << "request " << i;
  }
  EXPECT_GT(p->decode->Load().preemptions, 0);
  EXPECT_EQ(p->decode->Load().free_blocks, 12);
}

}  // namespace
}  // namespace duet
