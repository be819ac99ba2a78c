// Command-line helpers shared by every duet binary.
#ifndef DUET_COMMON_FLAGS_H_
#define DUET_COMMON_FLAGS_H_

#include <string>
#include <vector>

namespace duet {

// Parses argv with absl flags after rewriting "--max-tokens=3" to
// "--max_tokens=3" (abseil flag names use underscores; users and our docs
// type dashes). Only the flag name is rewritten, never its value, and nothing
// after a bare "--". Returns the positional arguments (argv[0] first).
std::vector<std::string> ParseFlags(int argc, char** argv);

// Usage message plus every non-abseil flag with its help and default; what
// ParseFlags prints (then exits 0) for --help, -h or --helpshort.
std::string HelpText();

// The rewrite alone, exposed for tests.
std::string NormalizeFlagArg(const std::string& arg);

}  // namespace duet

#endif  // DUET_COMMON_FLAGS_H_
