// The Prometheus metrics every node exports on --metrics-port (README.md's
// "Metrics" section lists them): the engine loop's queue lengths, KV pool
// use, preemptions and token counts, read from the loop at each scrape;
// KV transfer bytes and times, recorded as transfers end; and the prefix
// cache's counters.
#ifndef DUET_SERVING_NODE_METRICS_H_
#define DUET_SERVING_NODE_METRICS_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"
#include "runtime/engine_loop.h"

namespace duet::serving {

class NodeMetrics {
 public:
  // Registers the node's metrics in `registry` (which must outlive this).
  // `load` is called at each scrape (with the registry's lock held).
  // `sends_kv`: a prefill node (kv_transfer_seconds, bytes "sent");
  // otherwise bytes "received".
  static absl::StatusOr<std::unique_ptr<NodeMetrics>> Create(
      metrics::Registry* registry, std::function<runtime::LoopLoad()> load,
      bool sends_kv);

  // Prefill side, once per request as its KV handover ends (the async
  // sender's report): the bytes that reached the decode node, and the time
  // from the transfer's opening to its end.
  void RecordKvSent(int64_t bytes, absl::Duration elapsed);
  // Decode side: KV of a request landed in this node's pool.
  void RecordKvReceived(int64_t bytes);
  // For the prefix cache (not built yet): prompt tokens looked up in the
  // cache and those found there, as each request's lookup is made.
  void RecordPrefixCacheLookup(int64_t query_tokens, int64_t hit_tokens);

 private:
  NodeMetrics() = default;
  metrics::Counter* kv_bytes_ = nullptr;
  metrics::Histogram* kv_seconds_ = nullptr;  // prefill nodes only
  metrics::Counter* prefix_queries_ = nullptr;
  metrics::Counter* prefix_hits_ = nullptr;
};

}  // namespace duet::serving

#endif  // DUET_SERVING_NODE_METRICS_H_
