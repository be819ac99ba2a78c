// The prefill role on the shared runtime: requests are chunk-prefilled by
// the engine loop under the token budget (FCFS, several requests' chunks in
// one forward pass, earlier chunks' KV read back from this node's own
// cache). The prefill policy hands the KV each chunk writes to the
// asynchronous KV sender (kv_transfer/async_sender.h), by default layer by
// layer as the forward pass queues each layer's KV writes, so the copies
// overlap the rest of the pass; the loop never waits for a transfer. A
// request's compute ends at its first token; the caller gets it (with the
// timings) once all of its KV is visible at the decode node, and its
// blocks here stay taken until then.
#ifndef DUET_PREFILL_NODE_PREFILL_ENGINE_H_
#define DUET_PREFILL_NODE_PREFILL_ENGINE_H_

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kv_transfer/async_sender.h"
#include "kv_transfer/kv_transfer.h"
#include "model/sampler.h"
#include "runtime/engine_loop.h"
#include "runtime/model_runner.h"

namespace duet::prefill_node {

// When KV leaves the prefill node (--kv-push).
enum class KvPush {
  kLayer,    // each layer of each chunk once the pass queued its KV writes
  kChunk,    // each chunk's blocks (every layer) after its step
  kRequest,  // all blocks after the last chunk (no overlap; for comparison)
};
absl::StatusOr<KvPush> ParseKvPush(absl::string_view name);
const char* KvPushName(KvPush push);

struct PrefillEngineOptions {
  int32_t max_num_batched_tokens = 2048;
  int32_t max_num_seqs = 256;
  // Bound of each piece's copy (and of the whole transfer after the
  // request's compute ended); the request's deadline bounds it too.
  absl::Duration transfer_timeout = absl::Seconds(10);
  KvPush push = KvPush::kLayer;
  runtime::SchedulingPolicy scheduling = runtime::SchedulingPolicy::kPiggyback;
  bool enable_prefix_caching = false;
  // Each request's KV handover as it ends (metrics; on the sender thread).
  kv_transfer::AsyncKvSender::Observer on_transfer;
};

struct PrefillResult {
  int32_t first_token = 0;
  // When the request asked for logprobs.
  std::optional<kernels::TokenLogprobs> first_logprobs;
  double queue_ms = 0;    // submit -> first chunk scheduled
  double prefill_ms = 0;  // first chunk scheduled -> first token sampled
  // First token sampled -> all KV visible at the decode node: the transfer
  // time not hidden behind compute.
  double transfer_ms = 0;
  // Prompt tokens taken from this node's prefix cache (not computed).
  int32_t cached_tokens = 0;
};

// One request's handle. Thread-safe.
class PrefillJob : public runtime::RequestSink {
 public:
  // Waits up to `timeout`; nullopt when still running.
  std::optional<absl::StatusOr<PrefillResult>> Wait(absl::Duration timeout);

  // Where the KV goes, for a job submitted without it (PrefillEngine::
  // SetDestination validates it first): its pieces wait in the sender
  // until then, and an error fails the job's transfer. Any thread; the
  // first call stands.
  void SetDestination(absl::StatusOr<kv_transfer::KvDescriptor> dest);

  // RequestSink (loop thread). OnFinish records how the compute ended; the
  // job completes when the KV transfer does.
  void OnScheduled(int32_t cached_prompt_tokens) override;
  void OnToken(int32_t token) override;
  void OnTokenWithLogprobs(int32_t token,
                           const kernels::TokenLogprobs& logprobs) override;
  void OnFinish(runtime::FinishReason reason, absl::Status status) override;

 private:
  friend class PrefillPolicy;
  friend class PrefillEngine;
  // The transfer ended with `transfer` (any thread, once).
  void Complete(absl::Status transfer);
  // Opens the job's transfer on `sender` (loop thread, at admission), with
  // the destination if it came already.
  absl::Status OpenTransfer(kv_transfer::AsyncKvSender* sender,
                            absl::Time deadline, absl::Duration piece_timeout);

  absl::Notification done_;
  absl::StatusOr<PrefillResult> result_ = absl::UnknownError("not finished");
  uint64_t key_ = 0;
  int64_t num_prompt_tokens_ = 0;
  absl::Mutex dest_mu_;
  // Set before the transfer opens, else handed to the sender at once.
  std::optional<absl::StatusOr<kv_transfer::KvDescriptor>> dest_
      ABSL_GUARDED_BY(dest_mu_);
  kv_transfer::AsyncKvSender* sender_ ABSL_GUARDED_BY(dest_mu_) = nullptr;
  bool dest_set_ ABSL_GUARDED_BY(dest_mu_) = false;
  // Loop thread only until done_.
  PrefillResult partial_;
  absl::Status compute_status_ = absl::UnknownError("not finished");
  bool transfer_open_ = false;
  absl::Time submitted_;
  absl::Time started_;
  absl::Time computed_;  // first token sampled
};

class PrefillPolicy;

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
  // As Submit, the destination to come (SetDestination): the prompt runs
  // while the caller asks the decode node where to write.
  absl::StatusOr<std::shared_ptr<PrefillJob>> SubmitPending(
      uint64_t request_id, std::vector<int32_t> prompt,
      const model::SamplingParams& params, absl::Time deadline);
  // `dest` for a job of SubmitPending, checked against its prompt and this
  // node's layout (INVALID_ARGUMENT fails the job's transfer), or the error
  // that there is none.
  void SetDestination(PrefillJob& job,
                      absl::StatusOr<kv_transfer::KvDescriptor> dest) const;

  // Prompt tokens queued or in progress (for the router's placement).
  int64_t queued_tokens();
  int32_t free_blocks();
  int32_t total_blocks() const { return runner_->num_blocks(); }
  int32_t active_requests();
  // The engine loop's counters and queue lengths (metrics).
  runtime::LoopLoad loop_load() { return loop_->Load(); }

 private:
  PrefillEngine() = default;
  // INVALID_ARGUMENT unless `dest` fits a prompt of `prompt_tokens`.
  absl::Status CheckDestination(int64_t prompt_tokens,
                                const kv_transfer::KvDescriptor& dest) const;
  absl::StatusOr<std::shared_ptr<PrefillJob>> SubmitJob(
      uint64_t request_id, std::vector<int32_t> prompt,
      const model::SamplingParams& params, absl::Time deadline,
      std::optional<kv_transfer::KvDescriptor> dest);

  std::unique_ptr<runtime::ModelRunner> runner_;
  std::unique_ptr<kv_transfer::AsyncKvSender> sender_;
  std::unique_ptr<PrefillPolicy> policy_;
  std::unique_ptr<runtime::EngineLoop> loop_;  // destroyed first
};

}  // namespace duet::prefill_node

#endif  // DUET_PREFILL_NODE_PREFILL_ENGINE_H_
