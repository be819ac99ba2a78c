// UTF-8 helpers shared by the tokenizer, the streaming detokenizer and tests.
//
// Decode must reproduce Rust's String::from_utf8_lossy, which replaces every
// "maximal subpart of an ill-formed subsequence" (Unicode 15, §3.9, Table 3-8)
// with one U+FFFD. The streaming detokenizer needs the same rule applied
// incrementally, so both share Utf8Step below.
#ifndef DUET_TOKENIZER_UTF8_H_
#define DUET_TOKENIZER_UTF8_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace duet::tokenizer {

// "\xEF\xBF\xBD", the replacement character U+FFFD.
inline constexpr absl::string_view kReplacementChar = "\xEF\xBF\xBD";

enum class Utf8StepKind {
  kValid,       // `length` bytes form one well-formed code point.
  kInvalid,     // `length` bytes are one maximal ill-formed subpart.
  kIncomplete,  // All remaining bytes are a proper prefix of a code point.
};

struct Utf8Step {
  Utf8StepKind kind;
  size_t length;
};

// Classifies the bytes at the start of `s` (which must not be empty).
Utf8Step NextUtf8Step(absl::string_view s);

bool IsValidUtf8(absl::string_view s);

// Appends `bytes` to `out`, replacing ill-formed subsequences exactly like
// String::from_utf8_lossy.
void AppendUtf8Lossy(absl::string_view bytes, std::string* out);

// Streaming form of AppendUtf8Lossy: appends the lossy decoding of the longest
// prefix of `bytes` whose decoding cannot change when more bytes are appended,
// and returns that prefix's length. What is left (at most 3 bytes) is a proper
// prefix of a code point; AppendUtf8Lossy on it gives the final answer when the
// stream ends.
size_t AppendUtf8LossyPrefix(absl::string_view bytes, std::string* out);

// Decodes the code point at the start of `s`, which must be valid UTF-8 and
// not empty; sets *length to its byte length.
char32_t DecodeUtf8(absl::string_view s, size_t* length);

void AppendUtf8(char32_t cp, std::string* out);

// Unicode White_Space (what Rust's char::is_whitespace and regex \s test).
bool IsUnicodeWhitespace(char32_t cp);

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_UTF8_H_
