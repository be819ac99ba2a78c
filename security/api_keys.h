// Client authentication by API key (DESIGN.md §4b): --api-key-file names a
// file of keys, one per line (blank lines and lines starting with '#' are
// ignored). A client sends one as `authorization: Bearer <key>` metadata on
// gRPC, the header HTTP clients send; the router refuses a request without
// a valid key with UNAUTHENTICATED. Without --api-key-file no key is
// required (a warning at start-up says so).
#ifndef DUET_SECURITY_API_KEYS_H_
#define DUET_SECURITY_API_KEYS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grpc {
class ServerContext;
class ClientContext;
}  // namespace grpc

namespace duet::security {

class ApiKeys {
 public:
  // No keys: every request passes.
  ApiKeys() = default;
  // InvalidArgument when the file cannot be read, holds no key, or a key is
  // shorter than 16 characters or has whitespace inside.
  static absl::StatusOr<ApiKeys> FromFile(const std::string& path);
  // From --api-key-file (empty: no keys).
  static absl::StatusOr<ApiKeys> FromFlag();

  bool required() const { return !keys_.empty(); }
  // OK when no key is required or `authorization` is "Bearer <a key>";
  // UNAUTHENTICATED saying what to send otherwise. The comparison takes the
  // same time whichever key (or how much of one) matches.
  absl::Status Check(absl::string_view authorization) const;
  // Check on the `authorization` metadata of a gRPC call.
  absl::Status Check(const grpc::ServerContext& ctx) const;

 private:
  std::vector<std::string> keys_;
};

// Adds `authorization: Bearer <key>` to an outgoing call (no-op for "").
void AttachApiKey(grpc::ClientContext& ctx, const std::string& key);

// The key a client binary uses: --api-key, else the DUET_API_KEY
// environment variable, else "".
std::string ClientApiKey();

}  // namespace duet::security

#endif  // DUET_SECURITY_API_KEYS_H_
