// The client side of API keys, in a file of its own: the --api-key flag is
// registered only in binaries that call ClientApiKey (the clients), not in
// the router or the nodes, whose --help would otherwise offer it.
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "security/api_keys.h"

ABSL_FLAG(std::string, api_key, "",
          "API key to send to the router (default: $DUET_API_KEY)");

namespace duet::security {

std::string ClientApiKey() {
  std::string key = absl::GetFlag(FLAGS_api_key);
  if (key.empty()) {
    if (const char* env = std::getenv("DUET_API_KEY")) key = env;
  }
  return key;
}

}  // namespace duet::security
