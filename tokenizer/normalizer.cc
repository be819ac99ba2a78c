#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"
#include "utf8proc.h"

namespace duet::tokenizer {
namespace {

using json_util::Json;

// Characters before which a normalization form never looks back: they have
// combining class 0, are unchanged by the form, and never compose with what
// precedes them (NFC_QC=Yes in Unicode's terms). Text can be cut before each
// of them and the pieces normalized separately, so only the pieces that hold
// something else need the library call. ASCII qualifies for every form; for
// NFC also Latin-1, CJK ideographs, kana and Hangul syllables, which make up
// most non-ASCII prompt text. (The "can combine with a preceding character"
// set is combining marks, Hangul jamo and a few Indic/Sinhala vowel signs;
// none is in these ranges.)
bool IsNfcSegmentStart(char32_t cp) {
  return (cp >= 0xA0 && cp <= 0xFF) || (cp >= 0x3041 && cp <= 0x3096) ||
         (cp >= 0x30A1 && cp <= 0x30FA) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3);
}

class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(int options, bool nfc) : options_(options), nfc_(nfc) {}

  absl::Status Normalize(std::string* text) const override {
    const absl::string_view in(*text);
    std::string out;
    bool changed = false;       // `out` holds the normalized prefix [0, copied)
    size_t copied = 0;
    size_t segment_start = 0;   // start of the current segment
    bool segment_plain = true;  // the segment has only segment-start characters
    auto flush = [&](size_t end) -> absl::Status {
      if (segment_plain) return absl::OkStatus();
      if (!changed) {
        out.reserve(in.size() + 16);
        changed = true;
      }
      out.append(in.data() + copied, segment_start - copied);
      DUET_RETURN_IF_ERROR(NormalizeAll(in.substr(segment_start, end - segment_start), &out));
      copied = end;
      return absl::OkStatus();
    };
    size_t i = 0;
    while (i < in.size()) {
      if (static_cast<unsigned char>(in[i]) < 0x80) {
        // A run of ASCII: each character starts a segment, so only the last
        // one can begin a segment that needs work.
        DUET_RETURN_IF_ERROR(flush(i));
        size_t j = i + 1;
        while (j < in.size() && static_cast<unsigned char>(in[j]) < 0x80) ++j;
        segment_start = j - 1;
        segment_plain = true;
        i = j;
        continue;
      }
      size_t len;
      const char32_t cp = DecodeUtf8(in.substr(i), &len);
      if (nfc_ && IsNfcSegmentStart(cp)) {
        DUET_RETURN_IF_ERROR(flush(i));
        segment_start = i;
        segment_plain = true;
      } else {
        segment_plain = false;
      }
      i += len;
    }
    DUET_RETURN_IF_ERROR(flush(in.size()));
    if (changed) {
      out.append(in.data() + copied, in.size() - copied);
      *text = std::move(out);
    }
    return absl::OkStatus();
  }

 private:
  absl::Status NormalizeAll(absl::string_view piece, std::string* out) const {
    utf8proc_uint8_t* result = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(piece.data()),
                     static_cast<utf8proc_ssize_t>(piece.size()), &result,
                     static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Unicode normalization failed: ", utf8proc_errmsg(n)));
    }
    out->append(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
    std::free(result);
    return absl::OkStatus();
  }

  int options_;
  bool nfc_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& p : parts_) DUET_RETURN_IF_ERROR(p->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// Replaces every match of a pattern (a literal or an Oniguruma regex).
class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    if (pattern_ == nullptr) return absl::OkStatus();
    std::vector<std::pair<size_t, size_t>> matches;
    DUET_RETURN_IF_ERROR(pattern_->FindAll(*text, &matches));
    if (matches.empty()) return absl::OkStatus();
    std::string out;
    size_t last = 0;
    for (const auto& [start, end] : matches) {
      out.append(*text, last, start - last);
      out += content_;
      last = end;
    }
    out.append(*text, last, std::string::npos);
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> pattern_;  // null: literal pattern was empty, no-op
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t len;
        if (!IsUnicodeWhitespace(DecodeUtf8(absl::string_view(*text).substr(begin), &len))) break;
        begin += len;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;  // back up to the lead byte
        while (start > begin && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80) {
          --start;
        }
        size_t len;
        if (!IsUnicodeWhitespace(DecodeUtf8(absl::string_view(*text).substr(start), &len))) break;
        end = start;
      }
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& config) {
  const std::string type = json_util::TypeOf(config);
  const std::string where = absl::StrCat("normalizer ", type);
  // The option sets of utf8proc_NFC() and friends, passed to utf8proc_map
  // with an explicit length so that NUL characters survive.
  if (type == "NFC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE, true);
  }
  if (type == "NFD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, false);
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(
        UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, false);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(
        UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, false);
  }
  if (type == "Sequence") {
    const Json* list = json_util::Find(config, "normalizers");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("normalizer Sequence: \"normalizers\" must be a list");
    }
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const Json& item : *list) {
      DUET_ASSIGN_OR_RETURN(auto part, FromJson(item));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Replace") {
    const Json* pattern = json_util::Find(config, "pattern");
    DUET_ASSIGN_OR_RETURN(std::string content, json_util::GetString(config, "content", where));
    std::unique_ptr<Regex> regex;
    if (pattern != nullptr && json_util::Find(*pattern, "String") != nullptr) {
      DUET_ASSIGN_OR_RETURN(std::string literal, json_util::GetString(*pattern, "String", where));
      // The reference matches nothing for an empty literal (regex stays null).
      if (!literal.empty()) {
        DUET_ASSIGN_OR_RETURN(regex, Regex::CompileLiteral(literal));
      }
    } else if (pattern != nullptr && json_util::Find(*pattern, "Regex") != nullptr) {
      DUET_ASSIGN_OR_RETURN(std::string re, json_util::GetString(*pattern, "Regex", where));
      DUET_ASSIGN_OR_RETURN(regex, Regex::Compile(re));
    } else {
      return absl::InvalidArgumentError(
          "normalizer Replace: \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
    }
    return std::make_unique<ReplaceNormalizer>(std::move(regex), std::move(content));
  }
  if (type == "Prepend") {
    DUET_ASSIGN_OR_RETURN(std::string prefix, json_util::GetString(config, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Strip") {
    DUET_ASSIGN_OR_RETURN(bool left, json_util::GetBool(config, "strip_left", false, where));
    DUET_ASSIGN_OR_RETURN(bool right, json_util::GetBool(config, "strip_right", false, where));
    return std::make_unique<StripNormalizer>(left, right);
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported normalizer type \"", type, "\""));
}

}  // namespace duet::tokenizer
