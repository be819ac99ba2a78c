// What duet-prefill's and duet-decode's main() share: checking the address
// flags, serving, registering with the router, the start-up line and a clean
// shutdown on SIGINT/SIGTERM.
#ifndef DUET_SERVING_NODE_MAIN_H_
#define DUET_SERVING_NODE_MAIN_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "duet/v1/registry.pb.h"
#include "metrics/metrics.h"
#include "security/tls.h"
#include "serving/registry_client.h"

namespace duet::serving {

struct NodeAddresses {
  std::string model;      // --model
  std::string router;     // --router host:port
  std::string listen;     // --listen host:port (port 0: any free port)
  std::string advertise;  // --advertise host:port ("": the bound address)
  // --tls-* / --insecure: the node's port takes only peers with a
  // certificate of the cluster's CA, and it registers with its own.
  security::TlsConfig tls;
  // --metrics-port: /metrics and /health over HTTP on --listen's host; 0 =
  // off.
  int32_t metrics_port = 0;
};

// InvalidArgument naming the flag ("--router: ...") when one is missing or
// malformed.
absl::Status ValidateNodeAddresses(const NodeAddresses& a);

// Serves `service` on a.listen (and `metrics` on a.metrics_port when both
// are set), registers `registration` (its address set to the advertised
// one) with the router, prints
//   "<program> serving <a.model> <summary> on <address>: <details>, router R"
// (then ", metrics on http://H:P/metrics" with a metrics port) and blocks
// until SIGINT/SIGTERM (BlockShutdownSignals() must have run first).
// Returns the process exit code.
int ServeNode(const NodeAddresses& a, grpc::Service* service,
              v1::RegisterRequest registration, RegistryClient::LoadFn load,
              const std::string& program, const std::string& summary,
              const std::string& details,
              const metrics::Registry* metrics = nullptr);

}  // namespace duet::serving

#endif  // DUET_SERVING_NODE_MAIN_H_
