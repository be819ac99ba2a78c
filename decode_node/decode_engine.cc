#include "decode_node/decode_engine.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"
#include "serving/kv_pool.h"

namespace duet::decode_node {

using kernels::AttentionMode;

DecodeStream::Update DecodeStream::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !pending_.empty() || done_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  Update u;
  u.tokens.swap(pending_);
  // Report done only once every token has been handed out.
  if (done_ && u.tokens.empty()) {
    u.done = true;
    u.finish_reason = finish_;
    u.error = error_;
    u.decode_ms = decode_ms_;
  }
  return u;
}

void DecodeStream::Cancel() { cancelled_.store(true); }

void DecodeStream::Push(int32_t token) {
  absl::MutexLock lock(&mu_);
  pending_.push_back(token);
}

void DecodeStream::Finish(FinishReason reason, absl::Status error,
                          double decode_ms) {
  absl::MutexLock lock(&mu_);
  done_ = true;
  finish_ = reason;
  error_ = std::move(error);
  decode_ms_ = decode_ms;
}

DecodeEngine::DecodeEngine(std::unique_ptr<model::Transformer> model,
                           const DecodeEngineOptions& options,
                           model::KvCacheStorage cache)
    : model_(std::move(model)),
      options_(options),
      cache_(std::move(cache)),
      layout_(serving::KvLayoutFor(model_->config(), options.block_size,
                                   model_->backend().activation_dtype())),
      pool_(options.num_blocks) {}

absl::StatusOr<std::unique_ptr<DecodeEngine>> DecodeEngine::Create(
    std::unique_ptr<model::Transformer> model,
    const DecodeEngineOptions& options, const ReceiverFactory& receiver) {
  if (options.block_size <= 0 || options.num_blocks <= 0 ||
      options.max_batch_size <= 0) {
    return absl::InvalidArgumentError(
        "decode engine: block_size, num_blocks and max_batch_size must be > "
        "0");
  }
  DUET_ASSIGN_OR_RETURN(
      model::KvCacheStorage cache,
      model->AllocateKvCache(options.block_size, options.num_blocks));
  std::unique_ptr<DecodeEngine> engine(
      new DecodeEngine(std::move(model), options, std::move(cache)));
  DUET_ASSIGN_OR_RETURN(
      engine->receiver_,
      receiver(serving::PoolViewOf(engine->cache_, engine->layout_,
                              options.num_blocks)));
  engine->loop_ = std::thread([e = engine.get()] { e->Loop(); });
  return engine;
}

DecodeEngine::~DecodeEngine() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (loop_.joinable()) loop_.join();
}

absl::StatusOr<kv_transfer::KvDescriptor> DecodeEngine::Reserve(
    uint64_t request_id, int32_t num_prompt_tokens, int32_t max_new_tokens,
    const kv_transfer::KvLayout& expected, absl::Duration ttl) {
  DUET_RETURN_IF_ERROR(kv_transfer::CheckSameLayout(layout_, expected));
  if (num_prompt_tokens <= 0 || max_new_tokens <= 0) {
    return absl::InvalidArgumentError(
        "Reserve: num_prompt_tokens and max_new_tokens must be > 0");
  }
  const int64_t total = int64_t{num_prompt_tokens} + max_new_tokens;
  if (total > max_model_len()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Reserve: prompt (", num_prompt_tokens, ") + max_new_tokens (",
        max_new_tokens, ") exceeds the model context of ", max_model_len()));
  }
  absl::MutexLock lock(&mu_);
  if (requests_.contains(request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request ", request_id, " is already reserved"));
  }
  // The last sampled token is never fed back: total - 1 cached tokens.
  DUET_ASSIGN_OR_RETURN(
      std::vector<BlockId> blocks,
      pool_.Allocate(model::BlocksForTokens(total - 1, options_.block_size)));
  auto r = std::make_unique<Request>();
  r->id = request_id;
  r->blocks = std::move(blocks);
  r->prompt_len = num_prompt_tokens;
  r->max_new_tokens = max_new_tokens;
  r->expires = absl::Now() + (ttl > absl::ZeroDuration()
                                  ? ttl
                                  : options_.default_reservation_ttl);
  std::vector<int32_t> ids;
  for (BlockId b : r->blocks) ids.push_back(b.value());
  auto desc = receiver_->Describe(request_id, ids);
  if (!desc.ok()) {
    (void)pool_.Free(r->blocks);
    return desc.status();
  }
  requests_.emplace(request_id, std::move(r));
  return desc;
}

absl::StatusOr<std::shared_ptr<DecodeStream>> DecodeEngine::StartDecode(
    uint64_t request_id, int32_t first_token,
    const model::SamplingParams& params) {
  DUET_RETURN_IF_ERROR(
      model::ValidateSamplingParams(params, config().vocab_size));
  if (first_token < 0 || first_token >= config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "first_token ", first_token, " is outside the vocabulary"));
  }
  absl::MutexLock lock(&mu_);
  auto it = requests_.find(request_id);
  if (it == requests_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "request ", request_id,
        " has no reservation on this decode node (never reserved, released "
        "or expired)"));
  }
  Request& r = *it->second;
  if (r.started) {
    return absl::AlreadyExistsError(
        absl::StrCat("request ", request_id, " is already decoding"));
  }
  if (params.max_tokens > r.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens ", params.max_tokens, " exceeds the reserved ",
        r.max_new_tokens));
  }
  DUET_RETURN_IF_ERROR(receiver_->Land(request_id));
  r.started = true;
  r.params = params;
  r.stops = params.stop_token_ids;
  if (!params.ignore_eos) {
    const auto& eos = config().eos_token_ids;
    r.stops.insert(r.stops.end(), eos.begin(), eos.end());
  }
  r.last_token = first_token;
  r.num_cached = r.prompt_len;
  r.generated = 1;
  r.first_token_time = absl::Now();
  r.stream = std::make_shared<DecodeStream>();
  r.stream->Push(first_token);
  std::shared_ptr<DecodeStream> stream = r.stream;
  if (std::find(r.stops.begin(), r.stops.end(), first_token) !=
      r.stops.end()) {
    FinishLocked(r, FinishReason::kStopToken, absl::OkStatus());
  } else if (params.max_tokens <= 1) {
    FinishLocked(r, FinishReason::kMaxTokens, absl::OkStatus());
  } else {
    waiting_.push_back(request_id);
  }
  return stream;
}

bool DecodeEngine::Release(uint64_t request_id) {
  absl::MutexLock lock(&mu_);
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return false;
  Request& r = *it->second;
  if (r.started) {
    // The step loop owns running requests: it frees them at the next step
    // boundary, never in the middle of a forward pass that reads their KV.
    r.stream->Cancel();
    return true;
  }
  QuarantineLocked(r);
  return true;
}

void DecodeEngine::QuarantineLocked(Request& r) {
  receiver_->Drop(r.id);
  quarantine_.emplace_back(absl::Now() + options_.release_quarantine,
                           std::move(r.blocks));
  requests_.erase(r.id);  // destroys r
}

DecodeLoad DecodeEngine::Load() {
  absl::MutexLock lock(&mu_);
  DecodeLoad load;
  load.free_blocks = pool_.num_free();
  load.total_blocks = pool_.num_blocks();
  load.running = static_cast<int32_t>(running_.size());
  load.waiting = static_cast<int32_t>(waiting_.size());
  load.reserved = static_cast<int32_t>(requests_.size()) - load.running -
                  load.waiting;
  for (const auto& q : quarantine_) {
    load.quarantined_blocks += static_cast<int32_t>(q.second.size());
  }
  return load;
}

void DecodeEngine::FinishLocked(Request& r, FinishReason reason,
                                absl::Status error) {
  const double decode_ms =
      absl::ToDoubleMilliseconds(absl::Now() - r.first_token_time);
  if (r.stream != nullptr) r.stream->Finish(reason, std::move(error), decode_ms);
  const absl::Status freed = pool_.Free(r.blocks);
  if (!freed.ok()) DUET_LOG(ERROR) << "freeing request blocks: " << freed;
  requests_.erase(r.id);  // destroys r
}

void DecodeEngine::ReapExpiredLocked() {
  const absl::Time now = absl::Now();
  std::vector<uint64_t> expired;
  for (const auto& [id, r] : requests_) {
    if (!r->started && r->expires < now) expired.push_back(id);
  }
  for (uint64_t id : expired) {
    DUET_LOG(WARNING) << "reservation of request " << id
                      << " expired without a Decode call; freeing its blocks";
    QuarantineLocked(*requests_[id]);
  }
  for (auto it = quarantine_.begin(); it != quarantine_.end();) {
    if (it->first <= now) {
      (void)pool_.Free(it->second);
      it = quarantine_.erase(it);
    } else {
      ++it;
    }
  }
}

void DecodeEngine::Loop() {
  while (true) {
    std::vector<Request*> batch;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !waiting_.empty() || !running_.empty();
      };
      // Wake at least every 100 ms to expire abandoned reservations.
      mu_.AwaitWithTimeout(absl::Condition(&has_work),
                           absl::Milliseconds(100));
      ReapExpiredLocked();
      if (stop_) {
        std::vector<uint64_t> ids;
        for (const auto& [id, r] : requests_) ids.push_back(id);
        for (uint64_t id : ids) {
          Request& r = *requests_[id];
          if (r.stream != nullptr) {
            FinishLocked(r, FinishReason::kCancelled,
                         absl::CancelledError("decode node shutting down"));
          } else {
            (void)pool_.Free(r.blocks);
            requests_.erase(id);
          }
        }
        running_.clear();
        waiting_.clear();
        return;
      }
      // Requests leave between steps: cancelled ones first.
      auto drop_cancelled = [this](auto& ids) ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                                mu_) {
        for (auto it = ids.begin(); it != ids.end();) {
          Request& r = *requests_[*it];
          if (r.stream->cancelled_.load()) {
            FinishLocked(r, FinishReason::kCancelled,
                         absl::CancelledError("request cancelled"));
            it = ids.erase(it);
          } else {
            ++it;
          }
        }
      };
      drop_cancelled(running_);
      drop_cancelled(waiting_);
      // ... and join, FCFS, up to the batch limit.
      while (static_cast<int32_t>(running_.size()) < options_.max_batch_size &&
             !waiting_.empty()) {
        running_.push_back(waiting_.front());
        waiting_.pop_front();
      }
      for (uint64_t id : running_) batch.push_back(requests_[id].get());
    }
    if (batch.empty()) continue;
    // Only this thread touches a running request's decode state and frees
    // its blocks, so the forward pass runs without the lock.
    const absl::Status status = Step(batch);
    absl::MutexLock lock(&mu_);
    for (auto it = running_.begin(); it != running_.end();) {
      Request& r = *requests_[*it];
      const bool stop = std::find(r.stops.begin(), r.stops.end(),
                                  r.last_token) != r.stops.end();
      if (!status.ok()) {
        FinishLocked(r, FinishReason::kCancelled,
                     absl::InternalError(absl::StrCat(
                         "decode step failed: ", status.message())));
      } else if (stop) {
        FinishLocked(r, FinishReason::kStopToken, absl::OkStatus());
      } else if (r.generated >= r.params.max_tokens) {
        FinishLocked(r, FinishReason::kMaxTokens, absl::OkStatus());
      } else {
        ++it;
        continue;
      }
      it = running_.erase(it);
    }
  }
}

absl::Status DecodeEngine::Step(const std::vector<Request*>& batch) {
  std::vector<model::SeqChunk> chunks;
  chunks.reserve(batch.size());
  for (Request* r : batch) {
    chunks.push_back(model::SeqChunk{{&r->last_token, 1}, r->num_cached,
                                     r->blocks});
  }
  DUET_ASSIGN_OR_RETURN(
      kernels::StepInputs step,
      model::BuildStep(AttentionMode::kDecode, chunks, options_.block_size));
  std::vector<kernels::SampleSpec> specs;
  specs.reserve(batch.size());
  for (Request* r : batch) {
    specs.push_back(
        model::ToSampleSpec(r->params, static_cast<uint64_t>(r->generated)));
  }
  DUET_ASSIGN_OR_RETURN(
      std::vector<int32_t> tokens,
      model_->ForwardSample(step, cache_, options_.block_size, specs));
  for (size_t i = 0; i < batch.size(); ++i) {
    Request& r = *batch[i];
    const int32_t token = tokens[i];
    ++r.num_cached;
    ++r.generated;
    r.last_token = token;
    r.stream->Push(token);
  }
  return absl::OkStatus();
}

}  // namespace duet::decode_node
