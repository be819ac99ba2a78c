// Small helpers every duet server binary uses: start a gRPC server on
// host:port (port 0 picks a free one) and report the bound address, and
// wait for SIGINT/SIGTERM.
#ifndef DUET_SERVING_SERVER_UTIL_H_
#define DUET_SERVING_SERVER_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace duet::serving {

struct RunningServer {
  std::unique_ptr<grpc::Server> server;
  std::string bound_address;  // host:port with the real port
};

// Validates "host:port" and starts a server with `services` (plaintext
// when `credentials` is null).
absl::StatusOr<RunningServer> StartServer(
    const std::string& listen, const std::vector<grpc::Service*>& services,
    std::shared_ptr<grpc::ServerCredentials> credentials = nullptr);

// InvalidArgument unless `address` is host:port with a port in [0, 65535].
absl::Status ValidateHostPort(const std::string& address, bool allow_port_0);

// Blocks SIGINT and SIGTERM in the calling thread. Call first thing in
// main(), before any thread exists, so every thread inherits the mask and the
// signal can only be taken by WaitForShutdownSignal().
void BlockShutdownSignals();
// Blocks until SIGINT or SIGTERM arrives; returns the signal number.
int WaitForShutdownSignal();

}  // namespace duet::serving

#endif  // DUET_SERVING_SERVER_UTIL_H_
