#include "metrics/metrics_server.h"

#include <utility>

namespace duet::metrics {

bool HandleMetrics(const Registry& registry, const http::Request& request,
                   http::Responder& responder) {
  if (request.path != "/metrics") return false;
  if (request.method != "GET") {
    responder.Send(405, "text/plain; charset=utf-8", "/metrics takes GET\n",
                   {{"Allow", "GET"}});
    return true;
  }
  responder.Send(200, kContentType, registry.Render());
  return true;
}

absl::StatusOr<std::unique_ptr<http::Server>> StartMetricsServer(
    const std::string& host, int port, const Registry* registry) {
  http::ServerOptions o;
  o.host = host;
  o.port = port;
  // Scrapes are small and rare: one event-loop thread, few connections.
  o.threads = 1;
  o.max_connections = 64;
  o.max_body_bytes = 4096;
  return http::Server::Start(
      o, [registry](http::Request req, std::shared_ptr<http::Responder> r) {
        if (HandleMetrics(*registry, req, *r)) return;
        if (req.path == "/health") {
          if (req.method != "GET") {
            r->Send(405, "text/plain; charset=utf-8", "/health takes GET\n",
                    {{"Allow", "GET"}});
          } else {
            r->Send(200, "text/plain; charset=utf-8", "ok\n");
          }
          return;
        }
        r->Send(404, "text/plain; charset=utf-8",
                "not found: this port serves /metrics and /health\n");
      });
}

std::string HttpHostOf(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() > 2 && host.front() == '[') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") host = "127.0.0.1";
  return host;
}

}  // namespace duet::metrics
