// Regular expressions for tokenizer.json patterns, on PCRE2 (UTF + Unicode
// properties, JIT when the library has it).
//
// tokenizer.json patterns are written for Oniguruma, which the reference Rust
// `tokenizers` uses. The dialects agree on everything the Hugging Face
// byte-level pre-tokenizers use except a few escapes, which Compile rewrites:
// Oniguruma's \s is Unicode White_Space (it includes U+0085, PCRE2's does
// not) and its \h is a hex digit (PCRE2: horizontal space). \S inside a
// bracket class cannot be rewritten and keeps PCRE2's meaning (differs only on
// U+0085); \w keeps PCRE2's meaning (letters, numbers, underscore).
#ifndef DUET_TOKENIZER_REGEX_H_
#define DUET_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::tokenizer {

class Regex {
 public:
  // `pattern` uses Oniguruma syntax (see above).
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern);
  // A pattern that matches `literal` exactly.
  static absl::StatusOr<std::unique_ptr<Regex>> CompileLiteral(absl::string_view literal);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All matches in `subject` (valid UTF-8), as [start, end) byte offsets, in
  // the order Oniguruma's find_iter (the Rust `onig` crate) yields them: each
  // search starts where the previous match ended; an empty match right at the
  // end of the previous match is skipped by advancing one character.
  // Thread-safe.
  absl::Status FindAll(absl::string_view subject,
                       std::vector<std::pair<size_t, size_t>>* matches) const;

  // Exposed for tests.
  static std::string TranslateOnigurumaPattern(absl::string_view pattern);

 private:
  struct Impl;
  explicit Regex(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_REGEX_H_
