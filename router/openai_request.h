// The OpenAI-compatible API's request side: a /v1/completions or
// /v1/chat/completions JSON body -> the duet.v1.GenerateRequest(s) to run,
// with every field's type and value checked (400 naming the field and what
// to send instead). Pure: no I/O, so it is unit-tested on its own.
#ifndef DUET_ROUTER_OPENAI_REQUEST_H_
#define DUET_ROUTER_OPENAI_REQUEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "duet/v1/client.pb.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace duet::router::openai {

// An error in OpenAI's shape: {"error": {"message", "type", "param",
// "code"}} with an HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" is null
  std::string code;   // "" is null
};
std::string ErrorBody(const ApiError& e);
ApiError BadRequest(std::string param, std::string message);

struct ServedModel {
  // The checkpoint's base name ("Qwen3-0.6B"); empty while no node has
  // registered.
  std::string name;
  // The cluster's context length (0: unknown).
  int32_t max_model_len = 0;
};

// What the parser needs from the router.
struct ParseContext {
  const tokenizer::Tokenizer* tokenizer = nullptr;  // required
  // The checkpoint's chat template; null: chat requests are refused with
  // `chat_template_error`.
  const chat::ChatTemplate* chat_template = nullptr;
  std::string chat_template_error;
  ServedModel model;
  int max_n = 128;
};

// One request of the API, resolved.
struct Plan {
  bool chat = false;
  std::string model;
  // One entry per prompt (completions may send several; chat one). Each
  // has prompt or prompt_token_ids, sampling (seed as given) and
  // return_text set.
  std::vector<v1::GenerateRequest> prompts;
  int n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // Per-token logprobs in the response (chat: `logprobs: true`,
  // completions: `logprobs: N`), with this many alternatives per token
  // (chat: `top_logprobs`, completions: N).
  bool logprobs = false;
  int top_logprobs = 0;
};

// Parses a JSON body. `chat` selects /v1/chat/completions (messages) over
// /v1/completions (prompt).
std::variant<Plan, ApiError> ParseGenerate(const std::string& body, bool chat,
                                           const ParseContext& ctx);

// The parsed JSON object of a body, or 400 (malformed JSON, not an
// object).
std::variant<nlohmann::ordered_json, ApiError> ParseJsonObject(
    const std::string& body);

// The prompt text of `messages` (checked as in ParseGenerate) rendered with
// the chat template; for /tokenize.
std::variant<std::string, ApiError> RenderChat(
    const nlohmann::ordered_json& body, const ParseContext& ctx);

}  // namespace duet::router::openai

#endif  // DUET_ROUTER_OPENAI_REQUEST_H_
