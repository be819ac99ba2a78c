// The engine loop: the one loop every role runs (schedule, run, sample,
// emit) on its own thread, over one Scheduler and one ModelRunner. What a
// role does differently is a RolePolicy: the prefill role pushes each
// chunk's KV to the decode node and ends a request at its first token; the
// decode role lands a request's received KV before admitting it and keeps
// reservations; a colocated policy (both phases in one loop) plugs in at the
// same place.
//
// Requests leave only between steps, on the loop thread (cancellation,
// deadline, stop token, max_tokens, failure), so a forward pass never runs
// on blocks that were freed under it.
#ifndef DUET_RUNTIME_ENGINE_LOOP_H_
#define DUET_RUNTIME_ENGINE_LOOP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/strong_id.h"
#include "model/sampler.h"
#include "runtime/model_runner.h"
#include "runtime/scheduler.h"

namespace duet::runtime {

enum class FinishReason { kStopToken, kMaxTokens, kCancelled };

// Where one request's output goes. The loop calls OnScheduled, OnToken and
// OnFinish on its thread (OnFinish exactly once, last); Cancel may come from
// any thread.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // The first time a chunk of the request is planned, with the prompt
  // tokens whose KV the prefix cache supplied at its admission.
  virtual void OnScheduled(int32_t cached_prompt_tokens) {
    (void)cached_prompt_tokens;
  }
  virtual void OnToken(int32_t token) = 0;
  // Instead of OnToken for requests that ask for logprobs
  // (params.logprobs): the token's logprob and top logprobs
  // (kernels/sampling.h step 5). Sinks that carry logprobs override it.
  virtual void OnTokenWithLogprobs(int32_t token,
                                   const kernels::TokenLogprobs& logprobs) {
    (void)logprobs;
    OnToken(token);
  }
  // `status` is OK for kStopToken / kMaxTokens.
  virtual void OnFinish(FinishReason reason, absl::Status status) = 0;

  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct NewRequest {
  RequestId id;
  // Known tokens: the prompt, then any generated ones.
  std::vector<int32_t> tokens;
  int32_t num_prompt_tokens = 0;
  // Tokens whose KV is already in `blocks` (taken with ReserveBlocks).
  int32_t num_computed = 0;
  std::vector<BlockId> blocks;
  // Uids of the leading prefix-cache blocks among `blocks` (from
  // Scheduler::ReservePrompt).
  std::vector<uint64_t> cached_uids;
  model::SamplingParams params;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<RequestSink> sink;
};

// A request as the policy sees it after a step.
struct RequestView {
  const Sequence& seq;
  const NewRequest& request;  // tokens/blocks fields are stale: use seq
};

class RolePolicy {
 public:
  virtual ~RolePolicy() = default;
  // On the loop thread before the request joins the scheduler (the decode
  // role lands the request's KV here). An error ends the request with it.
  virtual absl::Status OnAdmit(const NewRequest& request) {
    return absl::OkStatus();
  }
  // On the loop thread before each step's forward pass (no lock held): the
  // planned chunks and their requests, in plan order (valid until the step
  // ends).
  virtual void BeforeStep(std::span<const RequestView> requests,
                          std::span<const ScheduledChunk> chunks) {}
  // Whether OnLayerQueued should be called during forward passes.
  virtual bool WantsLayerHook() const { return false; }
  // During the forward pass, as the KV writes of layer `layer` of every
  // planned chunk are queued on the backend (model::Transformer::LayerHook;
  // take a Backend::Mark to know when they are done). An error fails the
  // step.
  virtual absl::Status OnLayerQueued(int32_t layer) { return absl::OkStatus(); }
  // On the loop thread after each step, for each chunk that ran, before its
  // token is emitted: the chunk's KV is in the cache. An error ends the
  // request with it.
  virtual absl::Status OnChunkDone(const RequestView& request,
                                   const ScheduledChunk& chunk) {
    return absl::OkStatus();
  }
  // Generated tokens after which a request ends whatever else holds (the
  // prefill role: 1).
  virtual int32_t MaxGenerated(const NewRequest& request) const {
    return request.params.max_tokens;
  }
  // On the loop thread with the loop's lock held, before each plan and at
  // least every EngineLoopOptions::idle_wake (reservation expiry).
  virtual void Housekeeping(Scheduler& scheduler) {}
  // On the loop thread with the loop's lock held, when a request that ran
  // in the scheduler leaves it (after its sink's OnFinish, before
  // OnRemoved): the policy may keep some of its blocks (a KV transfer still
  // reads them) and give them back later with EngineLoop::ReleaseBlocks;
  // the blocks it returns are freed now.
  virtual std::vector<BlockId> TakeBlocks(RequestId id,
                                          std::vector<BlockId> blocks) {
    return blocks;
  }
  // On the loop thread when a request has left the scheduler.
  virtual void OnRemoved(RequestId id) {}
};

struct EngineLoopOptions {
  SchedulerOptions scheduler;
  // Stop tokens of every request that does not set ignore_eos.
  std::vector<int32_t> eos_token_ids;
  absl::Duration idle_wake = absl::Milliseconds(100);
};

struct LoopLoad {
  int32_t free_blocks = 0;
  int32_t total_blocks = 0;
  int32_t running = 0;
  int32_t waiting = 0;  // in the scheduler or submitted, not yet running
  int64_t uncomputed_tokens = 0;
  int64_t preemptions = 0;
  // Since start (metrics): prompt tokens of requests whose prefill ran
  // here, counted once when it ended (a cached prefix included, KV that
  // arrived from a prefill node not); tokens sampled here.
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  // Prefix caching (Scheduler): prompt tokens looked up and found at
  // admission, blocks cached now (held or idle), blocks evicted.
  int64_t prefix_cache_queries = 0;
  int64_t prefix_cache_hits = 0;
  int32_t cached_blocks = 0;
  int64_t cache_evictions = 0;
};

class EngineLoop {
 public:
  // Starts the loop thread. `runner` and `policy` must outlive the loop.
  static absl::StatusOr<std::unique_ptr<EngineLoop>> Create(
      ModelRunner* runner, RolePolicy* policy,
      const EngineLoopOptions& options);
  // Stop().
  ~EngineLoop();
  // Stops the thread; requests still inside end CANCELLED. The loop object
  // stays usable for ReleaseBlocks and Load. Idempotent.
  void Stop();

  // Frees blocks a policy kept with TakeBlocks. Any thread, but never from
  // inside a policy hook (the loop's lock may be held there).
  void ReleaseBlocks(std::span<const BlockId> blocks);

  // Queues a request for the loop to admit. UNAVAILABLE once stopping
  // (then the request's blocks are the caller's to return).
  absl::Status Submit(NewRequest request);

  // Runs `fn` on the scheduler under the loop's lock, from any thread: for
  // blocks held outside sequences (reservations). `fn` must not Add or
  // Remove sequences.
  template <typename Fn>
  auto WithScheduler(Fn&& fn) {
    absl::MutexLock lock(&mu_);
    return fn(*scheduler_);
  }

  LoopLoad Load();
  int64_t num_steps() const { return steps_.load(); }

 private:
  struct Active {
    NewRequest request;
    std::vector<int32_t> stops;
    bool scheduled = false;
    bool prompt_counted = false;  // in prompt_tokens_
    // The request's tokens as its penalties see them (empty without
    // penalties), updated as each token is emitted.
    model::SeenTokens seen;
  };

  EngineLoop(ModelRunner* runner, RolePolicy* policy,
             const EngineLoopOptions& options,
             std::unique_ptr<Scheduler> scheduler);
  void Loop();
  // Removes `id` from the scheduler and ends it.
  void Finish(RequestId id, FinishReason reason, absl::Status status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Step(std::vector<NewRequest> incoming);

  ModelRunner* const runner_;
  RolePolicy* const policy_;
  const EngineLoopOptions options_;

  absl::Mutex mu_;
  std::unique_ptr<Scheduler> scheduler_ ABSL_GUARDED_BY(mu_);
  std::vector<NewRequest> incoming_ ABSL_GUARDED_BY(mu_);
  // Requests in the scheduler. Only the loop thread inserts or erases;
  // node-based so pointers held across a step stay valid.
  absl::node_hash_map<RequestId, Active> active_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> prompt_tokens_{0};
  std::atomic<int64_t> generation_tokens_{0};
  std::thread thread_;
};

}  // namespace duet::runtime

#endif  // DUET_RUNTIME_ENGINE_LOOP_H_
