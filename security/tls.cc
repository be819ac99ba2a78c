#include "security/tls.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate (chain) of this role, issued by the cluster's CA "
          "(scripts/make_certs.sh)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM certificate of the cluster's CA: peers must present a "
          "certificate it issued");
ABSL_FLAG(bool, insecure, false,
          "plaintext gRPC without authentication of roles (anyone who can "
          "reach a port can join the cluster or call a node); only for "
          "trusted networks and tests");

namespace duet::security {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read '", path, "'"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pem = ss.str();
  if (!absl::StrContains(pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", path, "' holds no PEM block"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<TlsConfig> ReadTlsFlags(Party party) {
  TlsConfig c;
  c.insecure = absl::GetFlag(FLAGS_insecure);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const bool any = !cert.empty() || !key.empty() || !ca.empty();
  if (c.insecure) {
    if (any) {
      return absl::InvalidArgumentError(
          "--insecure cannot be combined with --tls-cert, --tls-key or "
          "--tls-ca");
    }
    // A client's plaintext exposes only its own traffic; a role's opens the
    // cluster, which is what the operator must hear about.
    if (party == Party::kRole) {
      DUET_LOG(WARNING) << "--insecure: gRPC in plaintext, roles are not "
                           "authenticated; anyone who reaches a port can join "
                           "the cluster or call a node";
    }
    return c;
  }
  if (!any) {
    return absl::InvalidArgumentError(
        party == Party::kRole
            ? "TLS is required: give --tls-cert, --tls-key and --tls-ca "
              "(scripts/make_certs.sh writes them), or --insecure for "
              "plaintext"
            : "TLS is required: give --tls-ca (the cluster's CA, to verify "
              "the router), or --insecure for plaintext");
  }
  if (ca.empty()) {
    return absl::InvalidArgumentError("--tls-ca is required with TLS");
  }
  if (party == Party::kRole && (cert.empty() || key.empty())) {
    return absl::InvalidArgumentError(
        "a role needs --tls-cert and --tls-key with --tls-ca");
  }
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  absl::StatusOr<std::string> pem = ReadPem(ca, "tls-ca");
  if (!pem.ok()) return pem.status();
  c.ca = std::move(*pem);
  if (!cert.empty()) {
    pem = ReadPem(cert, "tls-cert");
    if (!pem.ok()) return pem.status();
    c.cert_chain = std::move(*pem);
    pem = ReadPem(key, "tls-key");
    if (!pem.ok()) return pem.status();
    c.private_key = std::move(*pem);
  }
  return c;
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const TlsConfig& tls, bool require_client_cert) {
  if (tls.insecure) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions o(
      require_client_cert
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = tls.ca;
  o.pem_key_cert_pairs.push_back({tls.private_key, tls.cert_chain});
  return grpc::SslServerCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
    const TlsConfig& tls) {
  if (tls.insecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls.ca;
  o.pem_private_key = tls.private_key;
  o.pem_cert_chain = tls.cert_chain;
  return grpc::SslCredentials(o);
}

bool PeerIsMember(const grpc::ServerContext& ctx) {
  const std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  // With SSL, a peer is authenticated only by a client certificate that
  // verified against the CA (GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
  // rejects an invalid one in the handshake and passes a missing one).
  return auth != nullptr && auth->IsPeerAuthenticated() &&
         auth->GetPeerIdentityPropertyName() != "";
}

}  // namespace duet::security
