#include "chat/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace duet::chat {
namespace {

using nlohmann::ordered_json;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order.
constexpr const char* kSpecialTokenNames[] = {
    "bos_token", "eos_token", "unk_token", "sep_token",
    "pad_token", "cls_token", "mask_token"};

// A special token in tokenizer_config.json: a string or an AddedToken dict
// ({"__type": "AddedToken", "content": ...}); null/absent means none.
std::optional<std::string> TokenText(const ordered_json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) {
    return j["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> SpecialTokens::Get(const std::string& name) const {
  for (const auto& [k, v] : tokens) {
    if (k == name) return v;
  }
  return std::nullopt;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(
    const std::string& source, SpecialTokens special_tokens) {
  DUET_ASSIGN_OR_RETURN(jinja::Template tmpl, jinja::Template::Parse(source));
  return ChatTemplate(source, std::move(tmpl), std::move(special_tokens));
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromCheckpoint(
    const std::string& dir) {
  const std::filesystem::path root(dir);
  ordered_json config = ordered_json::object();
  const auto config_path = root / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    DUET_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
    config = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_path.string(), ": not a JSON object"));
    }
  }
  SpecialTokens special;
  for (const char* name : kSpecialTokenNames) {
    if (!config.contains(name)) continue;
    if (std::optional<std::string> t = TokenText(config[name])) {
      special.tokens.emplace_back(name, *t);
    }
  }
  if (config.contains("additional_special_tokens") &&
      config["additional_special_tokens"].is_array()) {
    for (const auto& t : config["additional_special_tokens"]) {
      if (std::optional<std::string> s = TokenText(t)) {
        special.additional_special_tokens.push_back(*s);
      }
    }
  }

  const auto jinja_path = root / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    DUET_ASSIGN_OR_RETURN(std::string source, ReadFile(jinja_path));
    return FromSource(source, std::move(special));
  }
  if (!config.contains("chat_template") || config["chat_template"].is_null()) {
    return absl::NotFoundError(
        absl::StrCat(dir,
                     ": no chat_template.jinja and no chat_template in "
                     "tokenizer_config.json"));
  }
  const ordered_json& ct = config["chat_template"];
  if (ct.is_string())
    return FromSource(ct.get<std::string>(), std::move(special));
  if (ct.is_array()) {
    std::vector<std::string> names;
    for (const auto& entry : ct) {
      if (!entry.is_object() || !entry.contains("name") ||
          !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string()) {
        return absl::InvalidArgumentError(
            "chat_template list entries must be {\"name\", \"template\"}");
      }
      names.push_back(entry["name"].get<std::string>());
      if (names.back() == "default") {
        return FromSource(entry["template"].get<std::string>(),
                          std::move(special));
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("chat_template list has no \"default\" entry (has: ",
                     absl::StrJoin(names, ", "), ")"));
  }
  return absl::InvalidArgumentError(
      "chat_template must be a string or a list of named templates");
}

absl::StatusOr<std::string> ChatTemplate::Render(
    const ordered_json& messages, const ordered_json& tools,
    bool add_generation_prompt, const ordered_json& extra_kwargs) const {
  if (!messages.is_array()) {
    return absl::InvalidArgumentError("messages must be a JSON array");
  }
  if (!tools.is_null() && !tools.is_array()) {
    return absl::InvalidArgumentError("tools must be null or a JSON array");
  }
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object()) {
    return absl::InvalidArgumentError("extra kwargs must be a JSON object");
  }
  // The variables apply_chat_template passes: messages, tools, documents,
  // add_generation_prompt, then the special tokens overridden by kwargs.
  jinja::Object context;
  context.Set("messages", jinja::Value::FromJson(messages));
  context.Set("tools", jinja::Value::FromJson(tools));
  context.Set("documents", jinja::Value::None());
  context.Set("add_generation_prompt", jinja::Value(add_generation_prompt));
  for (const auto& [name, text] : special_tokens_.tokens) {
    context.Set(name, jinja::Value(text));
  }
  if (!special_tokens_.additional_special_tokens.empty()) {
    jinja::Array extra;
    for (const auto& t : special_tokens_.additional_special_tokens) {
      extra.push_back(jinja::Value(t));
    }
    context.Set("additional_special_tokens", jinja::Value(std::move(extra)));
  }
  if (extra_kwargs.is_object()) {
    for (const auto& [k, v] : extra_kwargs.items()) {
      if (k == "messages" || k == "tools" || k == "documents" ||
          k == "add_generation_prompt") {
        return absl::InvalidArgumentError(
            absl::StrCat("kwarg '", k, "' is set by the caller already"));
      }
      context.Set(k, jinja::Value::FromJson(v));
    }
  }
  return template_.Render(context);
}

}  // namespace duet::chat
