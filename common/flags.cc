#include "common/flags.h"

#include "absl/flags/parse.h"

namespace duet {

std::string NormalizeFlagArg(const std::string& arg) {
  if (arg.size() < 3 || arg[0] != '-') return arg;
  const size_t name_start = arg[1] == '-' ? 2 : 1;
  const size_t name_end = std::min(arg.find('='), arg.size());
  std::string out = arg;
  for (size_t i = name_start; i < name_end; ++i) {
    if (out[i] == '-') out[i] = '_';
  }
  return out;
}

std::vector<std::string> ParseFlags(int argc, char** argv) {
  std::vector<std::string> storage;
  storage.reserve(argc);
  bool rest_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") rest_positional = true;
    storage.push_back(i == 0 || rest_positional ? arg : NormalizeFlagArg(arg));
  }
  std::vector<char*> ptrs;
  for (std::string& s : storage) ptrs.push_back(s.data());
  ptrs.push_back(nullptr);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(storage.size()), ptrs.data());
  return std::vector<std::string>(positional.begin(), positional.end());
}

}  // namespace duet
