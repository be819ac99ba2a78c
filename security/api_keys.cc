#include "security/api_keys.h"

#include <grpcpp/grpcpp.h>

#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

ABSL_FLAG(std::string, api_key_file, "",
          "file of API keys clients must present (one per line, as "
          "'authorization: Bearer <key>'); empty: no key required");

namespace duet::security {

absl::StatusOr<ApiKeys> ApiKeys::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file: cannot read '", path, "'"));
  }
  ApiKeys k;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    absl::string_view key = absl::StripAsciiWhitespace(line);
    if (key.empty() || key[0] == '#') continue;
    if (key.size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api-key-file: the key on line ", n, " of '", path,
                       "' is shorter than 16 characters"));
    }
    for (char c : key) {
      if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
          !absl::ascii_isprint(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(
            absl::StrCat("--api-key-file: the key on line ", n, " of '", path,
                         "' has whitespace or a non-printable character"));
      }
    }
    k.keys_.emplace_back(key);
  }
  if (k.keys_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file: '", path, "' holds no key"));
  }
  return k;
}

absl::StatusOr<ApiKeys> ApiKeys::FromFlag() {
  const std::string path = absl::GetFlag(FLAGS_api_key_file);
  if (path.empty()) return ApiKeys();
  return FromFile(path);
}

absl::Status ApiKeys::Check(absl::string_view authorization) const {
  if (keys_.empty()) return absl::OkStatus();
  absl::string_view given = authorization;
  if (!absl::ConsumePrefix(&given, "Bearer ")) {
    return absl::UnauthenticatedError(
        "this router needs an API key: send 'authorization: Bearer <key>' "
        "(duet-cli / duet-bench: --api-key or DUET_API_KEY)");
  }
  // Every key is compared in full, and each comparison touches every byte,
  // so the time says nothing about which bytes matched.
  bool match = false;
  for (const std::string& key : keys_) {
    unsigned diff = key.size() == given.size() ? 0u : 1u;
    for (size_t i = 0; i < key.size(); ++i) {
      const unsigned char g =
          i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
      diff |= static_cast<unsigned char>(key[i]) ^ g;
    }
    match |= diff == 0;
  }
  if (!match) {
    return absl::UnauthenticatedError("the API key is not valid");
  }
  return absl::OkStatus();
}

absl::Status ApiKeys::Check(const grpc::ServerContext& ctx) const {
  if (keys_.empty()) return absl::OkStatus();
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return Check(absl::string_view());
  return Check(absl::string_view(it->second.data(), it->second.size()));
}

void AttachApiKey(grpc::ClientContext& ctx, const std::string& key) {
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
}

}  // namespace duet::security
