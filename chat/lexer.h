// Template source -> tokens, with Jinja2's whitespace rules applied to the
// text between tags: `{%-`/`-%}` (and the `{{`/`{#` forms) strip all
// whitespace on that side; trim_blocks drops the first newline after a block
// or comment tag; lstrip_blocks drops spaces and tabs between the start of a
// line and a block or comment tag; `+` after `{%` or before `%}` turns those
// off for that tag. Newlines are normalised to "\n" and one trailing newline
// of the template is dropped (keep_trailing_newline=False). These are the
// settings transformers renders chat templates with.
#ifndef DUET_CHAT_LEXER_H_
#define DUET_CHAT_LEXER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::chat::jinja {

struct Token {
  enum class Kind {
    kText,        // literal template text (after whitespace control)
    kBlockBegin,  // {%
    kBlockEnd,    // %}
    kVarBegin,    // {{
    kVarEnd,      // }}
    kName,
    kString,  // value already unescaped
    kInt,
    kFloat,
    kOp,  // operator or punctuation, in `value`
    kEof,
  };
  Kind kind;
  std::string value;
  int line;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

// InvalidArgument (with the line) for an unterminated tag, comment or string,
// or a character that starts no token.
absl::StatusOr<std::vector<Token>> Lex(absl::string_view source,
                                       const LexOptions& options = {});

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_LEXER_H_
