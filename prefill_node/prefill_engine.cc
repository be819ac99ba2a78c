#include "prefill_node/prefill_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "model/engine.h"
#include "serving/kv_pool.h"

namespace duet::prefill_node {

using kernels::AttentionMode;

std::optional<absl::StatusOr<PrefillResult>> PrefillJob::Wait(
    absl::Duration timeout) {
  if (!done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
  return result_;
}

PrefillEngine::PrefillEngine(std::unique_ptr<model::Transformer> model,
                             const PrefillEngineOptions& options,
                             model::KvCacheStorage cache)
    : model_(std::move(model)),
      options_(options),
      cache_(std::move(cache)),
      layout_(serving::KvLayoutFor(model_->config(), options.block_size,
                                   model_->backend().activation_dtype())),
      pool_(options.num_blocks) {}

absl::StatusOr<std::unique_ptr<PrefillEngine>> PrefillEngine::Create(
    std::unique_ptr<model::Transformer> model,
    const PrefillEngineOptions& options, const SenderFactory& sender) {
  if (options.block_size <= 0 || options.num_blocks <= 0 ||
      options.max_num_batched_tokens <= 0) {
    return absl::InvalidArgumentError(
        "prefill engine: block_size, num_blocks and max_num_batched_tokens "
        "must be > 0");
  }
  DUET_ASSIGN_OR_RETURN(
      model::KvCacheStorage cache,
      model->AllocateKvCache(options.block_size, options.num_blocks));
  std::unique_ptr<PrefillEngine> engine(
      new PrefillEngine(std::move(model), options, std::move(cache)));
  DUET_ASSIGN_OR_RETURN(
      engine->sender_,
      sender(serving::PoolViewOf(engine->cache_, engine->layout_,
                              options.num_blocks)));
  engine->loop_ = std::thread([e = engine.get()] { e->Loop(); });
  return engine;
}

PrefillEngine::~PrefillEngine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (loop_.joinable()) loop_.join();
}

absl::StatusOr<std::shared_ptr<PrefillJob>> PrefillEngine::Submit(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params, kv_transfer::KvDescriptor dest,
    absl::Time deadline) {
  DUET_RETURN_IF_ERROR(model::ValidateRequest(prompt, params, config()));
  DUET_RETURN_IF_ERROR(kv_transfer::CheckSameLayout(layout_, dest.layout));
  const int32_t need = model::BlocksForTokens(
      static_cast<int64_t>(prompt.size()), options_.block_size);
  if (static_cast<int32_t>(dest.block_ids.size()) < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV destination has ", dest.block_ids.size(), " blocks; the prompt "
        "needs ", need));
  }
  if (need > options_.num_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt needs ", need, " KV blocks but this prefill node has only ",
        options_.num_blocks, " (raise --num-kv-blocks)"));
  }
  auto job = std::make_shared<PrefillJob>();
  job->id_ = request_id;
  job->prompt_ = std::move(prompt);
  job->params_ = params;
  job->dest_ = std::move(dest);
  job->deadline_ = deadline;
  job->submitted_ = absl::Now();
  absl::MutexLock lock(&mu_);
  if (stop_) return absl::UnavailableError("prefill node is shutting down");
  queued_tokens_ += static_cast<int64_t>(job->prompt_.size());
  queue_.push_back(job);
  return job;
}

int64_t PrefillEngine::queued_tokens() {
  absl::MutexLock lock(&mu_);
  return queued_tokens_;
}

int32_t PrefillEngine::free_blocks() {
  absl::MutexLock lock(&mu_);
  return pool_.num_free();
}

int32_t PrefillEngine::active_requests() {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(queue_.size());
}

void PrefillEngine::Complete(PrefillJob& job,
                             absl::StatusOr<PrefillResult> result) {
  if (!job.blocks_.empty()) {
    const absl::Status freed = pool_.Free(job.blocks_);
    if (!freed.ok()) DUET_LOG(ERROR) << "freeing prefill blocks: " << freed;
    job.blocks_.clear();
  }
  queued_tokens_ -=
      static_cast<int64_t>(job.prompt_.size()) - job.next_pos_;
  job.result_ = std::move(result);
  job.done_.Notify();
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->get() == &job) {
      queue_.erase(it);
      break;
    }
  }
}

void PrefillEngine::Loop() {
  struct Planned {
    std::shared_ptr<PrefillJob> job;
    int32_t start;
    int32_t len;
  };
  const int32_t bs = options_.block_size;
  while (true) {
    std::vector<Planned> plan;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !queue_.empty();
      };
      mu_.AwaitWithTimeout(absl::Condition(&has_work),
                           absl::Milliseconds(100));
      if (stop_) {
        while (!queue_.empty()) {
          Complete(*queue_.front(),
                   absl::CancelledError("prefill node shutting down"));
        }
        return;
      }
      const absl::Time now = absl::Now();
      std::vector<std::shared_ptr<PrefillJob>> dropped;
      for (const auto& job : queue_) {
        if (job->cancelled_.load() || now > job->deadline_) dropped.push_back(job);
      }
      for (const auto& job : dropped) {
        Complete(*job, job->cancelled_.load()
                           ? absl::CancelledError("prefill cancelled")
                           : absl::DeadlineExceededError(absl::StrCat(
                                 "request ", job->id_,
                                 " passed its deadline during prefill")));
      }
      int32_t budget = options_.max_num_batched_tokens;
      for (const auto& job : queue_) {
        if (budget == 0) break;
        if (job->blocks_.empty()) {
          auto blocks = pool_.Allocate(model::BlocksForTokens(
              static_cast<int64_t>(job->prompt_.size()), bs));
          if (!blocks.ok()) break;  // FCFS: later requests wait behind it
          job->blocks_ = std::move(*blocks);
          job->started_ = now;
        }
        const int32_t remaining =
            static_cast<int32_t>(job->prompt_.size()) - job->next_pos_;
        const int32_t len = std::min(remaining, budget);
        plan.push_back({job, job->next_pos_, len});
        budget -= len;
      }
    }
    if (plan.empty()) continue;

    // One forward pass over every planned chunk (no lock: only this thread
    // touches a job's blocks and progress).
    std::vector<model::SeqChunk> chunks;
    for (const Planned& p : plan) {
      chunks.push_back(model::SeqChunk{
          std::span<const int32_t>(p.job->prompt_).subspan(p.start, p.len),
          p.start, p.job->blocks_});
    }
    // The first token is drawn on the backend for chunks that end their
    // prompt; the others get a (cheap, unused) greedy draw.
    std::vector<kernels::SampleSpec> specs;
    for (const Planned& p : plan) {
      const bool last = p.start + p.len ==
                        static_cast<int32_t>(p.job->prompt_.size());
      specs.push_back(last ? model::ToSampleSpec(p.job->params_, /*step=*/0)
                           : kernels::SampleSpec{});
    }
    absl::StatusOr<std::vector<int32_t>> tokens = absl::InternalError("");
    auto step = model::BuildStep(AttentionMode::kPrefill, chunks, bs);
    tokens = step.ok() ? model_->ForwardSample(*step, cache_, bs, specs)
                       : step.status();

    std::vector<std::pair<std::shared_ptr<PrefillJob>,
                          absl::StatusOr<PrefillResult>>>
        finished;
    for (size_t i = 0; i < plan.size(); ++i) {
      PrefillJob& job = *plan[i].job;
      if (!tokens.ok()) {
        finished.emplace_back(plan[i].job,
                              absl::InternalError(absl::StrCat(
                                  "prefill forward failed: ",
                                  tokens.status().message())));
        continue;
      }
      // Push the blocks this chunk wrote (a partial last block is pushed
      // again, completed, with the next chunk).
      const int32_t end = plan[i].start + plan[i].len;
      std::vector<kv_transfer::BlockCopy> copies;
      for (int32_t b = plan[i].start / bs; b < model::BlocksForTokens(end, bs);
           ++b) {
        copies.push_back({job.blocks_[b].value(), b});
      }
      const absl::Duration left = job.deadline_ - absl::Now();
      const absl::Time sent_at = absl::Now();
      const absl::Status sent = sender_->Send(
          job.dest_, copies,
          std::max(absl::Milliseconds(1),
                   std::min(options_.transfer_timeout, left)));
      job.transfer_ms_ += absl::ToDoubleMilliseconds(absl::Now() - sent_at);
      if (!sent.ok()) {
        finished.emplace_back(
            plan[i].job,
            absl::Status(sent.code(),
                         absl::StrCat("KV transfer to the decode node failed: ",
                                      sent.message())));
        continue;
      }
      job.next_pos_ = end;
      if (end == static_cast<int32_t>(job.prompt_.size())) {
        PrefillResult r;
        r.first_token = (*tokens)[i];
        r.queue_ms = absl::ToDoubleMilliseconds(job.started_ - job.submitted_);
        r.prefill_ms = absl::ToDoubleMilliseconds(absl::Now() - job.started_);
        r.transfer_ms = job.transfer_ms_;
        finished.emplace_back(plan[i].job, r);
      }
    }
    absl::MutexLock lock(&mu_);
    for (const Planned& p : plan) {
      // Progress made by this pass no longer counts as queued work.
      if (p.job->next_pos_ == p.start + p.len) queued_tokens_ -= p.len;
    }
    for (auto& [job, result] : finished) {
      if (result.ok()) {
        job->next_pos_ = static_cast<int32_t>(job->prompt_.size());
      }
      Complete(*job, std::move(result));
    }
  }
}

}  // namespace duet::prefill_node
