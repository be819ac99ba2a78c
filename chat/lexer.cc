#include "chat/lexer.h"

#include <cctype>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "chat/value.h"

namespace duet::chat::jinja {
namespace {

absl::Status Error(int line, absl::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template line ", line, ": ", message));
}

// Python str.rstrip() on UTF-8 text: drops trailing Unicode whitespace.
void RStripPy(std::string* text) {
  while (!text->empty()) {
    size_t start = text->size() - 1;
    while (start > 0 &&
           (static_cast<unsigned char>((*text)[start]) & 0xc0) == 0x80) {
      --start;
    }
    std::vector<char32_t> cp =
        DecodeUtf8(absl::string_view(*text).substr(start));
    if (cp.size() != 1 || !IsPyWhitespace(cp[0])) return;
    text->resize(start);
  }
}

// Length of the Unicode-whitespace run at the start of `s`.
size_t PyWhitespacePrefix(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
    if (i + len > s.size()) break;
    std::vector<char32_t> cp = DecodeUtf8(s.substr(i, len));
    if (cp.size() != 1 || !IsPyWhitespace(cp[0])) break;
    i += len;
  }
  return i;
}

// Python's unicode-escape decoding of a string literal's body, as Jinja2
// applies it; unknown escapes stay as written ("\d" is backslash, d).
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c != '\\' || i + 1 >= s.size()) {
      out.push_back(c);
      continue;
    }
    char e = s[++i];
    auto hex = [&](int n) -> int64_t {
      int64_t v = 0;
      for (int k = 1; k <= n; ++k) {
        if (i + k >= s.size() || !absl::ascii_isxdigit(s[i + k])) return -1;
        char h = s[i + k];
        v = v * 16 + (absl::ascii_isdigit(h)
                          ? h - '0'
                          : absl::ascii_tolower(h) - 'a' + 10);
      }
      return v;
    };
    switch (e) {
      case '\n':
        break;  // line continuation
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x':
      case 'u':
      case 'U': {
        int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        int64_t v = hex(n);
        if (v < 0 || v > 0x10ffff) {
          out.push_back('\\');
          out.push_back(e);
        } else {
          AppendUtf8(static_cast<char32_t>(v), &out);
          i += n;
        }
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0;
               k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7';
               ++k) {
            v = v * 8 + (s[++i] - '0');
          }
          AppendUtf8(static_cast<char32_t>(v), &out);
        } else {
          out.push_back('\\');
          out.push_back(e);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string src, const LexOptions& options)
      : src_(std::move(src)), options_(options) {}

  absl::StatusOr<std::vector<Token>> Run() {
    std::string text;
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t open = src_.find('{', pos_);
      while (open != std::string::npos && open + 1 < src_.size() &&
             src_[open + 1] != '{' && src_[open + 1] != '%' &&
             src_[open + 1] != '#') {
        open = src_.find('{', open + 1);
      }
      if (open == std::string::npos || open + 1 >= src_.size()) {
        text += src_.substr(pos_);
        Advance(src_.size());
        break;
      }
      text += src_.substr(pos_, open - pos_);
      Advance(open);
      char kind = src_[open + 1];
      char sign = open + 2 < src_.size() ? src_[open + 2] : '\0';
      int tag_line = line_;
      if (sign == '-') {
        RStripPy(&text);
      } else if (sign != '+' && kind != '{' && options_.lstrip_blocks) {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) &&
            text.find_first_not_of(" \t", l_pos) == std::string::npos) {
          text.resize(l_pos);
        }
      }
      EmitText(&text);
      size_t body = open + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      Advance(body);
      if (kind == '#') {
        size_t close = src_.find("#}", pos_);
        if (close == std::string::npos) {
          return Error(tag_line, "unterminated comment");
        }
        bool strip = close > pos_ && src_[close - 1] == '-';
        bool plus = close > pos_ && src_[close - 1] == '+';
        Advance(close + 2);
        line_starting = AfterTag(strip, !plus && options_.trim_blocks);
        continue;
      }
      if (kind == '%' && IsRawTag()) {
        absl::Status s = LexRaw(&text, &line_starting, tag_line);
        if (!s.ok()) return s;
        continue;
      }
      tokens_.push_back(
          {kind == '%' ? Token::Kind::kBlockBegin : Token::Kind::kVarBegin, "",
           tag_line});
      absl::StatusOr<bool> end = LexTagBody(kind == '%' ? '%' : '}', tag_line);
      if (!end.ok()) return end.status();
      line_starting =
          AfterTag(*end, kind == '%' && !plus_end_ && options_.trim_blocks);
    }
    EmitText(&text);
    tokens_.push_back({Token::Kind::kEof, "", line_});
    return std::move(tokens_);
  }

 private:
  void Advance(size_t to) {
    for (; pos_ < to; ++pos_) {
      if (src_[pos_] == '\n') ++line_;
    }
  }

  void EmitText(std::string* text) {
    if (!text->empty()) {
      tokens_.push_back({Token::Kind::kText, std::move(*text), text_line_});
    }
    text->clear();
    text_line_ = line_;
  }

  // After a tag's closing delimiter: `-` strips all following whitespace,
  // trim_blocks one newline. Returns whether what was consumed ended a line
  // (Jinja2's line_starting, which lstrip_blocks consults).
  bool AfterTag(bool strip, bool trim_newline) {
    bool ended_line = false;
    if (strip) {
      size_t n = PyWhitespacePrefix(absl::string_view(src_).substr(pos_));
      if (n > 0) ended_line = src_[pos_ + n - 1] == '\n';
      Advance(pos_ + n);
    } else if (trim_newline && pos_ < src_.size() && src_[pos_] == '\n') {
      Advance(pos_ + 1);
      ended_line = true;
    }
    text_line_ = line_;
    return ended_line;
  }

  bool IsRawTag() {
    size_t p = pos_;
    while (p < src_.size() && absl::ascii_isspace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && absl::ascii_isspace(src_[p])) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0 ||
           src_.compare(p, 3, "+%}") == 0;
  }

  // {% raw %}...{% endraw %}: the body is text, whitespace control applies
  // at both tags as for any block tag.
  absl::Status LexRaw(std::string* text, bool* line_starting, int tag_line) {
    size_t close = src_.find("%}", pos_);
    bool strip = src_[close - 1] == '-';
    bool plus = src_[close - 1] == '+';
    Advance(close + 2);
    AfterTag(strip, !plus && options_.trim_blocks);
    size_t search = pos_;
    while (true) {
      size_t open = src_.find("{%", search);
      if (open == std::string::npos) {
        return Error(tag_line, "missing {% endraw %}");
      }
      size_t p = open + 2;
      char sign = p < src_.size() ? src_[p] : '\0';
      if (sign == '-' || sign == '+') ++p;
      while (p < src_.size() && absl::ascii_isspace(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      size_t end = src_.find("%}", p);
      if (end == std::string::npos) return Error(line_, "unterminated tag");
      std::string body = src_.substr(pos_, open - pos_);
      if (sign == '-') RStripPy(&body);
      *text += body;
      Advance(end + 2);
      EmitText(text);
      *line_starting = AfterTag(src_[end - 1] == '-',
                                src_[end - 1] != '+' && options_.trim_blocks);
      return absl::OkStatus();
    }
  }

  // Tokens up to the closing `%}`/`}}` (with an optional -/+ before it) at
  // bracket depth 0. Returns whether the close had `-`.
  absl::StatusOr<bool> LexTagBody(char close_char, int tag_line) {
    int depth = 0;
    plus_end_ = false;
    while (true) {
      while (pos_ < src_.size() && absl::ascii_isspace(src_[pos_])) {
        Advance(pos_ + 1);
      }
      if (pos_ >= src_.size()) return Error(tag_line, "unterminated tag");
      char c = src_[pos_];
      if (depth == 0) {
        size_t p = pos_;
        bool minus = false, plus = false;
        if ((c == '-' || c == '+') && p + 2 < src_.size() &&
            src_[p + 1] == close_char && src_[p + 2] == '}') {
          minus = c == '-';
          plus = c == '+';
          ++p;
        }
        if (src_[p] == close_char && p + 1 < src_.size() &&
            src_[p + 1] == '}') {
          Advance(p + 2);
          tokens_.push_back({close_char == '%' ? Token::Kind::kBlockEnd
                                               : Token::Kind::kVarEnd,
                             "", line_});
          plus_end_ = plus;
          return minus;
        }
      }
      int line = line_;
      if (absl::ascii_isalpha(c) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() &&
               (absl::ascii_isalnum(src_[e]) || src_[e] == '_')) {
          ++e;
        }
        tokens_.push_back(
            {Token::Kind::kName, src_.substr(pos_, e - pos_), line});
        Advance(e);
      } else if (absl::ascii_isdigit(c)) {
        absl::Status s = LexNumber(line);
        if (!s.ok()) return s;
      } else if (c == '\'' || c == '"') {
        size_t e = pos_ + 1;
        while (e < src_.size() && src_[e] != c) e += src_[e] == '\\' ? 2 : 1;
        if (e >= src_.size()) return Error(line, "unterminated string literal");
        tokens_.push_back(
            {Token::Kind::kString,
             Unescape(absl::string_view(src_).substr(pos_ + 1, e - pos_ - 1)),
             line});
        Advance(e + 1);
      } else {
        static constexpr const char* kOps[] = {
            "//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
            "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
            ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
        bool matched = false;
        for (const char* op : kOps) {
          size_t n = std::char_traits<char>::length(op);
          if (src_.compare(pos_, n, op) == 0) {
            if (op[0] == '(' || op[0] == '[' || op[0] == '{') ++depth;
            if ((op[0] == ')' || op[0] == ']' || op[0] == '}') && depth > 0) {
              --depth;
            }
            tokens_.push_back({Token::Kind::kOp, op, line});
            Advance(pos_ + n);
            matched = true;
            break;
          }
        }
        if (!matched) {
          return Error(line, absl::StrCat("unexpected character '",
                                          std::string(1, c), "'"));
        }
      }
    }
  }

  absl::Status LexNumber(int line) {
    size_t e = pos_;
    auto digits = [&](auto pred) {
      while (e < src_.size() && (pred(src_[e]) || src_[e] == '_')) ++e;
    };
    if (src_[e] == '0' && e + 1 < src_.size() &&
        (src_[e + 1] == 'x' || src_[e + 1] == 'o' || src_[e + 1] == 'b')) {
      char base = src_[e + 1];
      e += 2;
      digits([](char ch) { return absl::ascii_isxdigit(ch); });
      std::string d;
      for (size_t k = pos_ + 2; k < e; ++k) {
        if (src_[k] != '_') d.push_back(src_[k]);
      }
      int b = base == 'x' ? 16 : base == 'o' ? 8 : 2;
      tokens_.push_back(
          {Token::Kind::kInt, std::to_string(std::stoll(d, nullptr, b)), line});
      Advance(e);
      return absl::OkStatus();
    }
    auto is_digit = [](char ch) { return absl::ascii_isdigit(ch); };
    digits(is_digit);
    bool is_float = false;
    if (e + 1 < src_.size() && src_[e] == '.' &&
        absl::ascii_isdigit(src_[e + 1])) {
      is_float = true;
      ++e;
      digits(is_digit);
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t x = e + 1;
      if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
      if (x < src_.size() && absl::ascii_isdigit(src_[x])) {
        is_float = true;
        e = x;
        digits(is_digit);
      }
    }
    std::string d;
    for (size_t k = pos_; k < e; ++k) {
      if (src_[k] != '_') d.push_back(src_[k]);
    }
    tokens_.push_back(
        {is_float ? Token::Kind::kFloat : Token::Kind::kInt, d, line});
    Advance(e);
    return absl::OkStatus();
  }

  std::string src_;
  LexOptions options_;
  size_t pos_ = 0;
  int line_ = 1;
  int text_line_ = 1;
  bool plus_end_ = false;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(absl::string_view source,
                                       const LexOptions& options) {
  // Newlines normalised to \n; one trailing newline dropped.
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src.push_back(source[i]);
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src), options).Run();
}

}  // namespace duet::chat::jinja
