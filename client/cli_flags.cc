#include "client/cli_flags.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/flags.h"

namespace duet::client {

absl::Status CheckFlagArgs(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = NormalizeFlagArg(argv[i]);
    if (arg == "--") break;                         // The rest is positional.
    if (arg.size() < 2 || arg[0] != '-') continue;  // Positional (or "-").
    const size_t dashes = arg[1] == '-' ? 2 : 1;
    const absl::string_view body = absl::string_view(arg).substr(dashes);
    const size_t eq = body.find('=');
    const bool has_value = eq != absl::string_view::npos;
    const absl::string_view name = body.substr(0, eq);
    // The name as typed (dashes kept) for messages; abseil's is normalized.
    const std::string shown = absl::StrCat(
        "--", absl::string_view(argv[i]).substr(dashes, name.size()));

    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      // absl's "--noverbose" spelling of a false bool.
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr || flag->IsRetired()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", shown, " (see --help)"));
    }
    std::string value;
    if (has_value) {
      value = std::string(body.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;  // "--ignore-eos" alone means true.
    } else if (i + 1 < argc) {
      value = argv[++i];  // "--max-tokens 32"
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag ", shown, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value '", value, "' for ", shown, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv) {
  ParsedArgs parsed;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "--helpfull" ||
        arg == "-helpfull" || arg == "--helpshort" || arg == "-helpshort" ||
        arg == "-h") {
      parsed.help = true;
      return parsed;
    }
  }
  if (absl::Status s = CheckFlagArgs(argc, argv); !s.ok()) return s;
  parsed.positional = duet::ParseFlags(argc, argv);
  if (!parsed.positional.empty()) {
    parsed.positional.erase(parsed.positional.begin());
  }
  return parsed;
}

std::string HelpText(absl::string_view defined_in) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), defined_in)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string out = absl::StrCat(absl::ProgramUsageMessage(),
                                 "\n\nFlags (--name=value or --name value; "
                                 "dashes and underscores are the same):\n");
  for (const absl::CommandLineFlag* flag : flags) {
    absl::StrAppend(
        &out, "  --", absl::StrReplaceAll(flag->Name(), {{"_", "-"}}),
        " (default: ",
        flag->DefaultValue().empty() ? "none" : flag->DefaultValue(),
        ")\n      ", flag->Help(), "\n");
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(absl::string_view text,
                                                 absl::string_view flag_name) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag_name, " must be comma-separated integers, got '",
          std::string(part), "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace duet::client
