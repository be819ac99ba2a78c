// The cluster on the GPU (issue 14's GPU check): router + prefill + decode
// on one GPU, both nodes on the CUDA backend with the same checkpoint
// (scripts/gpu_cluster_test.sh writes a qwen3-4b-shape one and sets
// DUET_GPU_CLUSTER_MODEL). Skipped without a GPU or without that variable.
//
// - each prompt sent alone equals the single-process engine on the CUDA
//   backend (what duet-run --backend cuda runs) token for token;
// - concurrent requests each equal their alone output, or first diverge
//   where the alone run's top two logits are within kTieTolerance (batch
//   shape changes bf16 rounding; the counts are printed);
// - a decode pool small enough to force preemption: the same check;
// - no block leaks after the runs and after 32 cancelled requests.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#include "model/engine.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"

namespace duet::testing {
namespace {

// Logit gap under which two tokens count as tied: a few bf16 ulps at the
// logit magnitudes of these checkpoints (|logit| < 16, ulp 0.0625).
constexpr double kTieTolerance = 0.25;

struct Outcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
};

Outcome Generate(v1::Duet::Stub& stub, const std::vector<int32_t>& prompt,
                 int32_t max_tokens, int cancel_after = 0) {
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(300)));
  Outcome out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (!msg.has_chunk()) continue;
    out.tokens.insert(out.tokens.end(), msg.chunk().token_ids().begin(),
                      msg.chunk().token_ids().end());
    if (cancel_after > 0 &&
        static_cast<int>(out.tokens.size()) >= cancel_after) {
      ctx.TryCancel();
    }
  }
  out.status = reader->Finish();
  return out;
}

// Sends every prompt at once; outcomes in prompt order.
std::vector<Outcome> GenerateAll(
    v1::Duet::Stub& stub, const std::vector<std::vector<int32_t>>& prompts,
    int32_t max_tokens) {
  std::vector<Outcome> got(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back(
        [&, i] { got[i] = Generate(stub, prompts[i], max_tokens); });
  }
  for (auto& t : threads) t.join();
  return got;
}

class Reference {
 public:
  explicit Reference(const std::string& dir) {
    auto backend = kernels::MakeCudaBackend(0);
    EXPECT_TRUE(backend.ok()) << backend.status();
    auto model = model::Transformer::Load(dir, std::move(*backend));
    EXPECT_TRUE(model.ok()) << model.status();
    model::EngineOptions o;
    o.num_blocks = 1024;  // 16k tokens
    auto engine = model::Engine::Create(std::move(*model), o);
    EXPECT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    auto cache = engine_->model().AllocateKvCache(16, 1024);
    EXPECT_TRUE(cache.ok());
    cache_ = std::move(*cache);
  }

  std::vector<int32_t> Alone(const std::vector<int32_t>& prompt, int32_t n) {
    model::SamplingParams p;
    p.max_tokens = n;
    p.ignore_eos = true;
    auto r = engine_->Generate(prompt, p);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->tokens : std::vector<int32_t>{};
  }

  // Logits after `tokens` (teacher-forced, chunked prefill).
  std::vector<float> LastLogits(const std::vector<int32_t>& tokens) {
    std::vector<BlockId> blocks;
    for (int32_t b = 0; b < model::BlocksForTokens(tokens.size(), 16); ++b) {
      blocks.emplace_back(b);
    }
    std::vector<float> logits;
    for (size_t start = 0; start < tokens.size(); start += 2048) {
      const size_t len = std::min<size_t>(2048, tokens.size() - start);
      const model::SeqChunk chunk{
          std::span<const int32_t>(tokens).subspan(start, len),
          static_cast<int32_t>(start), blocks};
      auto step =
          model::BuildStep(kernels::AttentionMode::kPrefill, {&chunk, 1}, 16);
      EXPECT_TRUE(step.ok());
      auto l = engine_->model().Forward(*step, cache_, 16);
      EXPECT_TRUE(l.ok()) << l.status();
      logits = std::move(*l);
    }
    return logits;
  }

 private:
  std::unique_ptr<model::Engine> engine_;
  model::KvCacheStorage cache_;
};

struct Tally {
  int identical = 0;
  int tie = 0;
  int bad = 0;
  double max_tie_gap = 0;
  std::string report;
};

// `got` vs `want` for `prompt`: identical, or the first difference is a tie
// in the reference's logits.
void Judge(Reference& ref, const std::vector<int32_t>& prompt,
           const std::vector<int32_t>& want, const std::vector<int32_t>& got,
           Tally& t, const std::string& name) {
  if (got == want) {
    ++t.identical;
    return;
  }
  size_t k = 0;
  while (k < got.size() && k < want.size() && got[k] == want[k]) ++k;
  if (k >= got.size() || k >= want.size()) {
    ++t.bad;
    absl::StrAppend(&t.report, name, ": length ", got.size(), " vs ",
                    want.size(), "\n");
    return;
  }
  std::vector<int32_t> prefix = prompt;
  prefix.insert(prefix.end(), want.begin(), want.begin() + k);
  const std::vector<float> logits = ref.LastLogits(prefix);
  const double gap = static_cast<double>(logits[want[k]]) - logits[got[k]];
  if (gap <= kTieTolerance) {
    ++t.tie;
    t.max_tie_gap = std::max(t.max_tie_gap, gap);
  } else {
    ++t.bad;
  }
  absl::StrAppend(&t.report, name, ": diverges at token ", k, " (", want[k],
                  " alone, ", got[k], " here), logit gap ", gap, "\n");
}

// Sends every prompt at once and judges each stream against the prompt's
// alone output from `ref` (`max_tokens` each); names in the report are
// "<what> <index>".
void RunAndJudge(Reference& ref, LocalCluster& cluster,
                 const std::vector<std::vector<int32_t>>& prompts,
                 int32_t max_tokens, const std::string& what, Tally* tally) {
  std::vector<std::vector<int32_t>> want;
  for (const std::vector<int32_t>& p : prompts) {
    want.push_back(ref.Alone(p, max_tokens));
  }
  const std::vector<Outcome> got =
      GenerateAll(cluster.client(), prompts, max_tokens);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    Judge(ref, prompts[i], want[i], got[i].tokens, *tally,
          absl::StrCat(what, " ", i));
  }
}

bool HaveGpu() {
  auto d = kernels::cuda::ListDevices();
  return d.ok() && !d->empty();
}

TEST(GpuClusterTest, ServesOnTheCudaBackendLikeTheSingleProcessEngine) {
  const char* dir = std::getenv("DUET_GPU_CLUSTER_MODEL");
  if (dir == nullptr || !HaveGpu()) {
    GTEST_SKIP() << "needs a GPU and DUET_GPU_CLUSTER_MODEL "
                    "(scripts/gpu_cluster_test.sh)";
  }
  Reference ref(dir);
  const int32_t vocab = 151936;
  ClusterOptions o;
  o.model_dir = dir;
  for (const std::string transport : {"ucx", "cuda-ipc"}) {
    std::printf("== KV over %s\n", transport.c_str());
    o.prefill_args = {
        "--backend", "cuda",           "--kv-cache-memory-fraction",
        "0.3",       "--kv-transport", transport};
    o.decode_args = {
        "--backend", "cuda",           "--kv-cache-memory-fraction",
        "0.35",      "--kv-transport", transport};
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    std::printf("prefill: %s\ndecode: %s\n",
                (*cluster)->prefill(0).ready_line().c_str(),
                (*cluster)->decode(0).ready_line().c_str());

    // Alone: token for token.
    const int lengths[] = {1, 7, 100, 511, 1000, 2047, 4000, 6000};
    int alone_equal = 0;
    for (int i = 0; i < 8; ++i) {
      std::vector<int32_t> prompt = LcgPrompt(lengths[i], vocab);
      const std::vector<int32_t> want = ref.Alone(prompt, 32);
      const Outcome got = Generate((*cluster)->client(), prompt, 32);
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      EXPECT_EQ(got.tokens, want) << "prompt of " << lengths[i] << " tokens";
      alone_equal += got.tokens == want;
    }
    std::printf("alone: %d/8 prompts of 1..6000 tokens equal duet-run\n",
                alone_equal);

    // 64 concurrent, mixed lengths: tie-aware.
    const int mixed[] = {5, 60, 300, 1000, 2500, 17, 129, 700};
    constexpr int kN = 64;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < kN; ++i) {
      prompts.push_back(LcgPrompt(mixed[i % 8], vocab));
      prompts.back()[0] = 1000 + i;
    }
    Tally tally;
    RunAndJudge(ref, **cluster, prompts, 24, "concurrent", &tally);
    std::printf(
        "concurrent 64: %d identical, %d diverge at a tie (max gap "
        "%.4f, tolerance %.2f), %d wrong\n%s",
        tally.identical, tally.tie, tally.max_tie_gap, kTieTolerance, tally.bad,
        tally.report.c_str());
    EXPECT_EQ(tally.bad, 0) << tally.report;
    absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
    EXPECT_TRUE(freed.ok()) << freed;
    std::printf("blocks after the runs: %s\n",
                freed.ok() ? "all free" : "LEAK");

    // 32 cancelled.
    std::vector<std::thread> threads;
    std::atomic<int> cancelled{0};
    for (int i = 0; i < 32; ++i) {
      threads.emplace_back([&, i] {
        const Outcome c = Generate((*cluster)->client(),
                                   LcgPrompt(50 + 40 * i, vocab), 2000, 2);
        if (c.status.error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(cancelled.load(), 32);
    freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
    EXPECT_TRUE(freed.ok()) << freed;
    std::printf("32 cancelled: %d CANCELLED, blocks %s\n", cancelled.load(),
                freed.ok() ? "all free" : "LEAK");
  }

  // Forced preemption: 8 requests of ~300 tokens growing by 160 on a pool
  // of 96 blocks (1536 tokens; they need up to 8 x 29 = 232), KV over
  // CUDA IPC (the staged UCX path was checked with preemption before).
  o.prefill_args = {"--backend", "cuda",           "--kv-cache-memory-fraction",
                    "0.3",       "--kv-transport", "cuda-ipc"};
  o.decode_args = {"--backend", "cuda",           "--num-kv-blocks",
                   "96",        "--kv-transport", "cuda-ipc"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  constexpr int kP = 8;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kP; ++i) {
    prompts.push_back(LcgPrompt(280 + 10 * i, vocab));
    prompts.back()[0] = 5000 + i;
  }
  Tally tally;
  RunAndJudge(ref, **cluster, prompts, 160, "preempted", &tally);
  std::ifstream log((*cluster)->log_dir() + "/decode0.log");
  std::string line;
  int preemptions = 0;
  while (std::getline(log, line)) {
    preemptions += line.find("preempted") != std::string::npos;
  }
  std::printf(
      "preemption run: %d preemptions; %d identical, %d diverge at a "
      "tie (max gap %.4f), %d wrong\n%s",
      preemptions, tally.identical, tally.tie, tally.max_tie_gap, tally.bad,
      tally.report.c_str());
  EXPECT_GT(preemptions, 0);
  EXPECT_EQ(tally.bad, 0) << tally.report;
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
  EXPECT_TRUE(freed.ok()) << freed;
}

// --kv-transport nccl between two processes on one GPU. NCCL refuses two
// ranks of one communicator on the same GPU of the same host; giving each
// node its own NCCL_HOSTID makes them "different hosts", so NCCL connects
// them over its socket transport on loopback: the protocol, the packing and
// the scatter run for real, at loopback speed rather than NVLink's (the
// multi-GPU issue measures that). Needs libnccl.so.2 on LD_LIBRARY_PATH
// and DUET_GPU_NCCL=1.
TEST(GpuClusterTest, NcclTransportBetweenTwoProcessesOnOneGpu) {
  const char* dir = std::getenv("DUET_GPU_CLUSTER_MODEL");
  const char* nccl = std::getenv("DUET_GPU_NCCL");
  if (dir == nullptr || nccl == nullptr || !HaveGpu()) {
    GTEST_SKIP() << "needs a GPU, DUET_GPU_CLUSTER_MODEL and DUET_GPU_NCCL=1 "
                    "with libnccl.so.2 on LD_LIBRARY_PATH "
                    "(scripts/gpu_cluster_test.sh)";
  }
  Reference ref(dir);
  const int32_t vocab = 151936;
  ClusterOptions o;
  o.model_dir = dir;
  // DUET_NCCL_DECODE_DEVICE=N (a host with several GPUs): the decode node
  // on GPU N, NCCL's own transports between the GPUs (NVLink, P2P).
  const char* decode_device = std::getenv("DUET_NCCL_DECODE_DEVICE");
  if (decode_device == nullptr) {
    const std::vector<std::string> net = {"NCCL_SOCKET_IFNAME=lo",
                                          "NCCL_IB_DISABLE=1"};
    o.prefill_env = net;
    o.prefill_env.push_back("NCCL_HOSTID=duet-prefill");
    o.decode_env = net;
    o.decode_env.push_back("NCCL_HOSTID=duet-decode");
  }
  for (const std::string push : {"request", "layer"}) {
    std::printf("== KV over NCCL, pushed per %s\n", push.c_str());
    o.prefill_args = {"--backend",
                      "cuda",
                      "--kv-cache-memory-fraction",
                      "0.3",
                      "--kv-transport",
                      "nccl",
                      "--kv-push",
                      push};
    o.decode_args = {"--backend", "cuda", "--kv-cache-memory-fraction",
                     "0.35", "--kv-transport", "nccl"};
    if (decode_device != nullptr) {
      o.decode_args.insert(o.decode_args.end(), {"--device", decode_device});
    }
    auto cluster = LocalCluster::Start(o);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    std::printf("prefill: %s\ndecode: %s\n",
                (*cluster)->prefill(0).ready_line().c_str(),
                (*cluster)->decode(0).ready_line().c_str());
    EXPECT_NE((*cluster)->decode(0).ready_line().find("NCCL"),
              std::string::npos);
    const int lengths[] = {1, 100, 1000, 4000};
    int alone_equal = 0;
    for (int len : lengths) {
      const std::vector<int32_t> prompt = LcgPrompt(len, vocab);
      const absl::Time start = absl::Now();
      const Outcome got = Generate((*cluster)->client(), prompt, 16);
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      std::printf("  %d tokens: %.1f ms end to end\n", len,
                  absl::ToDoubleMilliseconds(absl::Now() - start));
      const std::vector<int32_t> want = ref.Alone(prompt, 16);
      EXPECT_EQ(got.tokens, want) << "prompt of " << len << " tokens";
      alone_equal += got.tokens == want;
    }
    std::printf("alone: %d/4 equal duet-run\n", alone_equal);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 16; ++i) {
      prompts.push_back(LcgPrompt(40 + 150 * i, vocab));
      prompts.back()[0] = 2000 + i;
    }
    Tally tally;
    RunAndJudge(ref, **cluster, prompts, 16, "concurrent", &tally);
    std::printf(
        "concurrent 16: %d identical, %d diverge at a tie, %d wrong\n%s",
        tally.identical, tally.tie, tally.bad, tally.report.c_str());
    EXPECT_EQ(tally.bad, 0) << tally.report;
    const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(10));
    EXPECT_TRUE(freed.ok()) << freed;
    std::printf("blocks after the runs: %s\n",
                freed.ok() ? "all free" : "LEAK");
  }
}

}  // namespace
}  // namespace duet::testing

namespace duet::testing {
namespace {

// Issue 15's failure check: a decode node killed while the prefill node
// writes a long prompt's KV into its pool through CUDA IPC (chosen by
// --kv-transport auto; layer-wise push): the request ends with a clear error
// (or completed just before the kill), never hangs; the prefill node keeps
// serving, gives back every block, and the next requests complete on the other
// decode node.
TEST(GpuClusterTest, KilledDecodeNodeMidTransferFailsCleanlyAndPrefillServes) {
  const char* dir = std::getenv("DUET_GPU_CLUSTER_MODEL");
  if (dir == nullptr || !HaveGpu()) {
    GTEST_SKIP() << "needs a GPU and DUET_GPU_CLUSTER_MODEL "
                    "(scripts/gpu_cluster_test.sh)";
  }
  ClusterOptions o;
  o.model_dir = dir;
  o.num_decode = 2;
  // --kv-transport auto (the default): nodes on one host pair over CUDA IPC.
  o.prefill_args = {"--backend", "cuda", "--kv-cache-memory-fraction", "0.25"};
  o.decode_args = {"--backend", "cuda", "--num-kv-blocks", "1500"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const int32_t vocab = 151936;
  Outcome first;
  std::thread t([&] {
    first = Generate((*cluster)->client(), LcgPrompt(8000, vocab), 8);
  });
  // Find the decode node that reserved the request's blocks, let the
  // prefill run into its transfer, and kill that node.
  int victim = -1;
  const absl::Time until = absl::Now() + absl::Seconds(30);
  while (victim < 0 && absl::Now() < until) {
    for (int i = 0; i < 2; ++i) {
      auto s = (*cluster)->Stats((*cluster)->decode(i));
      if (s.ok() && s->load().free_kv_blocks() < s->load().total_kv_blocks()) {
        victim = i;
      }
    }
  }
  ASSERT_GE(victim, 0) << "no decode node reserved the request";
  absl::SleepFor(absl::Milliseconds(80));
  const absl::Time killed = absl::Now();
  (*cluster)->decode(victim).Kill(SIGKILL);
  t.join();
  std::printf("decode %d killed; the request ended %.0f ms later: %d %s\n",
              victim, absl::ToDoubleMilliseconds(absl::Now() - killed),
              static_cast<int>(first.status.error_code()),
              first.status.error_message().c_str());
  EXPECT_TRUE(first.status.ok() ||
              first.status.error_code() == grpc::StatusCode::UNAVAILABLE)
      << first.status.error_message();
  EXPECT_EQ((*cluster)->prefill(0).Wait(absl::ZeroDuration()), -1)
      << "the prefill node exited";
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(LcgPrompt(1000 + i, vocab));
  const std::vector<Outcome> next =
      GenerateAll((*cluster)->client(), prompts, 16);
  for (const Outcome& n : next) {
    EXPECT_TRUE(n.status.ok()) << n.status.error_message();
    EXPECT_EQ(n.tokens.size(), 16u);
  }
  absl::Status freed = absl::UnknownError("not checked");
  for (int i = 0; i < 100; ++i) {
    auto s = (*cluster)->Stats((*cluster)->prefill(0));
    if (s.ok() && s->load().free_kv_blocks() == s->load().total_kv_blocks()) {
      freed = absl::OkStatus();
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(freed.ok()) << "prefill node kept blocks";
}

}  // namespace
}  // namespace duet::testing
