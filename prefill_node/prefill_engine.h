// The prefill role on the shared runtime: requests are chunk-prefilled by
// the engine loop under the token budget (FCFS, several requests' chunks in
// one forward pass, earlier chunks' KV read back from this node's own
// cache); after every step the prefill policy pushes the blocks each chunk
// wrote into the request's decode node (kv_transfer), and a request ends at
// its first token, which the caller gets with the timings.
#ifndef DUET_PREFILL_NODE_PREFILL_ENGINE_H_
#define DUET_PREFILL_NODE_PREFILL_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"
#include "model/sampler.h"
#include "runtime/engine_loop.h"
#include "runtime/model_runner.h"

namespace duet::prefill_node {

struct PrefillEngineOptions {
  int32_t max_num_batched_tokens = 2048;
  int32_t max_num_seqs = 256;
  absl::Duration transfer_timeout = absl::Seconds(10);
};

struct PrefillResult {
  int32_t first_token = 0;
  double queue_ms = 0;     // submit -> first chunk scheduled
  double prefill_ms = 0;   // first chunk scheduled -> first token sampled
  double transfer_ms = 0;  // time spent in KV sends
};

// One request's handle. Thread-safe.
class PrefillJob : public runtime::RequestSink {
 public:
  // Waits up to `timeout`; nullopt when still running.
  std::optional<absl::StatusOr<PrefillResult>> Wait(absl::Duration timeout);

  // RequestSink (loop thread).
  void OnScheduled() override;
  void OnToken(int32_t token) override;
  void OnFinish(runtime::FinishReason reason, absl::Status status) override;

 private:
  friend class PrefillPolicy;
  friend class PrefillEngine;
  absl::Notification done_;
  absl::StatusOr<PrefillResult> result_ = absl::UnknownError("not finished");
  // Loop thread only until done_.
  kv_transfer::KvDescriptor dest_;
  PrefillResult partial_;
  absl::Time submitted_;
  absl::Time started_;
};

class PrefillEngine {
 public:
  using SenderFactory =
      std::function<absl::StatusOr<std::unique_ptr<kv_transfer::KvSender>>(
          runtime::ModelRunner&)>;

  static absl::StatusOr<std::unique_ptr<PrefillEngine>> Create(
      std::unique_ptr<runtime::ModelRunner> runner,
      const PrefillEngineOptions& options, const SenderFactory& sender);
  ~PrefillEngine();  // stops the loop; pending jobs fail CANCELLED

  const kv_transfer::KvLayout& layout() const { return runner_->layout(); }
  const model::ModelConfig& config() const { return runner_->config(); }
  const runtime::ModelRunner& runner() const { return *runner_; }
  int32_t max_model_len() const {
    return runner_->config().max_position_embeddings;
  }

  // Validates and queues a request (INVALID_ARGUMENT for an empty or too
  // long prompt, out-of-vocabulary ids, bad sampling params, a descriptor
  // with another layout or too few blocks, a prompt larger than this node's
  // pool).
  absl::StatusOr<std::shared_ptr<PrefillJob>> Submit(
      uint64_t request_id, std::vector<int32_t> prompt,
      const model::SamplingParams& params, kv_transfer::KvDescriptor dest,
      absl::Time deadline);

  // Prompt tokens queued or in progress (for the router's placement).
  int64_t queued_tokens();
  int32_t free_blocks();
  int32_t total_blocks() const { return runner_->num_blocks(); }
  int32_t active_requests();

 private:
  PrefillEngine() = default;

  std::unique_ptr<runtime::ModelRunner> runner_;
  std::unique_ptr<runtime::RolePolicy> policy_;
  std::unique_ptr<runtime::EngineLoop> loop_;  // destroyed first
};

}  // namespace duet::prefill_node

#endif  // DUET_PREFILL_NODE_PREFILL_ENGINE_H_
