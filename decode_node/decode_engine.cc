#include "decode_node/decode_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "kv_transfer/transfer_plan.h"
#include "model/kv_cache.h"

namespace duet::decode_node {

DecodeStream::Update DecodeStream::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !pending_.empty() || done_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  Update u;
  u.tokens.swap(pending_);
  u.logprobs.swap(pending_logprobs_);
  if (timings_due_ && !u.tokens.empty()) {
    // The update that carries a colocated request's first token.
    timings_due_ = false;
    u.queue_ms =
        absl::ToDoubleMilliseconds(scheduled_.value_or(created_) - created_);
    u.prefill_ms = absl::ToDoubleMilliseconds(first_token_time_ -
                                              scheduled_.value_or(created_));
  }
  // Report done only once every token has been handed out.
  if (done_ && u.tokens.empty()) {
    u.done = true;
    u.finish_reason = finish_;
    u.error = error_;
    u.decode_ms = decode_ms_;
    u.cached_prompt_tokens = cached_prompt_tokens_;
  }
  return u;
}

void DecodeStream::OnScheduled(int32_t cached_prompt_tokens) {
  absl::MutexLock lock(&mu_);
  cached_prompt_tokens_ = cached_prompt_tokens;
  // Once: a preempted request is scheduled again, but its queue ended at
  // its first step.
  if (!scheduled_.has_value()) scheduled_ = absl::Now();
}

void DecodeStream::NoteTokenLocked() {
  if (colocated_ && !first_drawn_) {
    first_drawn_ = true;
    first_token_time_ = absl::Now();
    timings_due_ = true;
  }
}

void DecodeStream::OnToken(int32_t token) {
  absl::MutexLock lock(&mu_);
  NoteTokenLocked();
  pending_.push_back(token);
}

void DecodeStream::OnTokenWithLogprobs(int32_t token,
                                       const kernels::TokenLogprobs& logprobs) {
  absl::MutexLock lock(&mu_);
  NoteTokenLocked();
  pending_.push_back(token);
  pending_logprobs_.push_back(logprobs);
}

void DecodeStream::OnFinish(FinishReason reason, absl::Status status) {
  absl::MutexLock lock(&mu_);
  done_ = true;
  finish_ = reason;
  error_ = std::move(status);
  decode_ms_ = absl::ToDoubleMilliseconds(absl::Now() - first_token_time_);
}

// Lands a request's KV before its first step and keeps the reservations'
// clock.
class DecodeEngine::Policy final : public runtime::RolePolicy {
 public:
  explicit Policy(DecodeEngine* engine) : engine_(engine) {}

  absl::Status OnAdmit(const runtime::NewRequest& r) override {
    {
      absl::MutexLock lock(&engine_->mu_);
      if (engine_->colocated_.contains(r.id.value())) return absl::OkStatus();
    }
    absl::Status s = engine_->receiver_->Land(r.id.value());
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("landing the KV of request ", r.id.value(),
                                 ": ", s.message()));
    }
    if (engine_->options_.on_kv_received) {
      // What the prefill node sent: every block the prompt touches, all
      // layers, all tensor-parallel ranks' heads.
      kv_transfer::KvLayout whole = engine_->layout();
      whole.tp_size = 1;
      whole.tp_rank = 0;
      // Linked prefix-cache blocks were not sent.
      const int64_t sent =
          model::BlocksForTokens(r.num_prompt_tokens, whole.block_size) -
          static_cast<int64_t>(r.cached_uids.size());
      engine_->options_.on_kv_received(sent * whole.num_layers *
                                       whole.block_bytes());
    }
    return s;
  }
  void Housekeeping(runtime::Scheduler& scheduler) override {
    engine_->Housekeeping(scheduler);
  }
  void OnRemoved(RequestId id) override {
    // A request that ended before landing still holds receiver staging;
    // its transfer was complete (it came through StartDecode), so nothing
    // more arrives and the staging is free at once.
    engine_->receiver_->Discard(id.value());
    absl::MutexLock lock(&engine_->mu_);
    engine_->streams_.erase(id.value());
    engine_->colocated_.erase(id.value());
  }

 private:
  DecodeEngine* const engine_;
};

absl::StatusOr<std::unique_ptr<DecodeEngine>> DecodeEngine::Create(
    std::unique_ptr<runtime::ModelRunner> runner,
    const DecodeEngineOptions& options, const ReceiverFactory& receiver) {
  if (options.max_num_seqs <= 0 || options.max_num_batched_tokens <= 0 ||
      options.default_reservation_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "decode engine: max_num_seqs, max_num_batched_tokens and the "
        "reservation TTL must be > 0");
  }
  std::unique_ptr<DecodeEngine> e(new DecodeEngine());
  e->options_ = options;
  e->runner_ = std::move(runner);
  DUET_ASSIGN_OR_RETURN(e->receiver_, receiver(*e->runner_));
  e->policy_ = std::make_unique<Policy>(e.get());
  runtime::EngineLoopOptions lo;
  lo.scheduler.max_num_batched_tokens = options.max_num_batched_tokens;
  lo.scheduler.max_num_seqs = options.max_num_seqs;
  lo.scheduler.policy = options.scheduling;
  lo.scheduler.enable_prefix_caching = options.enable_prefix_caching;
  lo.eos_token_ids = e->runner_->config().eos_token_ids;
  DUET_ASSIGN_OR_RETURN(e->loop_, runtime::EngineLoop::Create(
                                      e->runner_.get(), e->policy_.get(), lo));
  return e;
}

DecodeEngine::~DecodeEngine() {
  // The loop ends running requests; reservations need nothing more (the
  // pool goes with the runner).
  loop_.reset();
}

absl::StatusOr<kv_transfer::KvDescriptor> DecodeEngine::Reserve(
    uint64_t request_id, int32_t num_prompt_tokens, int32_t max_new_tokens,
    const kv_transfer::KvLayout& expected, absl::Duration ttl,
    std::optional<kv_transfer::Transport> transport,
    std::span<const int32_t> prompt) {
  // The prefill node may split the heads over another number of ranks
  // (heterogeneous TP); everything else must match.
  DUET_RETURN_IF_ERROR(
      kv_transfer::MakeTransferPlan(expected, layout()).status());
  if (ttl > options_.max_reservation_ttl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reserve: reservation_ttl_ms ", absl::ToInt64Milliseconds(ttl),
        " exceeds this node's cap of ",
        absl::ToInt64Milliseconds(options_.max_reservation_ttl),
        " ms (--max-reservation-ttl-ms)"));
  }
  if (num_prompt_tokens <= 0 || max_new_tokens <= 0) {
    return absl::InvalidArgumentError(
        "Reserve: num_prompt_tokens and max_new_tokens must be > 0");
  }
  if (!prompt.empty()) {
    if (static_cast<int64_t>(prompt.size()) != num_prompt_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("Reserve: prompt_token_ids has ", prompt.size(),
                       " tokens but num_prompt_tokens is ", num_prompt_tokens));
    }
    for (int32_t id : prompt) {
      if (id < 0 || id >= config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "Reserve: prompt token id ", id, " is outside the vocabulary"));
      }
    }
  }
  const int64_t total = int64_t{num_prompt_tokens} + max_new_tokens;
  if (total > max_model_len()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reserve: prompt (", num_prompt_tokens, ") + max_new_tokens (",
        max_new_tokens, ") exceeds the model context of ", max_model_len()));
  }
  const int32_t bs = runner_->block_size();
  // The last sampled token is never fed back: total - 1 cached tokens at
  // most. A request that needs more than the whole pool could never finish,
  // even alone after preempting everything else.
  const int32_t most = model::BlocksForTokens(total - 1, bs);
  if (most > runner_->num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Reserve: prompt + max_tokens needs ", most,
                     " KV blocks at the end; this decode node's pool has ",
                     runner_->num_blocks(), " (lower max_tokens)"));
  }
  const int32_t prompt_blocks = model::BlocksForTokens(num_prompt_tokens, bs);
  if (prompt_blocks > receiver_->max_blocks_per_request()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Reserve: the prompt's KV is ", prompt_blocks,
                     " blocks; this decode node receives at most ",
                     receiver_->max_blocks_per_request(),
                     " per request (raise its --kv-staging-blocks)"));
  }
  return loop_->WithScheduler([&](runtime::Scheduler& scheduler)
                                  -> absl::StatusOr<kv_transfer::KvDescriptor> {
    absl::MutexLock lock(&mu_);
    if (reservations_.contains(request_id) || streams_.contains(request_id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("request ", request_id, " is already reserved"));
    }
    // The block of the prompt's last token is always received, so every
    // transfer carries at least one block.
    DUET_ASSIGN_OR_RETURN(
        runtime::Scheduler::PromptBlocks taken,
        scheduler.ReservePrompt(prompt, std::min(prompt_blocks + 1, most),
                                (num_prompt_tokens - 1) / bs));
    std::vector<BlockId>& blocks = taken.blocks;
    const auto cached = static_cast<int32_t>(taken.cached_uids.size());
    std::vector<int32_t> ids;
    for (int32_t i = cached; i < prompt_blocks; ++i) {
      ids.push_back(blocks[static_cast<size_t>(i)].value());
    }
    auto desc = transport.has_value()
                    ? receiver_->DescribeFor(*transport, request_id, ids)
                    : receiver_->Describe(request_id, ids);
    if (!desc.ok()) {
      (void)scheduler.Unreserve(blocks);
      return desc.status();
    }
    desc->first_block = cached;
    Reservation r;
    if (cached > 0) {
      r.cached_uids = std::move(taken.cached_uids);
      r.prompt.assign(prompt.begin(), prompt.end());
    }
    r.blocks = std::move(blocks);
    r.prompt_len = num_prompt_tokens;
    r.max_new_tokens = max_new_tokens;
    r.expires =
        absl::Now() +
        (ttl > absl::ZeroDuration() ? ttl : options_.default_reservation_ttl);
    reservations_.emplace(request_id, std::move(r));
    return desc;
  });
}

absl::StatusOr<std::shared_ptr<DecodeStream>> DecodeEngine::StartDecode(
    uint64_t request_id, std::vector<int32_t> prompt, int32_t first_token,
    const model::SamplingParams& params) {
  DUET_RETURN_IF_ERROR(
      model::ValidateSamplingParams(params, config().vocab_size));
  if (first_token < 0 || first_token >= config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_token ", first_token, " is outside the vocabulary"));
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= config().vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary"));
    }
  }
  // Token 1 is not streamed: the router sent it to the client as soon as
  // the prefill node returned it, without waiting for this call.
  auto stream = std::make_shared<DecodeStream>();
  runtime::NewRequest req;
  bool finished_at_first = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = reservations_.find(request_id);
    if (it == reservations_.end()) {
      if (streams_.contains(request_id)) {
        return absl::AlreadyExistsError(
            absl::StrCat("request ", request_id, " is already decoding"));
      }
      return absl::FailedPreconditionError(absl::StrCat(
          "request ", request_id,
          " has no reservation on this decode node (never reserved, released "
          "or expired)"));
    }
    Reservation& r = it->second;
    if (static_cast<int32_t>(prompt.size()) != r.prompt_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Decode: prompt_token_ids has ", prompt.size(),
          " tokens but the reservation is for ", r.prompt_len,
          " (the decode node keeps the prompt to recompute its KV after a "
          "preemption)"));
    }
    // Linked cache blocks hold the KV of the reserved prompt only.
    if (!r.prompt.empty() && prompt != r.prompt) {
      return absl::InvalidArgumentError(
          "Decode: prompt_token_ids differ from the prompt given at Reserve "
          "(part of the reservation's KV was linked from this node's prefix "
          "cache for that prompt)");
    }
    if (params.max_tokens > r.max_new_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_tokens ", params.max_tokens,
                       " exceeds the reserved ", r.max_new_tokens));
    }
    std::vector<int32_t> stops = params.stop_token_ids;
    if (!params.ignore_eos) {
      stops.insert(stops.end(), config().eos_token_ids.begin(),
                   config().eos_token_ids.end());
    }
    const bool stop =
        std::find(stops.begin(), stops.end(), first_token) != stops.end();
    finished_at_first = stop || params.max_tokens <= 1;
    req.id = RequestId(request_id);
    req.num_prompt_tokens = r.prompt_len;
    req.num_computed = r.prompt_len;
    req.tokens = std::move(prompt);
    req.tokens.push_back(first_token);
    req.blocks = std::move(r.blocks);
    req.cached_uids = std::move(r.cached_uids);
    req.params = params;
    req.sink = stream;
    reservations_.erase(it);
    if (finished_at_first) {
      stream->OnFinish(
          stop ? FinishReason::kStopToken : FinishReason::kMaxTokens,
          absl::OkStatus());
      // Under mu_, so a new reservation under the same id cannot slip in
      // between and lose its staging. The transfer is complete: no
      // quarantine.
      receiver_->Discard(request_id);
    } else {
      streams_[request_id] = stream;
    }
  }
  if (finished_at_first) {
    loop_
        ->WithScheduler(
            [&](runtime::Scheduler& s) { return s.Unreserve(req.blocks); })
        .IgnoreError();
    return stream;
  }
  std::vector<BlockId> blocks = req.blocks;
  if (absl::Status s = loop_->Submit(std::move(req)); !s.ok()) {
    loop_
        ->WithScheduler(
            [&](runtime::Scheduler& sch) { return sch.Unreserve(blocks); })
        .IgnoreError();
    absl::MutexLock lock(&mu_);
    receiver_->Discard(request_id);
    streams_.erase(request_id);
    return s;
  }
  return stream;
}

absl::StatusOr<std::shared_ptr<DecodeStream>> DecodeEngine::StartColocated(
    uint64_t request_id, std::vector<int32_t> prompt,
    const model::SamplingParams& params) {
  if (!colocated()) {
    return absl::FailedPreconditionError(
        "this decode node does not run whole requests (start it with --role "
        "colocated)");
  }
  if (prompt.empty() || params.max_tokens <= 0) {
    return absl::InvalidArgumentError(
        "Generate needs a prompt and max_tokens > 0");
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= config().vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary"));
    }
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (total > max_model_len()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), ") + max_tokens (", params.max_tokens,
        ") exceeds the model context of ", max_model_len()));
  }
  // The last sampled token is never fed back (as in Reserve).
  const int32_t most = model::BlocksForTokens(total - 1, runner_->block_size());
  if (most > runner_->num_blocks()) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt + max_tokens needs ", most,
                     " KV blocks at the end; this node's pool has ",
                     runner_->num_blocks(), " (lower max_tokens)"));
  }
  if (loop_->Load().waiting >= options_.max_colocated_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrCat("colocated node busy: ", options_.max_colocated_waiting,
                     " requests already wait for a place in the batch"));
  }
  auto stream = std::make_shared<DecodeStream>();
  stream->colocated_ = true;
  runtime::NewRequest req;
  req.id = RequestId(request_id);
  req.num_prompt_tokens = static_cast<int32_t>(prompt.size());
  req.num_computed = 0;
  req.tokens = std::move(prompt);
  req.params = params;
  req.sink = stream;
  {
    absl::MutexLock lock(&mu_);
    if (reservations_.contains(request_id) || streams_.contains(request_id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("request ", request_id, " is already on this node"));
    }
    colocated_.insert(request_id);
    streams_[request_id] = stream;
  }
  if (absl::Status s = loop_->Submit(std::move(req)); !s.ok()) {
    absl::MutexLock lock(&mu_);
    colocated_.erase(request_id);
    streams_.erase(request_id);
    return s;
  }
  return stream;
}

bool DecodeEngine::Release(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  if (auto it = reservations_.find(request_id); it != reservations_.end()) {
    Reservation r = std::move(it->second);
    reservations_.erase(it);
    QuarantineLocked(request_id, std::move(r));
    return true;
  }
  if (auto it = streams_.find(request_id); it != streams_.end()) {
    // The loop frees a running request's blocks at the next step boundary,
    // never under a forward pass that reads them.
    if (auto stream = it->second.lock()) stream->Cancel();
    return true;
  }
  return false;
}

void DecodeEngine::QuarantineLocked(uint64_t id, Reservation r) {
  receiver_->Drop(id);
  quarantine_.emplace_back(absl::Now() + options_.release_quarantine,
                           std::move(r.blocks));
}

void DecodeEngine::Housekeeping(runtime::Scheduler& scheduler) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  std::vector<uint64_t> expired;
  for (const auto& [id, r] : reservations_) {
    if (r.expires < now) expired.push_back(id);
  }
  for (uint64_t id : expired) {
    DUET_LOG(WARNING) << "reservation of request " << id
                      << " expired without a Decode call; freeing its blocks";
    Reservation r = std::move(reservations_[id]);
    reservations_.erase(id);
    QuarantineLocked(id, std::move(r));
  }
  for (auto it = quarantine_.begin(); it != quarantine_.end();) {
    if (it->first <= now) {
      (void)scheduler.Unreserve(it->second);
      it = quarantine_.erase(it);
    } else {
      ++it;
    }
  }
}

DecodeLoad DecodeEngine::Load() {
  const runtime::LoopLoad l = loop_->Load();
  DecodeLoad load;
  load.free_blocks = l.free_blocks;
  load.total_blocks = l.total_blocks;
  load.running = l.running;
  load.waiting = l.waiting;
  load.preemptions = l.preemptions;
  absl::MutexLock lock(&mu_);
  load.reserved = static_cast<int32_t>(reservations_.size());
  for (const auto& q : quarantine_) {
    load.quarantined_blocks += static_cast<int32_t>(q.second.size());
  }
  return load;
}

}  // namespace duet::decode_node
