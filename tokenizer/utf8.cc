#include "tokenizer/utf8.h"

namespace duet::tokenizer {
namespace {

// Continuation-byte range allowed right after lead byte `b` (Table 3-7).
void SecondByteRange(uint8_t b, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b == 0xE0) *lo = 0xA0;
  if (b == 0xED) *hi = 0x9F;
  if (b == 0xF0) *lo = 0x90;
  if (b == 0xF4) *hi = 0x8F;
}

}  // namespace

Utf8Step NextUtf8Step(absl::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const uint8_t b = p[0];
  size_t need;  // total length of the code point
  if (b < 0x80) return {Utf8StepKind::kValid, 1};
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
  } else {
    return {Utf8StepKind::kInvalid, 1};  // 80..C1, F5..FF never start one
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= s.size()) return {Utf8StepKind::kIncomplete, s.size()};
    uint8_t lo = 0x80, hi = 0xBF;
    if (i == 1) SecondByteRange(b, &lo, &hi);
    if (p[i] < lo || p[i] > hi) return {Utf8StepKind::kInvalid, i};
  }
  return {Utf8StepKind::kValid, need};
}

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII runs dominate real text; skip them eight bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      __builtin_memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= s.size()) break;
    const Utf8Step step = NextUtf8Step(s.substr(i));
    if (step.kind != Utf8StepKind::kValid) return false;
    i += step.length;
  }
  return true;
}

size_t AppendUtf8LossyPrefix(absl::string_view bytes, std::string* out) {
  size_t i = 0;
  size_t run_start = 0;  // start of the current run of valid bytes
  while (i < bytes.size()) {
    const Utf8Step step = NextUtf8Step(bytes.substr(i));
    if (step.kind == Utf8StepKind::kValid) {
      i += step.length;
      continue;
    }
    out->append(bytes.data() + run_start, i - run_start);
    if (step.kind == Utf8StepKind::kIncomplete) return i;
    out->append(kReplacementChar.data(), kReplacementChar.size());
    i += step.length;
    run_start = i;
  }
  out->append(bytes.data() + run_start, i - run_start);
  return i;
}

void AppendUtf8Lossy(absl::string_view bytes, std::string* out) {
  const size_t done = AppendUtf8LossyPrefix(bytes, out);
  // An incomplete tail is one maximal subpart: one U+FFFD.
  if (done < bytes.size()) out->append(kReplacementChar.data(), kReplacementChar.size());
}

char32_t DecodeUtf8(absl::string_view s, size_t* length) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  if (p[0] < 0x80) {
    *length = 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *length = 2;
    return (char32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (p[0] < 0xF0) {
    *length = 3;
    return (char32_t(p[0] & 0x0F) << 12) | (char32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  *length = 4;
  return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3F) << 12) |
         (char32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsUnicodeWhitespace(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace duet::tokenizer
