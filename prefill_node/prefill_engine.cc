#include "prefill_node/prefill_engine.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "kv_transfer/transfer_plan.h"
#include "model/engine.h"

namespace duet::prefill_node {

absl::StatusOr<KvPush> ParseKvPush(absl::string_view name) {
  if (name == "layer") return KvPush::kLayer;
  if (name == "chunk") return KvPush::kChunk;
  if (name == "request") return KvPush::kRequest;
  return absl::InvalidArgumentError(absl::StrCat(
      "--kv-push must be layer, chunk or request, got '", name, "'"));
}

const char* KvPushName(KvPush push) {
  switch (push) {
    case KvPush::kLayer:
      return "layer";
    case KvPush::kChunk:
      return "chunk";
    case KvPush::kRequest:
      return "request";
  }
  return "?";
}

std::optional<absl::StatusOr<PrefillResult>> PrefillJob::Wait(
    absl::Duration timeout) {
  if (!done_.WaitForNotificationWithTimeout(timeout)) return std::nullopt;
  return result_;
}

void PrefillJob::OnScheduled(int32_t cached_prompt_tokens) {
  started_ = absl::Now();
  partial_.cached_tokens = cached_prompt_tokens;
}

void PrefillJob::OnToken(int32_t token) {
  computed_ = absl::Now();
  partial_.first_token = token;
  partial_.queue_ms = absl::ToDoubleMilliseconds(started_ - submitted_);
  partial_.prefill_ms = absl::ToDoubleMilliseconds(computed_ - started_);
}

void PrefillJob::OnTokenWithLogprobs(int32_t token,
                                     const kernels::TokenLogprobs& logprobs) {
  OnToken(token);
  partial_.first_logprobs = logprobs;
}

void PrefillJob::OnFinish(runtime::FinishReason reason, absl::Status status) {
  compute_status_ = std::move(status);
  // Never reached the policy (refused before admission, or shutdown): no
  // transfer to wait for.
  if (!transfer_open_) Complete(absl::OkStatus());
}

void PrefillJob::SetDestination(
    absl::StatusOr<kv_transfer::KvDescriptor> dest) {
  absl::MutexLock lock(&dest_mu_);
  // The first answer stands (a cancelled request binds an error before
  // Describe's reply may come).
  if (dest_set_) return;
  dest_set_ = true;
  if (sender_ == nullptr) {
    dest_ = std::move(dest);
    return;
  }
  // NotFound: the transfer ended already (the request failed or was
  // cancelled), and nothing waits for the destination.
  (void)sender_->Bind(key_, std::move(dest));
}

absl::Status PrefillJob::OpenTransfer(kv_transfer::AsyncKvSender* sender,
                                      absl::Time deadline,
                                      absl::Duration piece_timeout) {
  absl::MutexLock lock(&dest_mu_);
  if (dest_.has_value() && dest_->ok()) {
    DUET_RETURN_IF_ERROR(
        sender->Open(key_, std::move(**dest_), deadline, piece_timeout));
  } else {
    DUET_RETURN_IF_ERROR(sender->OpenPending(key_, deadline, piece_timeout));
    if (dest_.has_value()) (void)sender->Bind(key_, std::move(*dest_));
  }
  dest_.reset();
  sender_ = sender;
  return absl::OkStatus();
}

void PrefillJob::Complete(absl::Status transfer) {
  if (!compute_status_.ok()) {
    result_ = compute_status_;
  } else if (!transfer.ok()) {
    result_ = absl::Status(
        transfer.code(), absl::StrCat("KV transfer to the decode node failed: ",
                                      transfer.message()));
  } else {
    partial_.transfer_ms = absl::ToDoubleMilliseconds(absl::Now() - computed_);
    result_ = partial_;
  }
  done_.Notify();
}

// Hands each chunk's KV to the asynchronous sender (per layer, per chunk or
// per request), ends a request at its first token, and keeps its blocks
// until the sender is done reading them.
class PrefillPolicy final : public runtime::RolePolicy {
 public:
  PrefillPolicy(kv_transfer::AsyncKvSender* sender, kernels::Backend* backend,
                const PrefillEngineOptions& options, int32_t block_size)
      : sender_(sender),
        backend_(backend),
        push_(options.push),
        transfer_timeout_(options.transfer_timeout),
        block_size_(block_size) {}

  void set_loop(runtime::EngineLoop* loop) { loop_ = loop; }

  absl::Status OnAdmit(const runtime::NewRequest& r) override {
    auto job = std::static_pointer_cast<PrefillJob>(r.sink);
    DUET_RETURN_IF_ERROR(
        job->OpenTransfer(sender_, r.deadline, transfer_timeout_));
    job->transfer_open_ = true;
    jobs_[r.id] = std::move(job);
    return absl::OkStatus();
  }

  void BeforeStep(std::span<const runtime::RequestView> requests,
                  std::span<const runtime::ScheduledChunk> chunks) override {
    step_.clear();
    for (size_t i = 0; i < chunks.size(); ++i) {
      const runtime::ScheduledChunk& c = chunks[i];
      const runtime::Sequence& seq = requests[i].seq;
      const bool last = c.start + c.len >= seq.num_prompt_tokens;
      Piece p{c.id.value(), {}};
      // Blocks before the chunk that this request has not pushed yet: the
      // prefix cache's (computed by an earlier request, never by a chunk of
      // this one), sent with its first chunk. The sender skips the leading
      // ones the decode node holds (its prefix cache): the destination may
      // not be known yet.
      int32_t& sent = sent_blocks_[c.id];
      const int32_t from = std::min(c.start, sent * block_size_);
      if (push_ == KvPush::kRequest) {
        if (last) p.copies = Copies(seq, 0, c.start + c.len, true);
      } else {
        p.copies = Copies(seq, from, c.start + c.len, last);
      }
      for (const kv_transfer::BlockCopy& b : p.copies) {
        sent = std::max(sent, b.logical_block + 1);
      }
      step_.push_back(std::move(p));
    }
  }

  bool WantsLayerHook() const override { return push_ == KvPush::kLayer; }

  absl::Status OnLayerQueued(int32_t layer) override {
    DUET_ASSIGN_OR_RETURN(std::shared_ptr<const kernels::StreamMark> mark,
                          backend_->Mark());
    for (const Piece& p : step_) {
      if (p.copies.empty()) continue;
      sender_->Submit(p.key, p.copies, {layer, layer + 1}, mark);
    }
    return absl::OkStatus();
  }

  absl::Status OnChunkDone(const runtime::RequestView& r,
                           const runtime::ScheduledChunk& chunk) override {
    const uint64_t key = r.request.id.value();
    if (push_ != KvPush::kLayer) {
      for (Piece& p : step_) {
        // The step is done (its tokens were read back): no mark needed.
        if (p.key == key && !p.copies.empty()) {
          sender_->Submit(key, std::move(p.copies), {}, nullptr);
        }
      }
    }
    // A transfer that already failed cannot be mended by the rest of the
    // prompt: end the request now.
    return sender_->status(key);
  }

  int32_t MaxGenerated(const runtime::NewRequest&) const override { return 1; }

  std::vector<BlockId> TakeBlocks(RequestId id,
                                  std::vector<BlockId> blocks) override {
    sent_blocks_.erase(id);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return blocks;
    std::shared_ptr<PrefillJob> job = std::move(it->second);
    jobs_.erase(it);
    auto done = [loop = loop_, job, blocks](absl::Status transfer) {
      loop->ReleaseBlocks(blocks);
      job->Complete(std::move(transfer));
    };
    const uint64_t key = id.value();
    const absl::Status ended =
        job->compute_status_.ok()
            ? sender_->Close(key, std::move(done))
            : sender_->Abort(key, job->compute_status_, std::move(done));
    if (!ended.ok()) {
      // The sender is gone (shutdown): nothing reads the blocks any more.
      job->Complete(ended);
      return blocks;
    }
    return {};
  }

  void OnRemoved(RequestId id) override {
    sent_blocks_.erase(id);
    // Admitted but never joined the scheduler: nothing was submitted.
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    std::shared_ptr<PrefillJob> job = std::move(it->second);
    jobs_.erase(it);
    if (!sender_
             ->Abort(id.value(), job->compute_status_,
                     [job](absl::Status s) { job->Complete(std::move(s)); })
             .ok()) {
      job->Complete(absl::CancelledError("KV sender shut down"));
    }
  }

 private:
  struct Piece {
    uint64_t key;
    std::vector<kv_transfer::BlockCopy> copies;
  };

  // The blocks of tokens [start, end) that are complete after them: a
  // partial last block is sent only with the prompt's last chunk, once
  // whole, so every block leaves exactly once. Copies index the request's
  // logical blocks (the sender maps them to the descriptor's).
  std::vector<kv_transfer::BlockCopy> Copies(const runtime::Sequence& seq,
                                             int32_t start, int32_t end,
                                             bool last) const {
    const int32_t first = start / block_size_;
    const int32_t stop =
        last ? model::BlocksForTokens(end, block_size_) : end / block_size_;
    std::vector<kv_transfer::BlockCopy> copies;
    for (int32_t b = first; b < stop; ++b) {
      copies.push_back({seq.blocks[static_cast<size_t>(b)].value(), b});
    }
    return copies;
  }

  kv_transfer::AsyncKvSender* const sender_;
  kernels::Backend* const backend_;
  const KvPush push_;
  const absl::Duration transfer_timeout_;
  const int32_t block_size_;
  // Per request: leading logical blocks already handed to the sender.
  absl::flat_hash_map<RequestId, int32_t> sent_blocks_;
  runtime::EngineLoop* loop_ = nullptr;
  // Loop thread only.
  absl::flat_hash_map<RequestId, std::shared_ptr<PrefillJob>> jobs_;
  std::vector<Piece> step_;
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
  e->sender_ = std::make_unique<kv_transfer::AsyncKvSender>(
      std::move(s), options.on_transfer);
  e->policy_ =
      std::make_unique<PrefillPolicy>(e->sender_.get(), &e->runner_->backend(),
                                      options, e->runner_->block_size());
  runtime::EngineLoopOptions lo;
  lo.scheduler.max_num_batched_tokens = options.max_num_batched_tokens;
  lo.scheduler.max_num_seqs = options.max_num_seqs;
  lo.scheduler.policy = options.scheduling;
  lo.scheduler.enable_prefix_caching = options.enable_prefix_caching;
  lo.eos_token_ids = e->runner_->config().eos_token_ids;
  DUET_ASSIGN_OR_RETURN(e->loop_, runtime::EngineLoop::Create(
                                      e->runner_.get(), e->policy_.get(), lo));
  e->policy_->set_loop(e->loop_.get());
  return e;
}

PrefillEngine::~PrefillEngine() {
  // The loop ends every request (their transfers aborted), then the sender
  // runs the callbacks, which give blocks back to the still-living loop.
  if (loop_ != nullptr) loop_->Stop();
  if (sender_ != nullptr) sender_->Shutdown();
  loop_.reset();
}

absl::Status PrefillEngine::CheckDestination(
    int64_t prompt_tokens, const kv_transfer::KvDescriptor& dest) const {
  // The decode node's TP size may differ (head slices); the rest must match.
  DUET_RETURN_IF_ERROR(
      kv_transfer::MakeTransferPlan(layout(), dest.layout).status());
  const int32_t need =
      model::BlocksForTokens(prompt_tokens, runner_->block_size());
  // The decode node holds the first `first_block` (its prefix cache); the
  // block of the last prompt token is always sent.
  if (dest.first_block < 0 || dest.first_block >= need) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV destination starts at block ", dest.first_block,
                     " of the ", need, " the prompt takes"));
  }
  if (static_cast<int32_t>(dest.block_ids.size()) < need - dest.first_block) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV destination has ", dest.block_ids.size(), " blocks after block ",
        dest.first_block, "; the prompt needs ", need - dest.first_block));
  }
  return absl::OkStatus();
}

void PrefillEngine::SetDestination(
    PrefillJob& job, absl::StatusOr<kv_transfer::KvDescriptor> dest) const {
  if (dest.ok()) {
    if (absl::Status s = CheckDestination(job.num_prompt_tokens_, *dest);
        !s.ok()) {
      dest = std::move(s);
    }
  }
  job.SetDestination(std::move(dest));
}

absl::StatusOr<std::shared_ptr<PrefillJob>> PrefillEngine::Submit(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params, kv_transfer::KvDescriptor dest,
    absl::Time deadline) {
  return SubmitJob(request_id, std::move(prompt), params, deadline,
                   std::move(dest));
}

absl::StatusOr<std::shared_ptr<PrefillJob>> PrefillEngine::SubmitPending(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params, absl::Time deadline) {
  return SubmitJob(request_id, std::move(prompt), params, deadline,
                   std::nullopt);
}

absl::StatusOr<std::shared_ptr<PrefillJob>> PrefillEngine::SubmitJob(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params, absl::Time deadline,
    std::optional<kv_transfer::KvDescriptor> dest) {
  DUET_RETURN_IF_ERROR(model::ValidateRequest(prompt, params, config()));
  if (dest.has_value()) {
    DUET_RETURN_IF_ERROR(
        CheckDestination(static_cast<int64_t>(prompt.size()), *dest));
  }
  const int32_t need = model::BlocksForTokens(
      static_cast<int64_t>(prompt.size()), runner_->block_size());
  if (need > runner_->num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt needs ", need, " KV blocks but this prefill node has only ",
        runner_->num_blocks(), " (raise --num-kv-blocks)"));
  }
  auto job = std::make_shared<PrefillJob>();
  job->key_ = request_id;
  job->num_prompt_tokens_ = static_cast<int64_t>(prompt.size());
  if (dest.has_value()) job->SetDestination(std::move(*dest));
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
