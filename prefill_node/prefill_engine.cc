#include "prefill_node/prefill_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "model/engine.h"

namespace duet::prefill_node {

std::optional<absl::StatusOr<PrefillResult>> PrefillJob::Wait(
    absl::Duration timeout) {
  if (!done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
  return result_;
}

void PrefillJob::OnScheduled() { started_ = absl::Now(); }

void PrefillJob::OnToken(int32_t token) {
  partial_.first_token = token;
  partial_.queue_ms = absl::ToDoubleMilliseconds(started_ - submitted_);
  partial_.prefill_ms = absl::ToDoubleMilliseconds(absl::Now() - started_);
}

void PrefillJob::OnFinish(runtime::FinishReason reason, absl::Status status) {
  if (status.ok()) {
    result_ = partial_;
  } else {
    result_ = std::move(status);
  }
  done_.Notify();
}

// Pushes the blocks each chunk wrote to the request's decode node, once the
// step that wrote them is done, and ends a request at its first token.
class PrefillPolicy final : public runtime::RolePolicy {
 public:
  PrefillPolicy(std::unique_ptr<kv_transfer::KvSender> sender,
                absl::Duration transfer_timeout, int32_t block_size)
      : sender_(std::move(sender)),
        transfer_timeout_(transfer_timeout),
        block_size_(block_size) {}

  absl::Status OnChunkDone(const runtime::RequestView& r,
                           const runtime::ScheduledChunk& chunk) override {
    auto& job = static_cast<PrefillJob&>(*r.request.sink);
    // A partial last block is pushed again, completed, with the next chunk.
    const int32_t end = chunk.start + chunk.len;
    std::vector<kv_transfer::BlockCopy> copies;
    for (int32_t b = chunk.start / block_size_;
         b < model::BlocksForTokens(end, block_size_); ++b) {
      copies.push_back({r.seq.blocks[static_cast<size_t>(b)].value(), b});
    }
    const absl::Time sent_at = absl::Now();
    const absl::Duration left = r.request.deadline - sent_at;
    const absl::Status sent = sender_->Send(
        job.dest_, copies,
        std::max(absl::Milliseconds(1), std::min(transfer_timeout_, left)));
    job.partial_.transfer_ms += absl::ToDoubleMilliseconds(absl::Now() - sent_at);
    if (!sent.ok()) {
      return absl::Status(
          sent.code(), absl::StrCat("KV transfer to the decode node failed: ",
                                    sent.message()));
    }
    return absl::OkStatus();
  }

  int32_t MaxGenerated(const runtime::NewRequest&) const override { return 1; }

 private:
  std::unique_ptr<kv_transfer::KvSender> sender_;
  const absl::Duration transfer_timeout_;
  const int32_t block_size_;
};

absl::StatusOr<std::unique_ptr<PrefillEngine>> PrefillEngine::Create(
    std::unique_ptr<runtime::ModelRunner> runner,
    const PrefillEngineOptions& options, const SenderFactory& sender) {
  if (options.max_num_batched_tokens <= 0 || options.max_num_seqs <= 0 ||
      options.transfer_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "prefill engine: max_num_batched_tokens, max_num_seqs and "
        "transfer_timeout must be > 0");
  }
  std::unique_ptr<PrefillEngine> e(new PrefillEngine());
  e->runner_ = std::move(runner);
  DUET_ASSIGN_OR_RETURN(std::unique_ptr<kv_transfer::KvSender> s,
                        sender(*e->runner_));
  e->policy_ = std::make_unique<PrefillPolicy>(
      std::move(s), options.transfer_timeout, e->runner_->block_size());
  runtime::EngineLoopOptions lo;
  lo.scheduler.max_num_batched_tokens = options.max_num_batched_tokens;
  lo.scheduler.max_num_seqs = options.max_num_seqs;
  lo.eos_token_ids = e->runner_->config().eos_token_ids;
  DUET_ASSIGN_OR_RETURN(
      e->loop_,
      runtime::EngineLoop::Create(e->runner_.get(), e->policy_.get(), lo));
  return e;
}

PrefillEngine::~PrefillEngine() { loop_.reset(); }

absl::StatusOr<std::shared_ptr<PrefillJob>> PrefillEngine::Submit(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params, kv_transfer::KvDescriptor dest,
    absl::Time deadline) {
  DUET_RETURN_IF_ERROR(model::ValidateRequest(prompt, params, config()));
  DUET_RETURN_IF_ERROR(kv_transfer::CheckSameLayout(layout(), dest.layout));
  const int32_t need = model::BlocksForTokens(
      static_cast<int64_t>(prompt.size()), runner_->block_size());
  if (static_cast<int32_t>(dest.block_ids.size()) < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV destination has ", dest.block_ids.size(), " blocks; the prompt "
        "needs ", need));
  }
  if (need > runner_->num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt needs ", need, " KV blocks but this prefill node has only ",
        runner_->num_blocks(), " (raise --num-kv-blocks)"));
  }
  auto job = std::make_shared<PrefillJob>();
  job->dest_ = std::move(dest);
  job->submitted_ = absl::Now();
  job->started_ = job->submitted_;
  runtime::NewRequest r;
  r.id = RequestId(request_id);
  r.num_prompt_tokens = static_cast<int32_t>(prompt.size());
  r.tokens = std::move(prompt);
  r.params = params;
  r.deadline = deadline;
  r.sink = job;
  DUET_RETURN_IF_ERROR(loop_->Submit(std::move(r)));
  return job;
}

int64_t PrefillEngine::queued_tokens() {
  return loop_->Load().uncomputed_tokens;
}

int32_t PrefillEngine::free_blocks() { return loop_->Load().free_blocks; }

int32_t PrefillEngine::active_requests() {
  const runtime::LoopLoad l = loop_->Load();
  return l.running + l.waiting;
}

}  // namespace duet::prefill_node
