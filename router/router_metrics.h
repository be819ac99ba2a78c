// The router's Prometheus metrics (README.md "Metrics"): request latencies
// as clients see them (time to first token, inter-token latency, end to
// end), finished requests by reason, prompt and generated tokens, requests
// running and queued, and which path (disaggregated or colocated) each
// took. RouterService records into it; main.cc serves it on --metrics-port
// and at /metrics of --http-port.
#ifndef DUET_ROUTER_ROUTER_METRICS_H_
#define DUET_ROUTER_ROUTER_METRICS_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "duet/v1/common.pb.h"
#include "metrics/metrics.h"

namespace duet::router {

// One request's progress, kept by the thread that serves it.
struct RequestRecord {
  bool started = false;  // placed on a path (counted in flight)
  absl::Time start;      // the router received it
  bool first_token_seen = false;
  absl::Time last_token;
  // How it finished, as the client was told (unset when the stream ended
  // without a finished message).
  std::optional<v1::FinishReason> finish;
};

// Prefix-aware routing since start (HealthResponse.routing and
// duet:router_prefix_cached_tokens_total).
struct RoutingCounters {
  std::atomic<int64_t> prompt_tokens{0};     // of requests placed
  std::atomic<int64_t> predicted_tokens{0};  // cached, by the router's record
  std::atomic<int64_t> prefill_cached_tokens{0};  // as the nodes reported
  std::atomic<int64_t> decode_cached_tokens{0};
};

// duet:router_prefix_cached_tokens_total{source=predicted|prefill|decode},
// read from `counters` (which must outlive `registry`'s renders).
absl::Status RegisterRoutingMetrics(metrics::Registry* registry,
                                    const RoutingCounters* counters);

class RouterMetrics {
 public:
  // Registers the router's metrics in `registry` (which must outlive
  // this). `waiting` (called at each scrape, with the registry's lock
  // held): requests in the admission queue.
  static absl::StatusOr<std::unique_ptr<RouterMetrics>> Create(
      metrics::Registry* registry, std::function<int()> waiting);

  // The request was placed on a path ("disagg" or "colocated").
  void Started(RequestRecord& r, bool colocated, size_t prompt_tokens);
  // `n` tokens went to the client: the first observes the time to first
  // token, each later one an inter-token latency (a chunk of n tokens
  // after a gap of t: n observations of t / n).
  void Tokens(RequestRecord& r, int n);
  // The request ended with `code` (its end-to-end latency and reason).
  void Ended(const RequestRecord& r, grpc::StatusCode code);

 private:
  RouterMetrics() = default;
  metrics::Histogram* ttft_ = nullptr;
  metrics::Histogram* itl_ = nullptr;
  metrics::Histogram* e2e_ = nullptr;
  // By finished_reason: stop, length, stop_string, abort, error.
  metrics::Counter* stop_ = nullptr;
  metrics::Counter* length_ = nullptr;
  metrics::Counter* stop_string_ = nullptr;
  metrics::Counter* abort_ = nullptr;
  metrics::Counter* error_ = nullptr;
  metrics::Counter* prompt_tokens_ = nullptr;
  metrics::Counter* generation_tokens_ = nullptr;
  metrics::Counter* disagg_ = nullptr;
  metrics::Counter* colocated_ = nullptr;
  std::atomic<int64_t> in_flight_{0};
};

}  // namespace duet::router

#endif  // DUET_ROUTER_ROUTER_METRICS_H_
