#include "model/tp_ranks.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace duet::model {

RankWorkers::RankWorkers(int size) : results_(static_cast<size_t>(size)) {
  for (int r = 0; r < size; ++r) {
    threads_.emplace_back([this, r] { Loop(r); });
  }
}

RankWorkers::~RankWorkers() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void RankWorkers::Loop(int rank) {
  int64_t seen = 0;
  while (true) {
    const std::function<absl::Status(int)>* job = nullptr;
    {
      absl::MutexLock lock(&mu_);
      struct Arg {
        RankWorkers* w;
        int64_t seen;
      } arg{this, seen};
      mu_.Await(absl::Condition(
          +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return a->w->stop_ || a->w->generation_ != a->seen;
          },
          &arg));
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    absl::Status s = (*job)(rank);
    absl::MutexLock lock(&mu_);
    results_[static_cast<size_t>(rank)] = std::move(s);
    --pending_;
  }
}

absl::Status RankWorkers::RunAll(
    const std::function<absl::Status(int rank)>& fn) {
  absl::MutexLock lock(&mu_);
  job_ = &fn;
  pending_ = size();
  ++generation_;
  mu_.Await(absl::Condition(
      +[](int* pending) { return *pending == 0; }, &pending_));
  job_ = nullptr;
  for (const absl::Status& s : results_) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> TpRanks::ForwardSample(
    const kernels::StepInputs& step, std::span<const KvCacheStorage> caches,
    int32_t block_size, std::span<const kernels::SampleSpec> specs,
    const Transformer::LayerHook& on_layer) {
  if (models.size() == 1) {
    return models[0]->ForwardSample(step, caches[0], block_size, specs,
                                    on_layer);
  }
  std::vector<std::vector<int32_t>> drawn(models.size());
  absl::Status s = workers->RunAll([&](int r) -> absl::Status {
    const size_t i = static_cast<size_t>(r);
    absl::StatusOr<std::vector<int32_t>> d = models[i]->ForwardSample(
        step, caches[i], block_size, specs, r == 0 ? on_layer : nullptr);
    if (!d.ok()) return d.status();
    drawn[i] = *std::move(d);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return std::move(drawn[0]);
}

absl::Status TpRanks::ForwardSample(const kernels::StepInputs& step,
                                    std::span<const KvCacheStorage> caches,
                                    int32_t block_size,
                                    const kernels::SampleBatch& batch,
                                    std::span<int32_t> tokens,
                                    std::span<kernels::TokenLogprobs> logprobs,
                                    const Transformer::LayerHook& on_layer) {
  if (models.size() == 1) {
    return models[0]->ForwardSample(step, caches[0], block_size, batch, tokens,
                                    logprobs, on_layer);
  }
  // Every rank samples the same all-reduced logits; ranks past 0 write
  // into scratch.
  std::vector<std::vector<int32_t>> other_tokens(models.size());
  std::vector<std::vector<kernels::TokenLogprobs>> other_logprobs(
      models.size());
  return workers->RunAll([&](int r) -> absl::Status {
    const size_t i = static_cast<size_t>(r);
    if (r == 0) {
      return models[0]->ForwardSample(step, caches[0], block_size, batch,
                                      tokens, logprobs, on_layer);
    }
    other_tokens[i].resize(tokens.size());
    other_logprobs[i].resize(logprobs.size());
    return models[i]->ForwardSample(step, caches[i], block_size, batch,
                                    other_tokens[i], other_logprobs[i],
                                    nullptr);
  });
}

absl::StatusOr<TpRanks> LoadTpRanks(
    const std::string& model_dir,
    std::vector<std::unique_ptr<kernels::Backend>> backends,
    const CommunicatorFactory& make_comm) {
  const int n = static_cast<int>(backends.size());
  if (n < 1) return absl::InvalidArgumentError("no backend to load onto");
  TpRanks ranks;
  if (n == 1) {
    auto m = Transformer::Load(model_dir, std::move(backends[0]));
    if (!m.ok()) return m.status();
    ranks.models.push_back(std::move(*m));
    return ranks;
  }
  ranks.comms.resize(static_cast<size_t>(n));
  ranks.models.resize(static_cast<size_t>(n));
  ranks.workers = std::make_unique<RankWorkers>(n);
  const absl::Status s = ranks.workers->RunAll([&](int r) -> absl::Status {
    auto comm = make_comm(r, *backends[static_cast<size_t>(r)]);
    if (!comm.ok()) {
      return absl::Status(comm.status().code(),
                          absl::StrCat("rank ", r, ": ", comm.status().message()));
    }
    ranks.comms[static_cast<size_t>(r)] = std::move(*comm);
    auto m = Transformer::Load(model_dir,
                               std::move(backends[static_cast<size_t>(r)]),
                               TpShard{r, n},
                               ranks.comms[static_cast<size_t>(r)].get());
    if (!m.ok()) {
      // The others may already wait in a collective: stop them.
      ranks.comms[static_cast<size_t>(r)]->Abort();
      return absl::Status(m.status().code(),
                          absl::StrCat("rank ", r, ": ", m.status().message()));
    }
    ranks.models[static_cast<size_t>(r)] = std::move(*m);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return ranks;
}

}  // namespace duet::model
