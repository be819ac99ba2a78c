// Transport security of every gRPC port and channel (DESIGN.md §4b): TLS
// with certificates of the cluster's CA. Roles (router, prefill and decode
// nodes) hold a certificate and key of that CA and present it on every
// channel they open (mutual TLS); node ports accept only peers that present
// one (only the router and other members may call a node), the router's
// port asks for one and tells members (Register, Heartbeat) from clients,
// which authenticate with API keys instead (security/api_keys.h).
// Plaintext only with --insecure, and then with a warning in the log.
//
// Flags (defined in tls.cc, shared by every binary that links this):
//   --tls-cert FILE --tls-key FILE --tls-ca FILE   or   --insecure
// scripts/make_certs.sh writes a CA and a certificate for a host.
#ifndef DUET_SECURITY_TLS_H_
#define DUET_SECURITY_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
class ServerContext;
}  // namespace grpc

namespace duet::security {

struct TlsConfig {
  bool insecure = false;
  // PEM contents (not paths), read once at start-up.
  std::string cert_chain;  // empty for a client without a certificate
  std::string private_key;
  std::string ca;
};

// What a binary needs: a role needs its certificate and key and the CA; a
// client (duet-cli, duet-bench) only the CA.
enum class Party { kRole, kClient };

// From --tls-cert / --tls-key / --tls-ca / --insecure (after ParseFlags).
// InvalidArgument naming the flags when neither TLS files nor --insecure
// are given, when files are missing for `party`, when --insecure comes
// with files, or when a file cannot be read or holds no PEM block.
absl::StatusOr<TlsConfig> ReadTlsFlags(Party party);

// Server credentials. `require_client_cert`: a node's port, where only
// members may connect (the handshake fails for anyone else); otherwise (the
// router's port) a client certificate is asked for and verified when
// presented (PeerIsMember).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const TlsConfig& tls, bool require_client_cert);
// Channel credentials: the CA as roots, and the certificate when the
// config has one.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
    const TlsConfig& tls);

// Whether the caller presented a certificate of the cluster's CA (always
// false with --insecure: nothing proves membership then).
bool PeerIsMember(const grpc::ServerContext& ctx);

}  // namespace duet::security

#endif  // DUET_SECURITY_TLS_H_
