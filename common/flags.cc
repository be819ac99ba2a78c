#include "common/flags.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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

namespace {

// True when `arg` ("--name" with no "=value") names a registered non-bool
// flag, so the next argument is its value and must not be rewritten.
bool TakesSeparateValue(const std::string& arg) {
  if (arg.size() < 2 || arg[0] != '-' || arg.find('=') != std::string::npos) {
    return false;
  }
  const std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && !flag->IsOfType<bool>();
}

}  // namespace

std::string HelpText() {
  std::map<std::string, const absl::CommandLineFlag*> ours;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!absl::StrContains(flag->Filename(), "absl/")) {
      ours.emplace(std::string(name), flag);
    }
  }
  std::string out = absl::StrCat(absl::ProgramUsageMessage(), "\n\nFlags "
                                 "(dashes and underscores are the same):\n");
  for (const auto& [name, flag] : ours) {
    std::string dashed = name;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    absl::StrAppend(&out, "  --", dashed, "  ", flag->Help(), " (default: ",
                    flag->DefaultValue().empty() ? "\"\"" : flag->DefaultValue(),
                    ")\n");
  }
  return out;
}

std::vector<std::string> ParseFlags(int argc, char** argv) {
  // --help lists our flags (abseil's default only lists flags defined in a
  // file named after the binary, which matches none of ours) and not
  // abseil's own.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return !absl::StrContains(file, "absl/");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  // Abseil 20220623 exits 1 after --help; asking for help is not an error,
  // so answer it here and exit 0 like every other CLI.
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h" ||
        arg == "--helpshort") {
      std::cout << HelpText();
      std::exit(0);
    }
  }
  std::vector<std::string> storage;
  storage.reserve(argc);
  bool rest_positional = false;
  bool value_next = false;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") rest_positional = true;
    const bool keep = i == 0 || rest_positional || value_next;
    storage.push_back(keep ? arg : NormalizeFlagArg(arg));
    value_next = !keep && TakesSeparateValue(storage.back());
  }
  std::vector<char*> ptrs;
  for (std::string& s : storage) ptrs.push_back(s.data());
  ptrs.push_back(nullptr);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(storage.size()), ptrs.data());
  return std::vector<std::string>(positional.begin(), positional.end());
}

}  // namespace duet
