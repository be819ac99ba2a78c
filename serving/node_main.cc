#include "serving/node_main.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "metrics/metrics_server.h"
#include "serving/server_util.h"

namespace duet::serving {

absl::Status ValidateNodeAddresses(const NodeAddresses& a) {
  if (a.model.empty()) return absl::InvalidArgumentError("--model is required");
  if (a.router.empty()) {
    return absl::InvalidArgumentError("--router is required");
  }
  if (absl::Status s = ValidateHostPort(a.router, false); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--router: ", s.message()));
  }
  if (absl::Status s = ValidateHostPort(a.listen, true); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--listen: ", s.message()));
  }
  if (a.metrics_port < 0 || a.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics-port must be in [0, 65535]");
  }
  if (!a.advertise.empty()) {
    if (absl::Status s = ValidateHostPort(a.advertise, false); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--advertise: ", s.message()));
    }
  }
  return absl::OkStatus();
}

int ServeNode(const NodeAddresses& a, grpc::Service* service,
              v1::RegisterRequest registration, RegistryClient::LoadFn load,
              const std::string& program, const std::string& summary,
              const std::string& details, const metrics::Registry* metrics) {
  // Metrics first: a port in use fails before the node joins the cluster.
  std::unique_ptr<http::Server> metrics_server;
  std::string metrics_note;
  if (metrics != nullptr && a.metrics_port > 0) {
    const std::string host = metrics::HttpHostOf(a.listen);
    auto started = metrics::StartMetricsServer(host, a.metrics_port, metrics);
    if (!started.ok()) {
      DUET_LOG(ERROR) << "--metrics-port: " << started.status();
      return 1;
    }
    metrics_server = std::move(*started);
    metrics_note = absl::StrCat(", metrics on http://", host, ":",
                                metrics_server->port(), "/metrics");
  }
  auto server = StartServer(
      a.listen, {service},
      security::ServerCredentials(a.tls, /*require_client_cert=*/true));
  if (!server.ok()) {
    DUET_LOG(ERROR) << server.status();
    return 1;
  }
  const std::string address =
      a.advertise.empty() ? server->bound_address : a.advertise;
  registration.set_address(address);
  registration.set_model_name(a.model);
  RegistryClient registry(a.router, std::move(registration), std::move(load),
                          security::ChannelCredentials(a.tls));
  registry.Start();
  std::printf("%s serving %s %s on %s: %s, router %s%s\n", program.c_str(),
              a.model.c_str(), summary.c_str(), address.c_str(),
              details.c_str(), a.router.c_str(), metrics_note.c_str());
  std::fflush(stdout);
  const int sig = WaitForShutdownSignal();
  DUET_LOG(INFO) << "signal " << sig << ": shutting down";
  // In-flight streams see their contexts cancelled and end promptly.
  server->server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (metrics_server != nullptr) metrics_server->Stop(absl::ZeroDuration());
  return 0;
}

}  // namespace duet::serving
