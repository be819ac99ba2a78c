// A Jinja2 template: the subset of Jinja that Hugging Face chat templates
// use, interpreted by our own code. No C++ Jinja implementation is packaged
// in Debian, and the serving path must not embed Python, so the lexer,
// parser and interpreter here are written by hand against Jinja2 3.1's
// behaviour (with the environment transformers renders chat templates in:
// sandboxed, immutable, trim_blocks and lstrip_blocks on, loopcontrols).
// chat/README.md lists what is supported.
//
// Parse rejects every construct Render could not run (unknown tags,
// filters, tests, methods, functions) with InvalidArgument naming it and its
// line, so a loaded template never fails at request time for that reason.
// Render fails with InvalidArgument for runtime errors: raise_exception(),
// type errors, use of undefined values where Jinja raises.
#ifndef DUET_CHAT_TEMPLATE_H_
#define DUET_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chat/ast.h"
#include "chat/value.h"

namespace duet::chat::jinja {

class Template {
 public:
  static absl::StatusOr<Template> Parse(absl::string_view source);

  // Renders with `context` as the template's variables (its keys are
  // variable names).
  absl::StatusOr<std::string> Render(const Object& context) const;

 private:
  explicit Template(std::shared_ptr<const Body> body)
      : body_(std::move(body)) {}
  std::shared_ptr<const Body> body_;
};

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_TEMPLATE_H_
