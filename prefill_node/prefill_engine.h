// The prefill node's engine: a token-budget scheduler over chunked prefill.
//
// Each iteration packs up to max_num_batched_tokens prompt tokens into one
// forward pass: first the continuing chunks of requests already being
// prefilled, then new requests, strictly first-come-first-served (a request
// that does not fit waits at the head of the queue, so nothing starves). A
// long prompt is cut into chunks; earlier chunks' KV is read back from this
// node's own paged cache. After each pass the KV blocks that pass wrote are
// pushed to the request's decode node (kv_transfer), and when a request's
// last chunk is done its first token is sampled and the request completes.
#ifndef DUET_PREFILL_NODE_PREFILL_ENGINE_H_
#define DUET_PREFILL_NODE_PREFILL_ENGINE_H_

#include <deque>
#include <functional>
#include <optional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "model/transformer.h"

namespace duet::prefill_node {

struct PrefillEngineOptions {
  int32_t block_size = 16;
  int32_t num_blocks = 1024;
  int32_t max_num_batched_tokens = 2048;
  absl::Duration transfer_timeout = absl::Seconds(10);
};

struct PrefillResult {
  int32_t first_token = 0;
  double queue_ms = 0;     // submit -> first chunk scheduled
  double prefill_ms = 0;   // first chunk scheduled -> first token sampled
  double transfer_ms = 0;  // time spent in KV sends
};

// One request's handle. Thread-safe.
class PrefillJob {
 public:
  // Waits up to `timeout`; nullopt when still running.
  std::optional<absl::StatusOr<PrefillResult>> Wait(absl::Duration timeout);
  // Drops the request at the next iteration boundary (its blocks are freed;
  // KV already pushed to the decode node stays there, owned by the decode
  // node's reservation).
  void Cancel() { cancelled_.store(true); }

 private:
  friend class PrefillEngine;
  absl::Notification done_;
  absl::StatusOr<PrefillResult> result_ = absl::UnknownError("not finished");
  std::atomic<bool> cancelled_{false};

  // Scheduler state (scheduler thread only).
  uint64_t id_ = 0;
  std::vector<int32_t> prompt_;
  model::SamplingParams params_;
  kv_transfer::KvDescriptor dest_;
  std::vector<BlockId> blocks_;  // this node's cache blocks
  int32_t next_pos_ = 0;         // prompt tokens already prefilled
  absl::Time deadline_;
  absl::Time submitted_;
  absl::Time started_;
  double transfer_ms_ = 0;
};

class PrefillEngine {
 public:
  using SenderFactory =
      std::function<absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>>(
          const kv_transfer::KvPoolView&)>;

  static absl::StatusOr<std::unique_ptr<PrefillEngine>> Create(
      std::unique_ptr<model::Transformer> model,
      const PrefillEngineOptions& options, const SenderFactory& sender);
  ~PrefillEngine();  // stops the scheduler; pending jobs fail CANCELLED

  const kv_transfer::KvLayout& layout() const { return layout_; }
  const model::ModelConfig& config() const { return model_->config(); }
  int32_t max_model_len() const {
    return model_->config().max_position_embeddings;
  }

  // Validates and queues a request (INVALID_ARGUMENT for an empty or too
  // long prompt, out-of-vocabulary ids, bad sampling params, a descriptor
  // with another layout or too few blocks).
  absl::StatusOr<std::shared_ptr<PrefillJob>> Submit(
      uint64_t request_id, std::vector<int32_t> prompt,
      const model::SamplingParams& params, kv_transfer::KvDescriptor dest,
      absl::Time deadline);

  // Prompt tokens queued or in progress (for the router's placement).
  int64_t queued_tokens();
  int32_t free_blocks();
  int32_t total_blocks() const { return options_.num_blocks; }
  int32_t active_requests();

 private:
  PrefillEngine(std::unique_ptr<model::Transformer> model,
                const PrefillEngineOptions& options,
                model::KvCacheStorage cache);
  void Loop();
  void Complete(PrefillJob& job, absl::StatusOr<PrefillResult> result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<model::Transformer> model_;
  const PrefillEngineOptions options_;
  model::KvCacheStorage cache_;
  kv_transfer::KvLayout layout_;
  std::unique_ptr<kv_transfer::KvSender> sender_;

  absl::Mutex mu_;
  model::BlockPool pool_ ABSL_GUARDED_BY(mu_);
  // FCFS order; the first `active` entries hold cache blocks.
  std::deque<std::shared_ptr<PrefillJob>> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loop_;
};

}  // namespace duet::prefill_node

#endif  // DUET_PREFILL_NODE_PREFILL_ENGINE_H_
