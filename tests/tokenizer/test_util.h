// Helpers shared by the tokenizer tests: file reading (plain or gzip),
// printable escaping for failure messages, and the shipped tokenizers.
#ifndef DUET_TESTS_TOKENIZER_TEST_UTIL_H_
#define DUET_TESTS_TOKENIZER_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tokenizer/tokenizer.h"

namespace duet::tokenizer::testing {

// Reads a file; a name ending in ".gz" is gunzipped.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// `path` relative to the source tree.
std::string SourcePath(absl::string_view path);

// "a\n\xff" -> "a\\n\\xFF" (non-ASCII UTF-8 is kept, other bytes escaped).
std::string Escape(absl::string_view s);
std::string IdsToString(const std::vector<int32_t>& ids);

// The shipped assets, loaded once per process.
const Tokenizer& Qwen3();
const Tokenizer& Llama3();

}  // namespace duet::tokenizer::testing

#endif  // DUET_TESTS_TOKENIZER_TEST_UTIL_H_
