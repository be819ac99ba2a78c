// The decode node's engine: owns the paged KV pool (exposed to prefill
// nodes through a kv_transfer::KvReceiver), answers Reserve, and runs
// continuous batching: each step takes the next token of every running
// request, runs one paged-attention decode forward pass, samples and hands
// the tokens to each request's stream. Requests join and leave between steps.
//
// Block accounting: a reservation allocates every block the request can ever
// need (prompt + max_new_tokens - 1 tokens), so a running request can never
// run out of cache mid-stream; when the pool is full, Reserve fails with
// RESOURCE_EXHAUSTED and running requests are untouched. Blocks return to
// the pool when a request finishes, is cancelled or released, or when its
// reservation expires without a Decode call (the prefill side died).
#ifndef DUET_DECODE_NODE_DECODE_ENGINE_H_
#define DUET_DECODE_NODE_DECODE_ENGINE_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"
#include "model/kv_cache.h"
#include "model/sampler.h"
#include "model/transformer.h"

namespace duet::decode_node {

struct DecodeEngineOptions {
  int32_t block_size = 16;
  int32_t num_blocks = 1024;
  int32_t max_batch_size = 64;
  // Reservations without a Decode call are freed after this long.
  absl::Duration default_reservation_ttl = absl::Seconds(60);
  // Blocks of a reservation released before its Decode call may still be
  // the target of a transfer the prefill node gave up on (with emulated
  // one-sided puts, bytes already in flight can land after the sender's
  // timeout). They return to the pool only after this long, so they can
  // never overwrite another request's KV.
  absl::Duration release_quarantine = absl::Seconds(2);
};

enum class FinishReason { kStopToken, kMaxTokens, kCancelled };

struct DecodeLoad {
  int32_t free_blocks = 0;
  int32_t total_blocks = 0;
  int32_t running = 0;   // in the batch
  int32_t waiting = 0;   // admitted, waiting for a batch slot
  int32_t reserved = 0;  // reservations awaiting Decode
  int32_t quarantined_blocks = 0;  // released, not yet reusable
};

// The consumer side of one request's token stream. Thread-safe.
class DecodeStream {
 public:
  struct Update {
    std::vector<int32_t> tokens;  // new tokens since the last call
    bool done = false;
    FinishReason finish_reason = FinishReason::kMaxTokens;
    absl::Status error;  // non-OK when the request failed
    double decode_ms = 0.0;  // set when done: first to last token
  };
  // Returns new tokens, or done, or (after `timeout`) an empty update.
  Update Next(absl::Duration timeout);
  // Asks the engine to drop the request at the next step boundary.
  void Cancel();

 private:
  friend class DecodeEngine;
  absl::Mutex mu_;
  std::vector<int32_t> pending_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  FinishReason finish_ ABSL_GUARDED_BY(mu_) = FinishReason::kMaxTokens;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  double decode_ms_ ABSL_GUARDED_BY(mu_) = 0.0;
  std::atomic<bool> cancelled_{false};

  void Push(int32_t token);
  void Finish(FinishReason reason, absl::Status error, double decode_ms);
};

class DecodeEngine {
 public:
  using ReceiverFactory =
      std::function<absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>>(
          const kv_transfer::KvPoolView&)>;

  static absl::StatusOr<std::unique_ptr<DecodeEngine>> Create(
      std::unique_ptr<model::Transformer> model,
      const DecodeEngineOptions& options, const ReceiverFactory& receiver);
  ~DecodeEngine();  // stops the step loop; pending streams end CANCELLED

  const kv_transfer::KvLayout& layout() const { return layout_; }
  const model::ModelConfig& config() const { return model_->config(); }
  int32_t max_model_len() const {
    return model_->config().max_position_embeddings;
  }

  // Allocates the blocks for a request and describes them for the prefill
  // node. INVALID_ARGUMENT for a bad request or a layout that is not ours,
  // ALREADY_EXISTS for a duplicate id, RESOURCE_EXHAUSTED when the pool is
  // full.
  absl::StatusOr<kv_transfer::KvDescriptor> Reserve(
      uint64_t request_id, int32_t num_prompt_tokens, int32_t max_new_tokens,
      const kv_transfer::KvLayout& expected, absl::Duration ttl);

  // Admits a reserved request whose KV is complete, with its first token
  // (sampled by the prefill node). FAILED_PRECONDITION when the reservation
  // is unknown or expired.
  absl::StatusOr<std::shared_ptr<DecodeStream>> StartDecode(
      uint64_t request_id, int32_t first_token,
      const model::SamplingParams& params);

  // Frees a reservation or cancels a running request; false if unknown.
  bool Release(uint64_t request_id);

  DecodeLoad Load();

 private:
  struct Request {
    uint64_t id = 0;
    std::vector<BlockId> blocks;
    int32_t prompt_len = 0;
    int32_t max_new_tokens = 0;
    absl::Time expires;
    // Set by StartDecode:
    bool started = false;
    model::SamplingParams params;
    std::vector<int32_t> stops;
    int32_t last_token = 0;
    int32_t num_cached = 0;  // tokens whose KV is in the cache
    int32_t generated = 0;   // tokens sampled so far (token 1 included)
    absl::Time first_token_time;
    std::shared_ptr<DecodeStream> stream;
  };

  DecodeEngine(std::unique_ptr<model::Transformer> model,
               const DecodeEngineOptions& options,
               model::KvCacheStorage cache);
  void Loop();
  // Runs one decode step over `batch`; returns the status of the forward.
  absl::Status Step(const std::vector<Request*>& batch);
  void FinishLocked(Request& r, FinishReason reason, absl::Status error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapExpiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees an unstarted reservation through the quarantine.
  void QuarantineLocked(Request& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::unique_ptr<model::Transformer> model_;
  const DecodeEngineOptions options_;
  model::KvCacheStorage cache_;
  kv_transfer::KvLayout layout_;
  std::unique_ptr<kv_transfer::KvReceiver> receiver_;

  absl::Mutex mu_;
  model::BlockPool pool_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::unique_ptr<Request>> requests_
      ABSL_GUARDED_BY(mu_);
  std::deque<uint64_t> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> running_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<absl::Time, std::vector<BlockId>>> quarantine_
      ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread loop_;
};

}  // namespace duet::decode_node

#endif  // DUET_DECODE_NODE_DECODE_ENGINE_H_
