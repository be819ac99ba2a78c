#include "serving/server_util.h"

#include <csignal>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace duet::serving {

absl::Status ValidateHostPort(const std::string& address, bool allow_port_0) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535 || (port == 0 && !allow_port_0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not host:port with a port in [",
                     allow_port_0 ? 0 : 1, ", 65535]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<RunningServer> StartServer(
    const std::string& listen, const std::vector<grpc::Service*>& services,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  if (absl::Status s = ValidateHostPort(listen, true); !s.ok()) return s;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen,
                           credentials != nullptr
                               ? std::move(credentials)
                               : grpc::InsecureServerCredentials(),
                           &port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(64 << 20);
  RunningServer out;
  out.server = builder.BuildAndStart();
  if (out.server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", listen, " (port in use?)"));
  }
  out.bound_address =
      absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
  return out;
}

namespace {
sigset_t ShutdownSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockShutdownSignals() {
  const sigset_t set = ShutdownSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForShutdownSignal() {
  const sigset_t set = ShutdownSignals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

}  // namespace duet::serving
