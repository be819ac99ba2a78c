// Serving a Registry over HTTP with duet's own server (http/): GET
// /metrics (the text exposition format) and GET /health (200 "ok"), for
// the router's --metrics-port and every node's --metrics-port. The
// router's OpenAI port routes /metrics here too (HandleMetrics).
#ifndef DUET_METRICS_METRICS_SERVER_H_
#define DUET_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "http/server.h"
#include "metrics/metrics.h"

namespace duet::metrics {

// Answers `request` when its path is /metrics (GET: the registry's text;
// another method: 405) and returns true; false (nothing sent) for any other
// path.
bool HandleMetrics(const Registry& registry, const http::Request& request,
                   http::Responder& responder);

// Serves /metrics and /health (404 for anything else) on host:port (port 0
// picks a free one: Server::port()). `registry` must outlive the server.
// Unavailable when the address cannot be bound.
absl::StatusOr<std::unique_ptr<http::Server>> StartMetricsServer(
    const std::string& host, int port, const Registry* registry);

// The host part of a gRPC-style "host:port" / "[v6]:port" listen address,
// as http::ServerOptions::host takes it ("localhost" as 127.0.0.1).
std::string HttpHostOf(const std::string& listen);

}  // namespace duet::metrics

#endif  // DUET_METRICS_METRICS_SERVER_H_
