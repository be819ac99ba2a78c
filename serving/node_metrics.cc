#include "serving/node_metrics.h"

#include <utility>

#include "common/status.h"

namespace duet::serving {

absl::StatusOr<std::unique_ptr<NodeMetrics>> NodeMetrics::Create(
    metrics::Registry* registry, std::function<runtime::LoopLoad()> load,
    bool sends_kv) {
  using metrics::Type;
  std::unique_ptr<NodeMetrics> m(new NodeMetrics());
  // Shared by the callbacks below.
  auto read =
      std::make_shared<std::function<runtime::LoopLoad()>>(std::move(load));
  struct Gauge {
    const char* name;
    const char* help;
    Type type;
    std::function<double(const runtime::LoopLoad&)> value;
  };
  const Gauge gauges[] = {
      {"duet:num_requests_running",
       "Requests in this node's running batch (scheduled each step).",
       Type::kGauge,
       [](const runtime::LoopLoad& l) { return double(l.running); }},
      {"duet:num_requests_waiting",
       "Requests admitted to this node and waiting for a place in the batch "
       "(preempted ones included).",
       Type::kGauge,
       [](const runtime::LoopLoad& l) { return double(l.waiting); }},
      {"duet:kv_cache_usage_perc",
       "Share of this node's KV cache blocks in use (0 to 1; blocks reserved "
       "for KV still on its way count as used).",
       Type::kGauge,
       [](const runtime::LoopLoad& l) {
         return l.total_blocks <= 0
                    ? 0.0
                    : 1.0 - double(l.free_blocks) / double(l.total_blocks);
       }},
      {"duet:num_preemptions_total",
       "Requests preempted (KV freed, recomputed later) since the node "
       "started.",
       Type::kCounter,
       [](const runtime::LoopLoad& l) { return double(l.preemptions); }},
      {"duet:prompt_tokens_total",
       "Prompt tokens this node prefilled, counted once per request when its "
       "prefill ends (KV that arrived from a prefill node is not counted).",
       Type::kCounter,
       [](const runtime::LoopLoad& l) { return double(l.prompt_tokens); }},
      {"duet:generation_tokens_total",
       "Tokens this node sampled (a prefill node samples each request's "
       "first token; a decode node the rest).",
       Type::kCounter,
       [](const runtime::LoopLoad& l) { return double(l.generation_tokens); }},
  };
  for (const Gauge& g : gauges) {
    DUET_RETURN_IF_ERROR(registry->AddCallback(
        g.name, g.help, g.type,
        [read, value = g.value] { return value((*read)()); }));
  }
  DUET_ASSIGN_OR_RETURN(
      m->kv_bytes_,
      registry->AddCounter(
          "duet:kv_transfer_bytes_total",
          "KV cache bytes moved between nodes (whole model, every "
          "tensor-parallel rank): sent by a prefill node (pieces that reached "
          "the decode node) or received by a decode node (KV landed in its "
          "pool).",
          {{"direction", sends_kv ? "sent" : "received"}}));
  if (sends_kv) {
    DUET_ASSIGN_OR_RETURN(
        m->kv_seconds_,
        registry->AddHistogram(
            "duet:kv_transfer_seconds",
            "Per request, from the opening of its KV transfer (its first "
            "chunk admitted) until all of its KV is visible at the decode node "
            "or the transfer failed; overlaps the prefill compute.",
            metrics::ExponentialBuckets(0.0005, 2, 16)));
  }
  // Prefix caching, read from the scheduler at scrape time.
  const Gauge cache[] = {
      {"duet:prefix_cache_queries_total",
       "Prompt tokens looked up in the prefix cache when requests were "
       "admitted (vLLM's prefix_cache_queries, in tokens).",
       Type::kCounter,
       [](const runtime::LoopLoad& l) {
         return double(l.prefix_cache_queries);
       }},
      {"duet:prefix_cache_hits_total",
       "Prompt tokens whose KV came from the prefix cache instead of being "
       "computed (vLLM's prefix_cache_hits, in tokens).",
       Type::kCounter,
       [](const runtime::LoopLoad& l) { return double(l.prefix_cache_hits); }},
      {"duet:prefix_cache_blocks",
       "KV blocks registered in the prefix cache, held by requests or idle.",
       Type::kGauge,
       [](const runtime::LoopLoad& l) { return double(l.cached_blocks); }},
      {"duet:prefix_cache_evictions_total",
       "Idle cached KV blocks evicted (least recently used first) to make "
       "room.",
       Type::kCounter,
       [](const runtime::LoopLoad& l) { return double(l.cache_evictions); }},
  };
  for (const Gauge& g : cache) {
    DUET_RETURN_IF_ERROR(registry->AddCallback(
        g.name, g.help, g.type,
        [read, value = g.value] { return value((*read)()); }));
  }
  return m;
}

void NodeMetrics::RecordKvSent(int64_t bytes, absl::Duration elapsed) {
  kv_bytes_->Inc(static_cast<double>(bytes));
  if (kv_seconds_ != nullptr) {
    kv_seconds_->Observe(absl::ToDoubleSeconds(elapsed));
  }
}

void NodeMetrics::RecordKvReceived(int64_t bytes) {
  kv_bytes_->Inc(static_cast<double>(bytes));
}

}  // namespace duet::serving
