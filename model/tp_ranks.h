// The ranks of a tensor-parallel model inside one process (DESIGN.md §5):
// one Transformer per rank, each on its own backend and communicator, and
// one worker thread per rank that runs what every rank must run for a step.
// The callers (model::Engine, runtime::ModelRunner) keep one scheduler and
// hand each step to all ranks at once.
#ifndef DUET_MODEL_TP_RANKS_H_
#define DUET_MODEL_TP_RANKS_H_

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "kernels/communicator.h"
#include "model/transformer.h"

namespace duet::model {

// N threads; RunAll runs fn(rank) on thread `rank` for every rank and
// returns when all are done. A device backend stays on one thread, so its
// CUDA context and stream are never shared.
class RankWorkers {
 public:
  explicit RankWorkers(int size);
  ~RankWorkers();  // joins the threads
  RankWorkers(const RankWorkers&) = delete;
  RankWorkers& operator=(const RankWorkers&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }
  // The first error of any rank (the lowest rank's among several), or OK.
  absl::Status RunAll(const std::function<absl::Status(int rank)>& fn);

 private:
  void Loop(int rank);

  absl::Mutex mu_;
  const std::function<absl::Status(int)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<absl::Status> results_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

// Makes rank `rank`'s communicator, called on that rank's thread with its
// backend, for all ranks at once (an NCCL group forms only when every rank
// joins).
using CommunicatorFactory =
    std::function<absl::StatusOr<std::unique_ptr<kernels::Communicator>>(
        int rank, kernels::Backend& backend)>;

struct TpRanks {
  // Declared before the models: destroyed after them (models hold raw
  // communicator pointers).
  std::vector<std::unique_ptr<kernels::Communicator>> comms;
  std::vector<std::unique_ptr<Transformer>> models;
  std::unique_ptr<RankWorkers> workers;

  int size() const { return static_cast<int>(models.size()); }

  // Runs `step` on every rank (rank r on caches[r]; one rank inline) and
  // returns rank 0's draws: every rank samples the same all-reduced logits
  // with the same specs. `on_layer` runs on rank 0 only (under TP after the
  // layer's all-reduce, which every rank's KV writes precede).
  absl::StatusOr<std::vector<int32_t>> ForwardSample(
      const kernels::StepInputs& step, std::span<const KvCacheStorage> caches,
      int32_t block_size, std::span<const kernels::SampleSpec> specs,
      const Transformer::LayerHook& on_layer = nullptr);
  // With penalties and logprobs (Transformer::ForwardSample); rank 0's
  // draws and logprobs land in `tokens` and `logprobs`.
  absl::Status ForwardSample(const kernels::StepInputs& step,
                             std::span<const KvCacheStorage> caches,
                             int32_t block_size,
                             const kernels::SampleBatch& batch,
                             std::span<int32_t> tokens,
                             std::span<kernels::TokenLogprobs> logprobs,
                             const Transformer::LayerHook& on_layer = nullptr);
};

// Loads `model_dir` as backends.size() ranks, each on its own thread
// (backends[r] for rank r). One backend: no communicator, no threads.
// A failing rank aborts its communicator so the others fail instead of
// waiting; the first error is returned.
absl::StatusOr<TpRanks> LoadTpRanks(
    const std::string& model_dir,
    std::vector<std::unique_ptr<kernels::Backend>> backends,
    const CommunicatorFactory& make_comm);

}  // namespace duet::model

#endif  // DUET_MODEL_TP_RANKS_H_
