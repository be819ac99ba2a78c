#include "tokenizer/post_processor.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/json_util.h"

namespace duet::tokenizer {
namespace {

using json_util::Json;

// ["[CLS]", 101] -> 101
absl::StatusOr<int32_t> TokenPairId(const Json& config, const char* key, absl::string_view where) {
  const Json* v = json_util::Find(config, key);
  if (v == nullptr || !v->is_array() || v->size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be [token, id]"));
  }
  return json_util::ToId((*v)[1], where);
}

// Applies one processor's wrapping on top of what is already in prefix/suffix.
absl::Status Wrap(const Json& config, std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  const std::string type = json_util::TypeOf(config);
  const std::string where = absl::StrCat("post_processor ", type);
  if (type == "ByteLevel") return absl::OkStatus();  // adjusts offsets only
  if (type == "Sequence") {
    const Json* list = json_util::Find(config, "processors");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("post_processor Sequence: \"processors\" must be a list");
    }
    for (const Json& p : *list) DUET_RETURN_IF_ERROR(Wrap(p, prefix, suffix));
    return absl::OkStatus();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    DUET_ASSIGN_OR_RETURN(int32_t cls, TokenPairId(config, "cls", where));
    DUET_ASSIGN_OR_RETURN(int32_t sep, TokenPairId(config, "sep", where));
    prefix->insert(prefix->begin(), cls);
    suffix->push_back(sep);
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    const Json* single = json_util::Find(config, "single");
    const Json* specials = json_util::Find(config, "special_tokens");
    if (single == nullptr || !single->is_array()) {
      return absl::InvalidArgumentError("post_processor TemplateProcessing: \"single\" must be a list");
    }
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (const Json& piece : *single) {
      if (json_util::Find(piece, "Sequence") != nullptr) {
        if (seen_sequence) {
          return absl::InvalidArgumentError(
              "post_processor TemplateProcessing: \"single\" uses the sequence twice");
        }
        seen_sequence = true;
        continue;
      }
      const Json* special = json_util::Find(piece, "SpecialToken");
      if (special == nullptr) {
        return absl::InvalidArgumentError(
            "post_processor TemplateProcessing: pieces must be Sequence or SpecialToken");
      }
      DUET_ASSIGN_OR_RETURN(std::string name, json_util::GetString(*special, "id", where));
      const Json* entry = specials != nullptr ? json_util::Find(*specials, name.c_str()) : nullptr;
      const Json* ids = entry != nullptr ? json_util::Find(*entry, "ids") : nullptr;
      if (ids == nullptr || !ids->is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "post_processor TemplateProcessing: special token \"", name, "\" has no ids"));
      }
      for (const Json& id : *ids) {
        DUET_ASSIGN_OR_RETURN(int32_t v, json_util::ToId(id, where));
        (seen_sequence ? after : before).push_back(v);
      }
    }
    if (!seen_sequence) {
      return absl::InvalidArgumentError(
          "post_processor TemplateProcessing: \"single\" has no Sequence piece");
    }
    prefix->insert(prefix->begin(), before.begin(), before.end());
    suffix->insert(suffix->end(), after.begin(), after.end());
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported post_processor type \"", type, "\""));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json& config) {
  auto processor = std::make_unique<PostProcessor>();
  if (!config.is_null()) DUET_RETURN_IF_ERROR(Wrap(config, &processor->prefix_, &processor->suffix_));
  return processor;
}

void PostProcessor::Process(std::vector<int32_t>* ids, bool add_special_tokens) const {
  if (!add_special_tokens) return;
  ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
  ids->insert(ids->end(), suffix_.begin(), suffix_.end());
}

}  // namespace duet::tokenizer
