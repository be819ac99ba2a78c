// The Prometheus metrics every node exports on --metrics-port (README.md's
// "Metrics" section lists them): the engine loop's queue lengths, KV pool
// use, preemptions and token counts, read from the loop at each scrape;
// KV transfer bytes and times, recorded as transfers end; and the prefix
// cache's counters, read from the scheduler.
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

 private:
  NodeMetrics() = default;
  metrics::Counter* kv_bytes_ = nullptr;
  metrics::Histogram* kv_seconds_ = nullptr;  // prefill nodes only
};

}  // namespace duet::serving

#endif  // DUET_SERVING_NODE_METRICS_H_
