#include "router/router_metrics.h"

#include <algorithm>
#include <utility>

#include "common/status.h"

namespace duet::router {

absl::Status RegisterRoutingMetrics(metrics::Registry* registry,
                                    const RoutingCounters* counters) {
  constexpr absl::string_view kHelp =
      "Prompt tokens of placed requests whose KV a prefix cache held: "
      "predicted (the router's record of the node it chose), prefill (as "
      "the prefill nodes reported: not computed) or decode (as the decode "
      "nodes reported: not transferred); see --routing.";
  const std::pair<const char*, const std::atomic<int64_t>*> sources[] = {
      {"predicted", &counters->predicted_tokens},
      {"prefill", &counters->prefill_cached_tokens},
      {"decode", &counters->decode_cached_tokens}};
  // Not a structured binding: clang 14 (the fuzz build) cannot capture one.
  for (const auto& source : sources) {
    const std::atomic<int64_t>* value = source.second;
    DUET_RETURN_IF_ERROR(registry->AddCallback(
        "duet:router_prefix_cached_tokens_total", kHelp,
        metrics::Type::kCounter,
        [value] { return double(value->load(std::memory_order_relaxed)); },
        {{"source", source.first}}));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<RouterMetrics>> RouterMetrics::Create(
    metrics::Registry* registry, std::function<int()> waiting) {
  std::unique_ptr<RouterMetrics> m(new RouterMetrics());
  RouterMetrics* self = m.get();
  DUET_ASSIGN_OR_RETURN(
      m->ttft_, registry->AddHistogram(
                    "duet:time_to_first_token_seconds",
                    "From the router receiving a request to its first token "
                    "going to the client.",
                    metrics::TimeToFirstTokenBuckets()));
  DUET_ASSIGN_OR_RETURN(
      m->itl_, registry->AddHistogram(
                   "duet:inter_token_latency_seconds",
                   "Time between tokens going to the client after the first "
                   "(vLLM's time_per_output_token): a message of n tokens "
                   "after a gap of t counts n times t/n.",
                   metrics::InterTokenLatencyBuckets()));
  DUET_ASSIGN_OR_RETURN(
      m->e2e_, registry->AddHistogram(
                   "duet:e2e_request_latency_seconds",
                   "From the router receiving a request to its end, whatever "
                   "the finished_reason.",
                   metrics::RequestLatencyBuckets()));
  const char* kSuccessHelp =
      "Requests that ended, by finished_reason: stop (a stop token), length "
      "(max_tokens), stop_string, abort (the client cancelled or left), "
      "error (failed; invalid requests are not counted).";
  const std::pair<const char*, metrics::Counter**> reasons[] = {
      {"stop", &m->stop_},
      {"length", &m->length_},
      {"stop_string", &m->stop_string_},
      {"abort", &m->abort_},
      {"error", &m->error_}};
  for (const auto& [reason, counter] : reasons) {
    DUET_ASSIGN_OR_RETURN(
        *counter,
        registry->AddCounter("duet:request_success_total", kSuccessHelp,
                             {{"finished_reason", reason}}));
  }
  DUET_ASSIGN_OR_RETURN(
      m->prompt_tokens_,
      registry->AddCounter("duet:prompt_tokens_total",
                           "Prompt tokens of requests placed on a node."));
  DUET_ASSIGN_OR_RETURN(
      m->generation_tokens_,
      registry->AddCounter(
          "duet:generation_tokens_total",
          "Generated tokens sent to clients (the completion_tokens of their "
          "usage)."));
  const char* kPathHelp =
      "Requests placed, by path: disagg (a prefill node, then a decode "
      "node) or colocated (one colocated node runs it whole); see --policy.";
  DUET_ASSIGN_OR_RETURN(
      m->disagg_, registry->AddCounter("duet:router_requests_total", kPathHelp,
                                       {{"path", "disagg"}}));
  DUET_ASSIGN_OR_RETURN(
      m->colocated_, registry->AddCounter("duet:router_requests_total",
                                          kPathHelp, {{"path", "colocated"}}));
  auto wait = std::make_shared<std::function<int()>>(std::move(waiting));
  DUET_RETURN_IF_ERROR(registry->AddCallback(
      "duet:num_requests_waiting",
      "Requests in the router's admission queue (every node full, first "
      "come first served; --max-queued-requests).",
      metrics::Type::kGauge, [wait] { return double((*wait)()); }));
  DUET_RETURN_IF_ERROR(registry->AddCallback(
      "duet:num_requests_running",
      "Requests placed on a path and not finished, less those waiting in the "
      "admission queue.",
      metrics::Type::kGauge, [wait, self] {
        const int64_t n = self->in_flight_.load(std::memory_order_relaxed) -
                          int64_t{(*wait)()};
        return double(std::max<int64_t>(n, 0));
      }));
  return m;
}

void RouterMetrics::Started(RequestRecord& r, bool colocated,
                            size_t prompt_tokens) {
  r.started = true;
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  (colocated ? colocated_ : disagg_)->Inc();
  prompt_tokens_->Inc(static_cast<double>(prompt_tokens));
}

void RouterMetrics::Tokens(RequestRecord& r, int n) {
  if (n <= 0) return;
  const absl::Time now = absl::Now();
  if (!r.first_token_seen) {
    r.first_token_seen = true;
    ttft_->Observe(absl::ToDoubleSeconds(now - r.start));
  } else {
    const double each = absl::ToDoubleSeconds(now - r.last_token) / n;
    for (int i = 0; i < n; ++i) itl_->Observe(each);
  }
  r.last_token = now;
  generation_tokens_->Inc(n);
}

void RouterMetrics::Ended(const RequestRecord& r, grpc::StatusCode code) {
  if (!r.started) return;
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
  e2e_->Observe(absl::ToDoubleSeconds(absl::Now() - r.start));
  metrics::Counter* reason = error_;
  if (code == grpc::StatusCode::CANCELLED) {
    reason = abort_;
  } else if (code == grpc::StatusCode::OK && r.finish.has_value()) {
    switch (*r.finish) {
      case v1::FINISH_REASON_STOP_TOKEN:
        reason = stop_;
        break;
      case v1::FINISH_REASON_MAX_TOKENS:
        reason = length_;
        break;
      case v1::FINISH_REASON_STOP_STRING:
        reason = stop_string_;
        break;
      case v1::FINISH_REASON_CANCELLED:
        reason = abort_;
        break;
      default:
        break;
    }
  }
  reason->Inc();
}

}  // namespace duet::router
