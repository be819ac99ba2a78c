// The decode role on the shared runtime. The decode engine owns the node's
// KV pool (exposed to prefill nodes through a kv_transfer::KvReceiver),
// answers Reserve, and admits a request into the engine loop's continuous
// batch only once its KV is complete (StartDecode, after the prefill node
// reported the transfer done); the receiver lands the KV on the loop thread
// before the request's first step.
//
// Blocks: Reserve takes the prompt's blocks plus one, held outside the
// scheduler until StartDecode; decode grows a request one block at a time as
// it generates, and when the pool is full the scheduler preempts the most
// recently admitted request by recompute (its KV is rebuilt on this node
// from its prompt and generated tokens; its stream just continues). Blocks
// return to the pool when a request finishes, is cancelled or released, or
// when its reservation expires without a Decode call (the prefill side
// died).
#ifndef DUET_DECODE_NODE_DECODE_ENGINE_H_
#define DUET_DECODE_NODE_DECODE_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"
#include "model/sampler.h"
#include "runtime/engine_loop.h"
#include "runtime/model_runner.h"

namespace duet::decode_node {

using FinishReason = runtime::FinishReason;

struct DecodeEngineOptions {
  // Requests in one decode step (--max-num-seqs).
  int32_t max_num_seqs = 64;
  // Token budget of one step (recompute after preemption runs as chunked
  // prefill under it).
  int32_t max_num_batched_tokens = 2048;
  // Reservations without a Decode call are freed after this long.
  absl::Duration default_reservation_ttl = absl::Seconds(60);
  // The longest TTL a Reserve may ask for: INVALID_ARGUMENT beyond it, so
  // no caller can pin blocks for weeks.
  absl::Duration max_reservation_ttl = absl::Minutes(10);
  // Blocks of a reservation released before its Decode call may still be
  // the target of a transfer: the prefill node drops a cancelled request
  // only at its next step boundary, a Send already under way runs until its
  // --kv-transfer-timeout-ms (10 s by default), and with emulated one-sided
  // puts bytes in flight can land after that. They return to the pool only
  // after this long, so they can never overwrite another request's KV: keep
  // it above every prefill node's transfer timeout.
  absl::Duration release_quarantine = absl::Seconds(12);
  runtime::SchedulingPolicy scheduling = runtime::SchedulingPolicy::kPiggyback;
  bool enable_prefix_caching = false;
  // Colocated role (--role colocated): whole requests (StartColocated) are
  // accepted, at most this many at once beyond the running batch
  // (RESOURCE_EXHAUSTED past it, so the router queues them); 0 refuses them.
  int32_t max_colocated_waiting = 0;
  // A request's KV landed in the pool: its bytes, whole model (metrics; on
  // the loop thread).
  std::function<void(int64_t bytes)> on_kv_received;
};

struct DecodeLoad {
  int32_t free_blocks = 0;
  int32_t total_blocks = 0;
  int32_t running = 0;   // in the batch
  int32_t waiting = 0;   // admitted (or preempted), waiting for a slot
  int32_t reserved = 0;  // reservations awaiting Decode
  int32_t quarantined_blocks = 0;  // released, not yet reusable
  int64_t preemptions = 0;         // since start
};

// The consumer side of one request's token stream. Thread-safe.
class DecodeStream : public runtime::RequestSink {
 public:
  struct Update {
    std::vector<int32_t> tokens;  // new tokens since the last call
    // One per token when the request asked for logprobs, else empty.
    std::vector<kernels::TokenLogprobs> logprobs;
    bool done = false;
    FinishReason finish_reason = FinishReason::kMaxTokens;
    absl::Status error;      // non-OK when the request failed
    double decode_ms = 0.0;  // set when done: first to last token
    // Set when done: prompt tokens the prefix cache supplied (colocated
    // requests; 0 for received KV).
    int32_t cached_prompt_tokens = 0;
    // A colocated request's update with its first token: arrival at this
    // node to its first step, and that step to the first token (ms); -1
    // otherwise.
    double queue_ms = -1.0;
    double prefill_ms = -1.0;
  };
  // Returns new tokens, or done, or (after `timeout`) an empty update.
  Update Next(absl::Duration timeout);

  // RequestSink (loop thread).
  void OnScheduled(int32_t cached_prompt_tokens) override;
  void OnToken(int32_t token) override;
  void OnTokenWithLogprobs(int32_t token,
                           const kernels::TokenLogprobs& logprobs) override;
  void OnFinish(FinishReason reason, absl::Status status) override;

 private:
  friend class DecodeEngine;
  absl::Mutex mu_;
  std::vector<int32_t> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<kernels::TokenLogprobs> pending_logprobs_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  FinishReason finish_ ABSL_GUARDED_BY(mu_) = FinishReason::kMaxTokens;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  double decode_ms_ ABSL_GUARDED_BY(mu_) = 0.0;
  int32_t cached_prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  // Set by StartColocated before the loop sees the stream: the first token
  // is drawn here, so the prefill's times are measured here too.
  bool colocated_ = false;
  const absl::Time created_ = absl::Now();  // arrival at this node
  std::optional<absl::Time> scheduled_ ABSL_GUARDED_BY(mu_);
  // Decode time counts from here: a Decode stream's creation (token 1,
  // which the router already sent, is its first input), or a colocated
  // request's first drawn token.
  absl::Time first_token_time_ ABSL_GUARDED_BY(mu_) = created_;
  bool first_drawn_ ABSL_GUARDED_BY(mu_) = false;
  bool timings_due_ ABSL_GUARDED_BY(mu_) = false;  // not yet handed out
  void NoteTokenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

class DecodeEngine {
 public:
  using ReceiverFactory =
      std::function<absl::StatusOr<std::unique_ptr<kv_transfer::KvReceiver>>(
          runtime::ModelRunner&)>;

  static absl::StatusOr<std::unique_ptr<DecodeEngine>> Create(
      std::unique_ptr<runtime::ModelRunner> runner,
      const DecodeEngineOptions& options, const ReceiverFactory& receiver);
  ~DecodeEngine();  // stops the step loop; pending streams end CANCELLED

  const kv_transfer::KvLayout& layout() const { return runner_->layout(); }
  const model::ModelConfig& config() const { return runner_->config(); }
  const runtime::ModelRunner& runner() const { return *runner_; }
  int32_t max_model_len() const {
    return runner_->config().max_position_embeddings;
  }

  // Takes the prompt's blocks plus one and describes the prompt's blocks
  // for the prefill node. INVALID_ARGUMENT for a bad request, a layout that
  // is not ours or a request that could never fit this node's pool,
  // ALREADY_EXISTS for a duplicate id, RESOURCE_EXHAUSTED when the pool (or
  // the receiver's staging) is full.
  // `transport`: the KV transport the router chose for the pair (nullopt:
  // the receiver's default); INVALID_ARGUMENT when this node has none such.
  // `prompt` (optional, num_prompt_tokens long): with prefix caching, the
  // prompt's leading full blocks this node holds are linked into the
  // reservation instead of received (the descriptor's first_block says how
  // many; the block of the prompt's last token always comes from the
  // prefill node), and StartDecode must then bring the same prompt.
  absl::StatusOr<kv_transfer::KvDescriptor> Reserve(
      uint64_t request_id, int32_t num_prompt_tokens, int32_t max_new_tokens,
      const kv_transfer::KvLayout& expected, absl::Duration ttl,
      std::optional<kv_transfer::Transport> transport = std::nullopt,
      std::span<const int32_t> prompt = {});

  // How long a reservation asked for with `ttl` lasts (0: the default).
  absl::Duration ReservationTtl(absl::Duration ttl) const {
    return ttl > absl::ZeroDuration() ? ttl : options_.default_reservation_ttl;
  }

  // Admits a reserved request whose KV is complete, with its prompt (kept
  // to recompute the KV after a preemption) and its first token (sampled
  // by the prefill node; the stream starts at token 2, since the router
  // already sent token 1). FAILED_PRECONDITION when the reservation is
  // unknown or expired, INVALID_ARGUMENT for a prompt of another length
  // than reserved.
  absl::StatusOr<std::shared_ptr<DecodeStream>> StartDecode(
      uint64_t request_id, std::vector<int32_t> prompt, int32_t first_token,
      const model::SamplingParams& params);

  // Colocated role: runs a whole request on this node (prefill chunks
  // piggybacked on the running decodes, then decode); the stream carries
  // every token, the first included. FAILED_PRECONDITION unless the node
  // takes whole requests (max_colocated_waiting > 0), INVALID_ARGUMENT for
  // a bad prompt or one that could never fit this node's pool,
  // RESOURCE_EXHAUSTED when max_colocated_waiting requests already wait,
  // ALREADY_EXISTS for a known id.
  absl::StatusOr<std::shared_ptr<DecodeStream>> StartColocated(
      uint64_t request_id, std::vector<int32_t> prompt,
      const model::SamplingParams& params);
  bool colocated() const { return options_.max_colocated_waiting > 0; }

  // Frees a reservation or cancels a running request; false if unknown.
  bool Release(uint64_t request_id);

  DecodeLoad Load();
  // The engine loop's counters and queue lengths (metrics).
  runtime::LoopLoad loop_load() { return loop_->Load(); }

 private:
  class Policy;
  struct Reservation {
    std::vector<BlockId> blocks;
    // Prefix-cache uids of the leading blocks that were linked, not
    // received, and the prompt their KV belongs to (empty when none).
    std::vector<uint64_t> cached_uids;
    std::vector<int32_t> prompt;
    int32_t prompt_len = 0;
    int32_t max_new_tokens = 0;
    absl::Time expires;
  };

  DecodeEngine() = default;
  // Moves a reservation's blocks to the quarantine and drops its staging.
  void QuarantineLocked(uint64_t id, Reservation r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Loop thread, loop lock held: expiries and the end of quarantines.
  void Housekeeping(runtime::Scheduler& scheduler);

  DecodeEngineOptions options_;
  std::unique_ptr<runtime::ModelRunner> runner_;
  std::unique_ptr<kv_transfer::KvReceiver> receiver_;
  std::unique_ptr<runtime::RolePolicy> policy_;

  // Lock order: the loop's lock, then mu_.
  absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Reservation> reservations_ ABSL_GUARDED_BY(mu_);
  // Started requests, for Release.
  // Whole requests (StartColocated): nothing to land before their first
  // step.
  absl::flat_hash_set<uint64_t> colocated_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::weak_ptr<DecodeStream>> streams_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<absl::Time, std::vector<BlockId>>> quarantine_
      ABSL_GUARDED_BY(mu_);

  std::unique_ptr<runtime::EngineLoop> loop_;  // destroyed first
};

}  // namespace duet::decode_node

#endif  // DUET_DECODE_NODE_DECODE_ENGINE_H_
