// Tokens -> syntax tree, with Jinja2's grammar and operator precedence.
// Everything the interpreter could not run is rejected here, at load time,
// naming the construct and its line: unknown or unsupported tags, filters,
// tests, methods and global functions.
#ifndef DUET_CHAT_PARSER_H_
#define DUET_CHAT_PARSER_H_

#include <vector>

#include "absl/status/statusor.h"
#include "chat/ast.h"
#include "chat/lexer.h"

namespace duet::chat::jinja {

absl::StatusOr<Body> Parse(const std::vector<Token>& tokens);

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_PARSER_H_
