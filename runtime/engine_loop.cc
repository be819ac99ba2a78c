#include "runtime/engine_loop.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace duet::runtime {

EngineLoop::EngineLoop(ModelRunner* runner, RolePolicy* policy,
                       const EngineLoopOptions& options,
                       std::unique_ptr<Scheduler> scheduler)
    : runner_(runner),
      policy_(policy),
      options_(options),
      scheduler_(std::move(scheduler)) {}

absl::StatusOr<std::unique_ptr<EngineLoop>> EngineLoop::Create(
    ModelRunner* runner, RolePolicy* policy, const EngineLoopOptions& options) {
  if (runner == nullptr || policy == nullptr) {
    return absl::InvalidArgumentError(
        "engine loop needs a runner and a policy");
  }
  SchedulerOptions so = options.scheduler;
  so.block_size = runner->block_size();
  so.num_blocks = runner->num_blocks();
  DUET_ASSIGN_OR_RETURN(std::unique_ptr<Scheduler> scheduler,
                        Scheduler::Create(so));
  EngineLoopOptions o = options;
  o.scheduler = so;
  std::unique_ptr<EngineLoop> loop(
      new EngineLoop(runner, policy, o, std::move(scheduler)));
  loop->thread_ = std::thread([l = loop.get()] { l->Loop(); });
  return loop;
}

EngineLoop::~EngineLoop() { Stop(); }

void EngineLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void EngineLoop::ReleaseBlocks(std::span<const BlockId> blocks) {
  absl::MutexLock lock(&mu_);
  const absl::Status s = scheduler_->Unreserve(blocks);
  // Only blocks a policy kept come here, each once.
  if (!s.ok()) DUET_LOG(ERROR) << "ReleaseBlocks: " << s;
}

absl::Status EngineLoop::Submit(NewRequest request) {
  if (request.sink == nullptr) {
    return absl::InvalidArgumentError("Submit: request without a sink");
  }
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("node is shutting down");
  incoming_.push_back(std::move(request));
  return absl::OkStatus();
}

LoopLoad EngineLoop::Load() {
  absl::MutexLock lock(&mu_);
  LoopLoad l;
  l.free_blocks = scheduler_->num_free_blocks();
  l.total_blocks = scheduler_->num_total_blocks();
  l.running = scheduler_->num_running();
  l.waiting =
      scheduler_->num_waiting() + static_cast<int32_t>(incoming_.size());
  l.uncomputed_tokens = scheduler_->num_uncomputed_tokens();
  for (const NewRequest& r : incoming_) {
    l.uncomputed_tokens +=
        static_cast<int64_t>(r.tokens.size()) - r.num_computed;
  }
  l.preemptions = scheduler_->num_preemptions();
  l.prompt_tokens = prompt_tokens_.load(std::memory_order_relaxed);
  l.generation_tokens = generation_tokens_.load(std::memory_order_relaxed);
  l.prefix_cache_queries = scheduler_->prefix_cache_queries();
  l.prefix_cache_hits = scheduler_->prefix_cache_hits();
  l.cached_blocks = scheduler_->num_cached_blocks();
  l.cache_evictions = scheduler_->num_cache_evictions();
  return l;
}

void EngineLoop::Finish(RequestId id, FinishReason reason,
                        absl::Status status) {
  std::vector<BlockId> blocks = scheduler_->Detach(id);
  auto it = active_.find(id);
  if (it == active_.end()) {
    (void)scheduler_->Unreserve(blocks);
    return;
  }
  std::shared_ptr<RequestSink> sink = std::move(it->second.request.sink);
  active_.erase(it);
  sink->OnFinish(reason, std::move(status));
  const std::vector<BlockId> freed = policy_->TakeBlocks(id, std::move(blocks));
  if (absl::Status s = scheduler_->Unreserve(freed); !s.ok()) {
    DUET_LOG(ERROR) << "freeing the blocks of request " << id.value() << ": "
                    << s;
  }
  policy_->OnRemoved(id);
}

void EngineLoop::Loop() {
  while (true) {
    std::vector<NewRequest> incoming;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !incoming_.empty() || !active_.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&has_work), options_.idle_wake);
      policy_->Housekeeping(*scheduler_);
      if (stop_) {
        for (NewRequest& r : incoming_) {
          (void)scheduler_->Unreserve(r.blocks);
          r.sink->OnFinish(FinishReason::kCancelled,
                           absl::CancelledError("node shutting down"));
          policy_->OnRemoved(r.id);
        }
        incoming_.clear();
        std::vector<RequestId> ids;
        for (const auto& [id, a] : active_) ids.push_back(id);
        for (RequestId id : ids) {
          Finish(id, FinishReason::kCancelled,
                 absl::CancelledError("node shutting down"));
        }
        return;
      }
      incoming.swap(incoming_);
    }
    Step(std::move(incoming));
  }
}

void EngineLoop::Step(std::vector<NewRequest> incoming) {
  // Admission hooks may touch the device (landing KV): outside the lock.
  std::vector<absl::Status> admit(incoming.size());
  for (size_t i = 0; i < incoming.size(); ++i) {
    admit[i] = incoming[i].sink->cancelled()
                   ? absl::CancelledError("request cancelled")
                   : policy_->OnAdmit(incoming[i]);
  }

  struct Planned {
    const Sequence* seq;
    Active* active;
  };
  StepPlan plan;
  std::vector<Planned> planned;
  std::vector<RunChunk> chunks;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < incoming.size(); ++i) {
      NewRequest& r = incoming[i];
      absl::Status s = admit[i];
      if (s.ok()) {
        // The last token drawn is never fed back.
        const int64_t max_total =
            int64_t{r.num_prompt_tokens} + policy_->MaxGenerated(r) - 1;
        s = scheduler_->Add(r.id, r.tokens, r.num_prompt_tokens, r.num_computed,
                            r.blocks, max_total, r.cached_uids);
      }
      if (!s.ok()) {
        (void)scheduler_->Unreserve(r.blocks);
        r.sink->OnFinish(FinishReason::kCancelled, s);
        policy_->OnRemoved(r.id);
        continue;
      }
      Active a;
      a.stops = r.params.stop_token_ids;
      if (!r.params.ignore_eos) {
        a.stops.insert(a.stops.end(), options_.eos_token_ids.begin(),
                       options_.eos_token_ids.end());
      }
      // Known tokens past the prompt (the decode role's token 1) are
      // output tokens to the penalties.
      const std::span<const int32_t> known(r.tokens);
      const size_t num_prompt = std::min(
          known.size(), static_cast<size_t>(std::max(r.num_prompt_tokens, 0)));
      a.seen = model::SeenTokens(r.params, known.first(num_prompt),
                                 known.subspan(num_prompt));
      const RequestId id = r.id;
      a.request = std::move(r);
      active_.emplace(id, std::move(a));
    }
    // Requests leave between steps.
    const absl::Time now = absl::Now();
    std::vector<std::pair<RequestId, absl::Status>> dropped;
    for (const auto& [id, a] : active_) {
      if (a.request.sink->cancelled()) {
        dropped.emplace_back(id, absl::CancelledError("request cancelled"));
      } else if (now > a.request.deadline) {
        dropped.emplace_back(
            id, absl::DeadlineExceededError(absl::StrCat(
                    "request ", id.value(), " passed its deadline")));
      }
    }
    for (auto& [id, status] : dropped) {
      Finish(id, FinishReason::kCancelled, std::move(status));
    }
    plan = scheduler_->Schedule();
    for (RequestId id : plan.preempted) {
      DUET_LOG(INFO) << "KV pool full: request " << id.value()
                     << " preempted; it will be recomputed when blocks free";
    }
    if (plan.empty()) {
      // Nothing can run (no work, or the waiting head needs blocks that
      // reservations hold): wait briefly for a submission instead of
      // spinning.
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !incoming_.empty();
      };
      if (!active_.empty()) {
        mu_.AwaitWithTimeout(absl::Condition(&woken), absl::Milliseconds(5));
      }
      return;
    }
    for (const ScheduledChunk& c : plan.chunks) {
      const Sequence* seq = scheduler_->Find(c.id);
      Active* a = &active_.at(c.id);
      if (!a->scheduled) {
        a->scheduled = true;
        a->request.sink->OnScheduled(seq->num_cached_tokens);
      }
      planned.push_back({seq, a});
      RunChunk rc;
      rc.tokens = std::span<const int32_t>(seq->tokens)
                      .subspan(static_cast<size_t>(c.start),
                               static_cast<size_t>(c.len));
      rc.num_cached = c.start;
      rc.blocks = seq->blocks;
      if (c.sample) {
        rc.sample = model::ToSampleSpec(
            a->request.params, static_cast<uint64_t>(seq->num_generated()));
        rc.seen = a->seen.tokens();
      }
      chunks.push_back(rc);
    }
  }

  // Only this thread changes sequences and active requests, so the
  // pointers taken above stay valid without the lock.
  std::vector<RequestView> views;
  views.reserve(planned.size());
  for (const Planned& p : planned) {
    views.push_back(RequestView{*p.seq, p.active->request});
  }
  policy_->BeforeStep(views, plan.chunks);
  std::vector<kernels::TokenLogprobs> logprobs;
  absl::StatusOr<std::vector<int32_t>> tokens =
      runner_->Run(chunks,
                   policy_->WantsLayerHook()
                       ? model::Transformer::LayerHook([this](int32_t layer) {
                           return policy_->OnLayerQueued(layer);
                         })
                       : nullptr,
                   &logprobs);
  std::vector<absl::Status> chunk_status(plan.chunks.size());
  if (tokens.ok()) {
    for (size_t i = 0; i < plan.chunks.size(); ++i) {
      chunk_status[i] = policy_->OnChunkDone(views[i], plan.chunks[i]);
    }
  }

  absl::MutexLock lock(&mu_);
  steps_.fetch_add(1);
  if (tokens.ok()) {
    if (absl::Status s = scheduler_->Update(plan, *tokens); !s.ok()) {
      tokens = absl::InternalError(s.message());
    }
  }
  if (!tokens.ok()) {
    DUET_LOG(ERROR) << "forward step failed: " << tokens.status();
    for (const ScheduledChunk& c : plan.chunks) {
      Finish(c.id, FinishReason::kCancelled,
             absl::InternalError(absl::StrCat("forward step failed: ",
                                              tokens.status().message())));
    }
    return;
  }
  size_t drawn = 0;  // index among the sampled chunks (logprobs)
  for (size_t i = 0; i < plan.chunks.size(); ++i) {
    const ScheduledChunk& c = plan.chunks[i];
    const size_t sampled = c.sample ? drawn++ : 0;
    if (!chunk_status[i].ok()) {
      Finish(c.id, FinishReason::kCancelled, chunk_status[i]);
      continue;
    }
    if (!c.sample) continue;
    const Sequence& seq = *planned[i].seq;
    Active& a = *planned[i].active;
    const int32_t token = seq.tokens.back();
    if (!a.prompt_counted) {
      // The first token: the prompt is done (num_computed: KV that came
      // with the request, computed elsewhere).
      a.prompt_counted = true;
      prompt_tokens_.fetch_add(
          std::max(0, a.request.num_prompt_tokens - a.request.num_computed),
          std::memory_order_relaxed);
    }
    generation_tokens_.fetch_add(1, std::memory_order_relaxed);
    a.seen.Add(token);
    if (a.request.params.logprobs && sampled < logprobs.size()) {
      a.request.sink->OnTokenWithLogprobs(token, logprobs[sampled]);
    } else {
      a.request.sink->OnToken(token);
    }
    if (std::find(a.stops.begin(), a.stops.end(), token) != a.stops.end()) {
      Finish(c.id, FinishReason::kStopToken, absl::OkStatus());
    } else if (seq.num_generated() >= policy_->MaxGenerated(a.request)) {
      Finish(c.id, FinishReason::kMaxTokens, absl::OkStatus());
    }
  }
}

}  // namespace duet::runtime
