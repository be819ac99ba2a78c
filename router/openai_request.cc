#include "router/openai_request.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace duet::router::openai {
namespace {

using json = nlohmann::ordered_json;

// Router limits repeated here so the message names the API's field.
constexpr int kMaxStops = 16;
constexpr int kMaxPrompts = 256;

std::string TypeName(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

ApiError WrongType(const std::string& field, const json& v,
                   const std::string& want) {
  return BadRequest(field, absl::StrCat("'", field, "' must be ", want,
                                        ", got ", TypeName(v)));
}

bool IsInt(const json& v) {
  return v.is_number_integer() || v.is_number_unsigned();
}

// Reads the optional field `name` of `body` with `read` when present and
// not null. Returns the first error.
class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}
  const json* Get(const std::string& name) const {
    auto it = body_.find(name);
    if (it == body_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::optional<ApiError> Number(const std::string& name, double* out) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) return WrongType(name, *v, "a number");
    *out = v->get<double>();
    if (!std::isfinite(*out)) {
      return BadRequest(name, absl::StrCat("'", name, "' must be finite"));
    }
    return std::nullopt;
  }
  std::optional<ApiError> Int(const std::string& name, int64_t* out) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!IsInt(*v)) return WrongType(name, *v, "an integer");
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() >
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return BadRequest(name, absl::StrCat("'", name, "' is too large"));
    }
    *out = v->get<int64_t>();
    return std::nullopt;
  }
  std::optional<ApiError> Bool(const std::string& name, bool* out) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) return WrongType(name, *v, "a boolean");
    *out = v->get<bool>();
    return std::nullopt;
  }
  std::optional<ApiError> String(const std::string& name,
                                 std::string* out) const {
    const json* v = Get(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return WrongType(name, *v, "a string");
    *out = v->get<std::string>();
    return std::nullopt;
  }

 private:
  const json& body_;
};

#define DUET_RETURN_IF_ERROR(expr)               \
  if (std::optional<ApiError> _e = (expr); _e) { \
    return *_e;                                  \
  }

ApiError NotSupportedYet(const std::string& field, const std::string& neutral) {
  return BadRequest(
      field,
      absl::StrCat("'", field, "' is not supported yet; leave it out or send ",
                   neutral));
}

constexpr int kMaxTopLogprobs = 20;  // OpenAI's limit, the sampler's too

// THE place for sampling fields beyond the basic ones: penalties, min_p and
// logprobs (each read into `sampling` and its proto field).
std::optional<ApiError> ApplyPendingSamplingFields(const Fields& f, bool chat,
                                                   Plan* plan,
                                                   v1::SamplingParams* s) {
  // Penalties and min_p go to the sampler as given; the router's Validate
  // checks their ranges (INVALID_ARGUMENT naming the field: a 400 here).
  double presence = 0, frequency = 0, repetition = 1.0, min_p = 0;
  DUET_RETURN_IF_ERROR(f.Number("presence_penalty", &presence));
  DUET_RETURN_IF_ERROR(f.Number("frequency_penalty", &frequency));
  DUET_RETURN_IF_ERROR(f.Number("repetition_penalty", &repetition));
  DUET_RETURN_IF_ERROR(f.Number("min_p", &min_p));
  s->set_presence_penalty(static_cast<float>(presence));
  s->set_frequency_penalty(static_cast<float>(frequency));
  // 1.0 (OpenAI's and vLLM's neutral value) is off; so is the proto's 0.
  s->set_repetition_penalty(repetition == 1.0 ? 0.0f
                                              : static_cast<float>(repetition));
  s->set_min_p(static_cast<float>(min_p));
  // logprobs: a boolean in chat (with `top_logprobs` alternatives), an
  // integer in completions (how many alternatives; 0 still returns the
  // sampled token's logprob). null and false ask for nothing.
  const std::string range = absl::StrCat("[0, ", kMaxTopLogprobs, "]");
  int64_t top = 0;
  if (const json* v = f.Get("logprobs")) {
    if (chat) {
      if (!v->is_boolean()) {
        return WrongType("logprobs", *v, "a boolean or null");
      }
      plan->logprobs = v->get<bool>();
    } else {
      if (!IsInt(*v)) {
        return WrongType("logprobs", *v,
                         absl::StrCat("an integer in ", range, " or null"));
      }
      DUET_RETURN_IF_ERROR(f.Int("logprobs", &top));
      if (top < 0 || top > kMaxTopLogprobs) {
        return BadRequest("logprobs",
                          absl::StrCat("'logprobs' must be in ", range,
                                       " (alternatives per token), got ", top));
      }
      plan->logprobs = true;
    }
  }
  if (const json* v = f.Get("top_logprobs")) {
    if (!chat) {
      // Not a field of the legacy endpoint: its count is `logprobs`. Only
      // the neutral value is taken, so a client never silently gets less
      // than it asked for.
      if (!IsInt(*v) || v->get<int64_t>() != 0) {
        return BadRequest("top_logprobs",
                          "'top_logprobs' is a chat field; on "
                          "/v1/completions send 'logprobs': N instead");
      }
    } else {
      if (!IsInt(*v)) {
        return WrongType("top_logprobs", *v,
                         absl::StrCat("an integer in ", range, " or null"));
      }
      DUET_RETURN_IF_ERROR(f.Int("top_logprobs", &top));
      if (top < 0 || top > kMaxTopLogprobs) {
        return BadRequest(
            "top_logprobs",
            absl::StrCat("'top_logprobs' must be in ", range, ", got ", top));
      }
      if (top > 0 && !plan->logprobs) {
        return BadRequest("top_logprobs",
                          "'top_logprobs' needs 'logprobs': true");
      }
    }
  }
  plan->top_logprobs = plan->logprobs ? static_cast<int>(top) : 0;
  s->set_logprobs(plan->logprobs);
  s->set_top_logprobs(plan->top_logprobs);
  return std::nullopt;
}

// Fields of both endpoints that map to SamplingParams (and n, stream).
std::optional<ApiError> ReadCommon(const Fields& f, bool chat,
                                   const ParseContext& ctx, Plan* plan,
                                   v1::SamplingParams* s,
                                   std::optional<int64_t>* max_tokens) {
  // OpenAI's default is 1.0 (duet's proto default 0 would be greedy).
  double temperature = 1.0;
  DUET_RETURN_IF_ERROR(f.Number("temperature", &temperature));
  if (temperature < 0) {
    return BadRequest("temperature", "'temperature' must be >= 0 (0 = greedy)");
  }
  s->set_temperature(static_cast<float>(temperature));
  double top_p = 1.0;
  DUET_RETURN_IF_ERROR(f.Number("top_p", &top_p));
  if (top_p <= 0 || top_p > 1) {
    return BadRequest("top_p", "'top_p' must be in (0, 1]");
  }
  s->set_top_p(static_cast<float>(top_p));
  int64_t top_k = 0;
  DUET_RETURN_IF_ERROR(f.Int("top_k", &top_k));
  if (top_k < -1 || top_k > std::numeric_limits<int32_t>::max()) {
    return BadRequest("top_k", "'top_k' must be -1 or 0 (off) or >= 1");
  }
  s->set_top_k(top_k < 0 ? 0 : static_cast<int32_t>(top_k));
  if (const json* v = f.Get("seed")) {
    if (!IsInt(*v)) return WrongType("seed", *v, "an integer");
    s->set_seed(v->is_number_unsigned()
                    ? v->get<uint64_t>()
                    : static_cast<uint64_t>(v->get<int64_t>()));
  }
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (!chat && std::string(name) == "max_completion_tokens") continue;
    int64_t v = 0;
    if (f.Get(name) == nullptr) continue;
    DUET_RETURN_IF_ERROR(f.Int(name, &v));
    if (v < 1 || v > std::numeric_limits<int32_t>::max()) {
      return BadRequest(name, absl::StrCat("'", name, "' must be >= 1"));
    }
    *max_tokens = v;  // max_completion_tokens, read last, wins
  }
  if (const json* v = f.Get("stop")) {
    std::vector<std::string> stops;
    if (v->is_string()) {
      stops.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& e : *v) {
        if (!e.is_string()) {
          return WrongType("stop", e, "a string or an array of strings");
        }
        stops.push_back(e.get<std::string>());
      }
    } else {
      return WrongType("stop", *v, "a string or an array of strings");
    }
    if (stops.size() > kMaxStops) {
      return BadRequest("stop", absl::StrCat("'stop' has ", stops.size(),
                                             " strings; at most ", kMaxStops));
    }
    for (const std::string& stop : stops) {
      if (stop.empty()) {
        return BadRequest("stop", "'stop' strings must not be empty");
      }
      s->add_stop(stop);
    }
  }
  if (const json* v = f.Get("stop_token_ids")) {
    if (!v->is_array()) return WrongType("stop_token_ids", *v, "an array");
    for (const json& e : *v) {
      if (!IsInt(e) || e.get<int64_t>() < 0 ||
          e.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return BadRequest("stop_token_ids",
                          "'stop_token_ids' must hold token ids (integers "
                          ">= 0)");
      }
      s->add_stop_token_ids(e.get<int32_t>());
    }
  }
  bool ignore_eos = false;
  DUET_RETURN_IF_ERROR(f.Bool("ignore_eos", &ignore_eos));
  s->set_ignore_eos(ignore_eos);
  std::string user;
  DUET_RETURN_IF_ERROR(f.String("user", &user));
  int64_t n = 1;
  DUET_RETURN_IF_ERROR(f.Int("n", &n));
  if (n < 1 || n > ctx.max_n) {
    return BadRequest("n", absl::StrCat("'n' must be in [1, ", ctx.max_n, "]"));
  }
  plan->n = static_cast<int>(n);
  DUET_RETURN_IF_ERROR(f.Bool("stream", &plan->stream));
  if (const json* v = f.Get("stream_options")) {
    if (!v->is_object()) return WrongType("stream_options", *v, "an object");
    if (!plan->stream) {
      return BadRequest("stream_options",
                        "'stream_options' is only allowed when 'stream' is "
                        "true");
    }
    DUET_RETURN_IF_ERROR(
        Fields(*v).Bool("include_usage", &plan->include_usage));
  }
  // Fields whose only supported value is "off".
  if (const json* v = f.Get("best_of")) {
    if (!IsInt(*v)) return WrongType("best_of", *v, "an integer");
    if (v->get<int64_t>() != n) {
      return NotSupportedYet("best_of", "null or the same value as 'n'");
    }
  }
  if (const json* v = f.Get("logit_bias")) {
    if (!v->is_object()) return WrongType("logit_bias", *v, "an object");
    if (!v->empty()) return NotSupportedYet("logit_bias", "null or {}");
  }
  return ApplyPendingSamplingFields(f, chat, plan, s);
}

std::optional<ApiError> CheckModel(const Fields& f, const ParseContext& ctx,
                                   Plan* plan) {
  if (ctx.model.name.empty()) {
    ApiError e;
    e.http_status = 503;
    e.type = "service_unavailable";
    e.message =
        "no model is served yet: no node has registered with this router; "
        "start prefill and decode nodes (or colocated ones) with --router "
        "pointing here, then retry (GET /health answers 200 once a request "
        "can be scheduled)";
    return e;
  }
  plan->model = ctx.model.name;
  std::string model;
  DUET_RETURN_IF_ERROR(f.String("model", &model));
  if (!model.empty() && model != ctx.model.name) {
    ApiError e;
    e.http_status = 404;
    e.param = "model";
    e.code = "model_not_found";
    e.message = absl::StrCat("The model '", model,
                             "' does not exist; this server serves '",
                             ctx.model.name, "'");
    return e;
  }
  return std::nullopt;
}

// messages with list-of-parts content flattened to strings (text parts
// joined by "\n", as vLLM does), checked.
std::variant<json, ApiError> NormalizeMessages(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) {
    return BadRequest("messages", "'messages' is required");
  }
  if (!it->is_array()) return WrongType("messages", *it, "an array");
  if (it->empty()) {
    return BadRequest("messages", "'messages' must not be empty");
  }
  json out = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const std::string at = absl::StrCat("messages[", i, "]");
    json m = (*it)[i];
    if (!m.is_object()) return WrongType(at, m, "an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return BadRequest(at + ".role",
                        absl::StrCat("'", at, ".role' must be a string"));
    }
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pat = absl::StrCat(at, ".content[", j, "]");
        if (!part.is_object() || !part.contains("type") ||
            !part["type"].is_string()) {
          return BadRequest(pat, absl::StrCat("'", pat,
                                              "' must be an object with a "
                                              "string 'type'"));
        }
        if (part["type"] != "text") {
          return BadRequest(pat,
                            absl::StrCat("'", pat, "' has type '",
                                         part["type"].get<std::string>(),
                                         "'; only text parts are supported"));
        }
        if (!part.contains("text") || !part["text"].is_string()) {
          return BadRequest(pat,
                            absl::StrCat("'", pat, ".text' must be a string"));
        }
        if (j > 0) text += "\n";
        text += part["text"].get<std::string>();
      }
      *content = text;
    } else if (content != m.end() && !content->is_string() &&
               !content->is_null()) {
      return WrongType(at + ".content", *content,
                       "a string, an array of text parts or null");
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

ApiError BadRequest(std::string param, std::string message) {
  ApiError e;
  e.param = std::move(param);
  e.message = std::move(message);
  return e;
}

std::string ErrorBody(const ApiError& e) {
  json j;
  j["error"]["message"] = e.message;
  j["error"]["type"] = e.type;
  j["error"]["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  j["error"]["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::variant<json, ApiError> ParseJsonObject(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return BadRequest("",
                      absl::StrCat("the body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) {
    return BadRequest(
        "", absl::StrCat("the body must be a JSON object, got ", TypeName(j)));
  }
  return j;
}

std::variant<std::string, ApiError> RenderChat(const json& body,
                                               const ParseContext& ctx) {
  if (ctx.chat_template == nullptr) {
    return BadRequest("messages", ctx.chat_template_error);
  }
  auto messages = NormalizeMessages(body);
  if (auto* e = std::get_if<ApiError>(&messages)) return *e;
  const Fields f(body);
  json tools = nullptr;
  if (const json* v = f.Get("tools")) {
    if (!v->is_array()) return WrongType("tools", *v, "an array");
    tools = *v;
  }
  json kwargs = nullptr;
  if (const json* v = f.Get("chat_template_kwargs")) {
    if (!v->is_object()) {
      return WrongType("chat_template_kwargs", *v, "an object");
    }
    kwargs = *v;
  }
  bool add_generation_prompt = true;
  DUET_RETURN_IF_ERROR(f.Bool("add_generation_prompt", &add_generation_prompt));
  auto text = ctx.chat_template->Render(std::get<json>(messages), tools,
                                        add_generation_prompt, kwargs);
  if (!text.ok()) {
    return BadRequest("messages", absl::StrCat("the chat template failed: ",
                                               text.status().message()));
  }
  return *std::move(text);
}

std::variant<Plan, ApiError> ParseGenerate(const std::string& body, bool chat,
                                           const ParseContext& ctx) {
  auto parsed = ParseJsonObject(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const json& j = std::get<json>(parsed);
  const Fields f(j);
  Plan plan;
  plan.chat = chat;
  DUET_RETURN_IF_ERROR(CheckModel(f, ctx, &plan));
  v1::SamplingParams sampling;
  std::optional<int64_t> max_tokens;
  DUET_RETURN_IF_ERROR(ReadCommon(f, chat, ctx, &plan, &sampling, &max_tokens));
  if (chat) {
    if (const json* v = f.Get("response_format")) {
      if (!v->is_object() || !v->contains("type") || (*v)["type"] != "text") {
        return NotSupportedYet("response_format", "{\"type\": \"text\"}");
      }
    }
    auto text = RenderChat(j, ctx);
    if (auto* e = std::get_if<ApiError>(&text)) return *e;
    // The template wrote the special tokens (BOS included) itself.
    auto ids = ctx.tokenizer->Encode(std::get<std::string>(text),
                                     /*add_special_tokens=*/false);
    if (!ids.ok()) {
      return BadRequest("messages", absl::StrCat("cannot tokenize the prompt: ",
                                                 ids.status().message()));
    }
    if (ids->empty()) {
      return BadRequest("messages", "the rendered prompt has no tokens");
    }
    const int64_t room =
        static_cast<int64_t>(ctx.model.max_model_len) - ids->size();
    if (!max_tokens.has_value()) {
      // OpenAI's default for chat: whatever fits the context.
      if (ctx.model.max_model_len > 0 && room < 1) {
        return BadRequest("messages",
                          absl::StrCat("the prompt is ", ids->size(),
                                       " tokens; the model's context is ",
                                       ctx.model.max_model_len));
      }
      max_tokens = ctx.model.max_model_len > 0 ? room : 16;
    }
    v1::GenerateRequest req;
    req.mutable_prompt_token_ids()->Add(ids->begin(), ids->end());
    plan.prompts.push_back(std::move(req));
  } else {
    for (const char* name : {"echo"}) {
      bool v = false;
      DUET_RETURN_IF_ERROR(f.Bool(name, &v));
      if (v) return NotSupportedYet(name, "false");
    }
    std::string suffix;
    DUET_RETURN_IF_ERROR(f.String("suffix", &suffix));
    if (!suffix.empty()) return NotSupportedYet("suffix", "null");
    const json* p = f.Get("prompt");
    if (p == nullptr) return BadRequest("prompt", "'prompt' is required");
    const std::string want =
        "a string, an array of strings, an array of token ids or an array "
        "of arrays of token ids";
    auto add_ids = [&](const json& arr) -> std::optional<ApiError> {
      v1::GenerateRequest req;
      for (const json& e : arr) {
        if (!IsInt(e) || e.get<int64_t>() < 0 ||
            e.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          return BadRequest("prompt",
                            "'prompt' token ids must be integers >= 0");
        }
        req.add_prompt_token_ids(e.get<int32_t>());
      }
      if (req.prompt_token_ids().empty()) {
        return BadRequest("prompt", "'prompt' must not be empty");
      }
      plan.prompts.push_back(std::move(req));
      return std::nullopt;
    };
    auto add_text = [&](const json& s) -> std::optional<ApiError> {
      if (s.get_ref<const std::string&>().empty()) {
        return BadRequest("prompt", "'prompt' must not be empty");
      }
      v1::GenerateRequest req;
      req.set_prompt(s.get<std::string>());
      plan.prompts.push_back(std::move(req));
      return std::nullopt;
    };
    if (p->is_string()) {
      DUET_RETURN_IF_ERROR(add_text(*p));
    } else if (!p->is_array() || p->empty()) {
      return p->is_array() ? BadRequest("prompt", "'prompt' must not be empty")
                           : WrongType("prompt", *p, want);
    } else if (IsInt((*p)[0])) {
      DUET_RETURN_IF_ERROR(add_ids(*p));
    } else {
      if (p->size() > kMaxPrompts) {
        return BadRequest("prompt",
                          absl::StrCat("'prompt' holds ", p->size(),
                                       " prompts; at most ", kMaxPrompts));
      }
      for (const json& e : *p) {
        if (e.is_string()) {
          DUET_RETURN_IF_ERROR(add_text(e));
        } else if (e.is_array()) {
          DUET_RETURN_IF_ERROR(add_ids(e));
        } else {
          return WrongType("prompt", *p, want);
        }
      }
    }
    if (!max_tokens.has_value()) max_tokens = 16;  // OpenAI's default
  }
  if (static_cast<int64_t>(plan.prompts.size()) * plan.n > ctx.max_n) {
    return BadRequest(
        "n", absl::StrCat("prompts x 'n' is ", plan.prompts.size() * plan.n,
                          "; at most ", ctx.max_n));
  }
  sampling.set_max_tokens(static_cast<int32_t>(*max_tokens));
  for (v1::GenerateRequest& req : plan.prompts) {
    *req.mutable_sampling() = sampling;
    req.set_return_text(true);
  }
  return plan;
}

}  // namespace duet::router::openai
