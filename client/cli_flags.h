// Command-line plumbing shared by duet-cli and duet-bench.
//
// absl::ParseCommandLine exits the process with status 1 on an unknown flag
// or a malformed value, and prints several lines. Our tools promise exit 2
// and a one-line reason for any usage error (1 means "the RPC failed"), so
// ParseArgs validates argv first, the way absl will read it, and only then
// hands it to duet::ParseFlags. It also answers --help itself (see
// ParsedArgs::help).
#ifndef DUET_CLIENT_CLI_FLAGS_H_
#define DUET_CLIENT_CLI_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::client {

// Exit codes of the client tools.
inline constexpr int kExitOk = 0;
inline constexpr int kExitRpcFailed = 1;
inline constexpr int kExitUsage = 2;

// Checks every flag in argv (dashes or underscores in names, "--f=v",
// "--f v", "--f" / "--nof" for bools, "-f" like "--f", nothing after "--")
// exists and its value parses. INVALID_ARGUMENT names the first bad one.
// Parsing a value sets the flag; ParseFlags sets it again to the same value.
absl::Status CheckFlagArgs(int argc, char** argv);

struct ParsedArgs {
  // Positional arguments, without argv[0].
  std::vector<std::string> positional;
  // --help, --helpfull, --helpshort or -h was given: print HelpText and
  // exit 0 (absl's own --help exits 1 and, because our flags live in
  // *_main.cc rather than a file named after the binary, lists none).
  bool help = false;
};

// CheckFlagArgs, then duet::ParseFlags. Never exits the process.
absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv);

// absl::ProgramUsageMessage(), then every flag defined in a file whose path
// contains `defined_in` (e.g. "client/cli_main.cc"), with default and help.
std::string HelpText(absl::string_view defined_in);

// "1,2, 3" -> {1, 2, 3}; "" -> {}. INVALID_ARGUMENT names `flag_name` and
// the bad element.
absl::StatusOr<std::vector<int32_t>> ParseIdList(absl::string_view text,
                                                 absl::string_view flag_name);

}  // namespace duet::client

#endif  // DUET_CLIENT_CLI_FLAGS_H_
