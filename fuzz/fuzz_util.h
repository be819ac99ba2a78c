// Helpers shared by the libFuzzer targets in fuzz/ (see fuzz/README.md).
#ifndef DUET_FUZZ_FUZZ_UTIL_H_
#define DUET_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"

namespace duet::fuzz {

// A violated invariant: prints what and aborts, which libFuzzer reports as a
// crash (with the stack and the reproducer file).
[[noreturn]] inline void Fail(absl::string_view what,
                              absl::string_view detail = {}) {
  std::fprintf(stderr, "FUZZ INVARIANT VIOLATED: %.*s%s%.*s\n",
               static_cast<int>(what.size()), what.data(),
               detail.empty() ? "" : ": ", static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

// DUET_FUZZ_VERBOSE=1 makes the targets say what they did with each input
// (why it was rejected, or that it was accepted): for reading reproducers
// and checking that seeds reach the code behind the parsers.
inline bool Verbose() {
  static const bool verbose = [] {
    const char* v = std::getenv("DUET_FUZZ_VERBOSE");
    return v != nullptr && *v != '\0' && *v != '0';
  }();
  return verbose;
}

inline void Note(absl::string_view what, absl::string_view detail = {}) {
  if (!Verbose()) return;
  std::fprintf(stderr, "fuzz: %.*s%s%.*s\n", static_cast<int>(what.size()),
               what.data(), detail.empty() ? "" : ": ",
               static_cast<int>(detail.size()), detail.data());
}

inline void Check(bool ok, absl::string_view what,
                  absl::string_view detail = {}) {
  if (!ok) Fail(what, detail);
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF),
// written here rather than taken from tokenizer/utf8.h so the check does not
// share the code under test.
inline bool IsStrictUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
        (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

// Bytes as a printable string for failure messages (at most `max` input
// bytes; others escaped as \xNN).
inline std::string Printable(absl::string_view s, size_t max = 200) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace duet::fuzz

#endif  // DUET_FUZZ_FUZZ_UTIL_H_
