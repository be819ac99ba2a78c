// Starts real duet processes (router, prefill and decode nodes) on loopback
// for end-to-end tests, and stops them. Every process gets --listen
// 127.0.0.1:0; its bound address is read from its start-up line.
#ifndef DUET_TESTS_E2E_LOCAL_CLUSTER_H_
#define DUET_TESTS_E2E_LOCAL_CLUSTER_H_

#include <grpcpp/security/credentials.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "duet/v1/client.grpc.pb.h"
#include "duet/v1/node.grpc.pb.h"

namespace duet::testing {

class Process {
 public:
  // Starts `argv`; stdout is read until a line containing `ready_marker`
  // (returned in ready_line); stderr goes to `log_path`.
  static absl::StatusOr<std::unique_ptr<Process>> Start(
      const std::vector<std::string>& argv, const std::string& log_path,
      const std::string& ready_marker, absl::Duration timeout);
  ~Process();  // SIGTERM, then SIGKILL after 5 s

  pid_t pid() const { return pid_; }
  const std::string& ready_line() const { return ready_line_; }
  // The host:port after " on " in the ready line.
  std::string address() const;
  void Kill(int signal);
  // Waits for exit; returns the exit status (or -1 on timeout).
  int Wait(absl::Duration timeout);

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string ready_line_;
  bool exited_ = false;
};

struct ClusterOptions {
  std::string model_dir;
  int num_prefill = 1;
  int num_decode = 1;
  // Colocated nodes (duet-decode --role colocated, decode_args then
  // colocated_args); they follow the decode nodes: decode(num_decode + i).
  int num_colocated = 0;
  std::vector<std::string> colocated_args;
  std::vector<std::string> router_args;
  std::vector<std::string> prefill_args;
  std::vector<std::string> decode_args;
  // Extra environment ("NAME=value") of each role's nodes (through
  // /usr/bin/env, so restarts keep it), e.g. NCCL settings.
  std::vector<std::string> prefill_env;
  std::vector<std::string> decode_env;
  // Plaintext (--insecure) instead of mutual TLS with certificates of a
  // test CA (CertDir()).
  bool insecure = false;
};

// A CA and one certificate for 127.0.0.1 (scripts/make_certs.sh), made once
// per test process: ca.pem, node.pem, node-key.pem.
const std::string& CertDir();
// --tls-cert/--tls-key/--tls-ca of CertDir().
std::vector<std::string> TlsArgs();
// The whole file (empty when it cannot be read).
std::string ReadWholeFile(const std::string& path);
// TLS trusting the test CA; with the test certificate (a member), or
// without (a client).
std::shared_ptr<grpc::ChannelCredentials> TestCredentials(bool member);

class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(
      const ClusterOptions& options);

  const std::string& router_address() const { return router_address_; }
  // A client of the router: TLS with the test CA, no certificate (as
  // duet-cli), or plaintext for an insecure cluster.
  v1::Duet::Stub& client() { return *client_; }
  // Channel credentials of a member (the test certificate), for calls to
  // nodes or the Registry.
  std::shared_ptr<grpc::ChannelCredentials> MemberCredentials() const;
  Process& prefill(int i) { return *prefill_[i]; }
  Process& decode(int i) { return *decode_[i]; }
  // SIGKILLs decode node `i` (if it still runs), waits `down`, and starts
  // it again with the same flags at the same address (--listen), as an
  // operator restarting a crashed node would; returns once it serves.
  absl::Status RestartDecode(int i, absl::Duration down);
  absl::Status RestartPrefill(int i, absl::Duration down);
  // The same for the router (the nodes re-register on their own).
  absl::Status RestartRouter(absl::Duration down);
  Process& router() { return *router_; }
  // Stats of one node, straight from the node (not the router's cache).
  absl::StatusOr<v1::StatsResponse> Stats(const Process& node);
  // Waits until every prefill and decode node reports its full pool free.
  absl::Status WaitAllBlocksFree(absl::Duration timeout);
  std::string log_dir() const { return log_dir_; }

 private:
  std::string log_dir_;
  bool insecure_ = false;
  std::unique_ptr<Process> router_;
  std::vector<std::unique_ptr<Process>> prefill_;
  std::vector<std::unique_ptr<Process>> decode_;
  // Command lines, for the restarts.
  std::vector<std::string> router_argv_;
  std::vector<std::vector<std::string>> prefill_argv_;
  std::vector<std::vector<std::string>> decode_argv_;
  static absl::Status Restart(std::unique_ptr<Process>& process,
                              std::vector<std::string> argv,
                              const std::string& log, absl::Duration down);
  std::string router_address_;
  std::unique_ptr<v1::Duet::Stub> client_;
};

}  // namespace duet::testing

#endif  // DUET_TESTS_E2E_LOCAL_CLUSTER_H_
