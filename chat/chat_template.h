// A checkpoint's chat template: messages (OpenAI chat format) -> prompt
// text, rendered the way transformers' apply_chat_template(...,
// tokenize=False) does, by our Jinja interpreter (chat/template.h).
//
// Messages, tools and kwargs are nlohmann::ordered_json, not nlohmann::json:
// templates print tool schemas and arguments with tojson, and transformers
// keeps the key order the client sent (Python dicts are ordered), which a
// sorted nlohmann::json would lose. Parse request bodies with ordered_json.
#ifndef DUET_CHAT_CHAT_TEMPLATE_H_
#define DUET_CHAT_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "chat/template.h"
#include "nlohmann/json.hpp"

namespace duet::chat {

// The special tokens transformers passes to every chat template (its
// special_tokens_map: only those the tokenizer has).
struct SpecialTokens {
  std::vector<std::pair<std::string, std::string>> tokens;  // name, text
  std::vector<std::string> additional_special_tokens;

  // The token named `name` ("bos_token", ...), if present.
  std::optional<std::string> Get(const std::string& name) const;
};

class ChatTemplate {
 public:
  // Reads `dir`/chat_template.jinja if present (it wins, as in
  // transformers), else "chat_template" from `dir`/tokenizer_config.json: a
  // string, or a list of {"name", "template"} from which "default" is taken.
  // Special tokens come from tokenizer_config.json (strings or AddedToken
  // dicts). NotFound when there is no template; InvalidArgument when it does
  // not parse or uses an unsupported construct (naming it and its line).
  static absl::StatusOr<ChatTemplate> FromCheckpoint(const std::string& dir);
  static absl::StatusOr<ChatTemplate> FromSource(const std::string& source,
                                                 SpecialTokens special_tokens);

  // The prompt for `messages` (a JSON array of message objects). `tools`
  // may be null (the template sees None) or an array of tool schemas;
  // `extra_kwargs` (an object or null) become template variables, e.g.
  // {"enable_thinking": false}, overriding special tokens as in
  // transformers. InvalidArgument for raise_exception() and other runtime
  // errors, with their message.
  absl::StatusOr<std::string> Render(
      const nlohmann::ordered_json& messages,
      const nlohmann::ordered_json& tools, bool add_generation_prompt,
      const nlohmann::ordered_json& extra_kwargs) const;

  const std::string& source() const { return source_; }
  const SpecialTokens& special_tokens() const { return special_tokens_; }

 private:
  ChatTemplate(std::string source, jinja::Template tmpl,
               SpecialTokens special_tokens)
      : source_(std::move(source)),
        template_(std::move(tmpl)),
        special_tokens_(std::move(special_tokens)) {}

  std::string source_;
  jinja::Template template_;
  SpecialTokens special_tokens_;
};

}  // namespace duet::chat

#endif  // DUET_CHAT_CHAT_TEMPLATE_H_
