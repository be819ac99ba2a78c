#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace duet::tokenizer {
namespace {

// Oniguruma's \s (Unicode White_Space) as the body of a bracket class.
constexpr absl::string_view kSpaceClassBody = "\\t-\\r\\x{85}\\p{Z}";
constexpr absl::string_view kHexClassBody = "0-9a-fA-F";

std::string PcreErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return absl::StrCat("PCRE2 error ", code);
  }
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() { pcre2_code_free(code); }
};

Regex::Regex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Regex::~Regex() = default;

std::string Regex::TranslateOnigurumaPattern(absl::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` of the current class's '['
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's' || e == 'h') {
        const absl::string_view body = e == 's' ? kSpaceClassBody : kHexClassBody;
        if (in_class) {
          out.append(body.data(), body.size());
        } else {
          absl::StrAppend(&out, "[", body, "]");
        }
      } else if ((e == 'S' || e == 'H') && !in_class) {
        absl::StrAppend(&out, "[^", e == 'S' ? kSpaceClassBody : kHexClassBody, "]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      class_start = i;
    } else if (in_class && c == ']') {
      // A ']' first in the class ("[]" or "[^]") is a literal.
      const size_t first = class_start + 1 +
                           (class_start + 1 < pattern.size() && pattern[class_start + 1] == '^');
      if (i != first) in_class = false;
    }
    out.push_back(c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(absl::string_view pattern) {
  const std::string translated = TranslateOnigurumaPattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot compile regex \"", pattern,
                                                   "\": ", PcreErrorMessage(error_code),
                                                   " at offset ", error_offset));
  }
  auto impl = std::make_unique<Impl>();
  impl->code = code;
  uint32_t has_jit = 0;
  pcre2_config(PCRE2_CONFIG_JIT, &has_jit);
  // Without JIT pcre2_match interprets the pattern: slower, same answers.
  impl->jit = has_jit && pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<Regex>(new Regex(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Regex>> Regex::CompileLiteral(absl::string_view literal) {
  std::string pattern;
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    // Escape ASCII punctuation only: escaping a letter could form an escape
    // such as \s, and bytes >= 0x80 are parts of UTF-8 characters.
    if (u < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
      if (c == '\n') {
        pattern += "\\n";
        continue;
      }
      if (u < 0x20 || u == 0x7F) {
        absl::StrAppend(&pattern, "\\x{", absl::Hex(u), "}");
        continue;
      }
      pattern.push_back('\\');
    }
    pattern.push_back(c);
  }
  return Compile(pattern);
}

absl::Status Regex::FindAll(absl::string_view subject,
                            std::vector<std::pair<size_t, size_t>>* matches) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (md == nullptr) return absl::ResourceExhaustedError("pcre2_match_data_create failed");
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t search_from = 0;
  bool have_last_end = false;
  size_t last_end = 0;
  absl::Status status;
  while (search_from <= subject.size()) {
    // pcre2_jit_match skips pcre2_match's argument checks; the subject was
    // validated once by the caller.
    int rc = impl_->jit ? pcre2_jit_match(impl_->code, data, subject.size(), search_from, 0, md,
                                          nullptr)
                        : pcre2_match(impl_->code, data, subject.size(), search_from,
                                      PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking state on the heap.
      rc = pcre2_match(impl_->code, data, subject.size(), search_from,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      status = absl::ResourceExhaustedError(
          absl::StrCat("regex match failed: ", PcreErrorMessage(rc)));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start == end && have_last_end && last_end == end) {
      if (search_from >= subject.size()) break;
      size_t len = 1;
      const auto b = static_cast<unsigned char>(subject[search_from]);
      if (b >= 0xF0) {
        len = 4;
      } else if (b >= 0xE0) {
        len = 3;
      } else if (b >= 0xC0) {
        len = 2;
      }
      search_from += len;
      continue;
    }
    matches->emplace_back(start, end);
    search_from = end;
    have_last_end = true;
    last_end = end;
  }
  pcre2_match_data_free(md);
  return status;
}

}  // namespace duet::tokenizer
