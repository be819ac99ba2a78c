#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <numbers>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace duet::model {
namespace {

using Json = nlohmann::json;

absl::Status Missing(absl::string_view key) {
  return absl::InvalidArgumentError(
      absl::StrCat("config.json: required field '", key, "' is missing"));
}

absl::StatusOr<int64_t> GetInt(const Json& j, absl::string_view key,
                               int64_t min_value, bool required = true,
                               int64_t fallback = 0) {
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) {
    if (required) return Missing(key);
    return fallback;
  }
  if (!it->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: '", key, "' must be an integer, got ", it->dump()));
  }
  const int64_t v = it->get<int64_t>();
  if (v < min_value || v > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: '", key, "' = ", v, " is out of range (must be >= ",
        min_value, ")"));
  }
  return v;
}

absl::StatusOr<double> GetDouble(const Json& j, absl::string_view key,
                                 double fallback) {
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: '", key, "' must be a number, got ", it->dump()));
  }
  return it->get<double>();
}

absl::StatusOr<std::vector<int32_t>> GetIdList(const Json& j,
                                               absl::string_view key) {
  std::vector<int32_t> ids;
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return ids;
  auto add = [&](const Json& v) -> absl::Status {
    // Above INT32_MAX the cast below would wrap (2^31 -> -2^31, 2^32 + k ->
    // k) into an id that passes the vocabulary check (found by
    // fuzz_model_config).
    if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
        v.get<int64_t>() > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: '", key,
                       "' must hold integers in [0, 2^31), got ", v.dump()));
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    return absl::OkStatus();
  };
  if (it->is_array()) {
    for (const Json& v : *it) DUET_RETURN_IF_ERROR(add(v));
  } else {
    DUET_RETURN_IF_ERROR(add(*it));
  }
  return ids;
}

absl::Status ParseRopeScaling(const Json& j, ModelConfig& c) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) {
    return absl::InvalidArgumentError(
        "config.json: 'rope_scaling' must be an object or null");
  }
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = it->find(key);
    if (t != it->end() && t->is_string()) type = t->get<std::string>();
  }
  if (type == "default" || type.empty()) return absl::OkStatus();
  if (type != "llama3") {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: rope_scaling type '", type,
        "' is not supported (supported: default, llama3)"));
  }
  RopeScaling& r = c.rope_scaling;
  r.type = RopeScaling::Type::kLlama3;
  DUET_ASSIGN_OR_RETURN(r.factor, GetDouble(*it, "factor", 8.0));
  DUET_ASSIGN_OR_RETURN(r.low_freq_factor,
                        GetDouble(*it, "low_freq_factor", 1.0));
  DUET_ASSIGN_OR_RETURN(r.high_freq_factor,
                        GetDouble(*it, "high_freq_factor", 4.0));
  DUET_ASSIGN_OR_RETURN(
      r.original_max_position_embeddings,
      GetInt(*it, "original_max_position_embeddings", 1, false, 8192));
  if (r.factor <= 0 || r.low_freq_factor <= 0 ||
      r.high_freq_factor <= r.low_freq_factor) {
    return absl::InvalidArgumentError(
        "config.json: llama3 rope_scaling needs factor > 0 and "
        "high_freq_factor > low_freq_factor > 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  const Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        "config.json is not a valid JSON object");
  }
  ModelConfig c;
  std::string arch;
  if (auto it = j.find("architectures");
      it != j.end() && it->is_array() && !it->empty() &&
      (*it)[0].is_string()) {
    arch = (*it)[0].get<std::string>();
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) {
    c.model_type = it->get<std::string>();
  }
  if (arch == "Qwen3ForCausalLM" || (arch.empty() && c.model_type == "qwen3")) {
    c.architecture = Architecture::kQwen3;
    c.qk_norm = true;
  } else if (arch == "LlamaForCausalLM" ||
             (arch.empty() && c.model_type == "llama")) {
    c.architecture = Architecture::kLlama;
    c.qk_norm = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: architecture '", arch.empty() ? c.model_type : arch,
        "' is not supported (supported: Qwen3ForCausalLM, LlamaForCausalLM)"));
  }

  DUET_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", 1));
  DUET_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", 1));
  DUET_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", 1));
  DUET_ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_hidden_layers", 1));
  DUET_ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_attention_heads", 1));
  DUET_ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, "num_key_value_heads", 1,
                                               false, c.num_heads));
  if (c.hidden_size % c.num_heads != 0 && !j.contains("head_dim")) {
    return absl::InvalidArgumentError(
        "config.json: hidden_size is not a multiple of num_attention_heads "
        "and no head_dim is given");
  }
  DUET_ASSIGN_OR_RETURN(c.head_dim, GetInt(j, "head_dim", 2, false,
                                           c.hidden_size / c.num_heads));
  DUET_ASSIGN_OR_RETURN(c.max_position_embeddings,
                        GetInt(j, "max_position_embeddings", 1));
  DUET_ASSIGN_OR_RETURN(const double eps, GetDouble(j, "rms_norm_eps", 1e-6));
  c.rms_norm_eps = static_cast<float>(eps);
  DUET_ASSIGN_OR_RETURN(c.rope_theta, GetDouble(j, "rope_theta", 10000.0));
  // transformers >= 4.56 may nest theta under rope_parameters.
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    DUET_ASSIGN_OR_RETURN(c.rope_theta,
                          GetDouble(*it, "rope_theta", c.rope_theta));
  }
  DUET_RETURN_IF_ERROR(ParseRopeScaling(j, c));
  if (auto it = j.find("tie_word_embeddings"); it != j.end()) {
    if (!it->is_boolean()) {
      return absl::InvalidArgumentError(
          "config.json: 'tie_word_embeddings' must be a boolean");
    }
    c.tie_word_embeddings = it->get<bool>();
  }
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      DUET_ASSIGN_OR_RETURN(c.dtype, ParseDType(it->get<std::string>()));
      break;
    }
  }
  if (auto it = j.find("hidden_act"); it != j.end() && it->is_string() &&
                                      it->get<std::string>() != "silu") {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: hidden_act '", it->get<std::string>(),
        "' is not supported (only silu)"));
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (auto it = j.find(key);
        it != j.end() && it->is_boolean() && it->get<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config.json: '", key, "' = true is not supported"));
    }
  }
  DUET_ASSIGN_OR_RETURN(c.bos_token_id,
                        GetInt(j, "bos_token_id", 0, false, -1));
  DUET_ASSIGN_OR_RETURN(c.eos_token_ids, GetIdList(j, "eos_token_id"));

  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: num_attention_heads (", c.num_heads,
        ") must be a multiple of num_key_value_heads (", c.num_kv_heads, ")"));
  }
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config.json: head_dim (", c.head_dim,
                     ") must be even for rotary embeddings"));
  }
  // Finite too: rms_norm_eps 1e39 becomes +inf as a float, and a
  // rope_theta below 1 makes RopeInvFreq overflow (1 / 1e-300^x).
  if (!(c.rope_theta >= 1) || !std::isfinite(c.rope_theta) ||
      !(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config.json: rope_theta must be a finite number >= 1 and "
        "rms_norm_eps a positive finite float; got ",
        c.rope_theta, " and ", c.rms_norm_eps));
  }
  for (int32_t id : c.eos_token_ids) {
    if (id >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config.json: eos_token_id ", id, " is outside the vocabulary"));
    }
  }
  return c;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("cannot read ", path));
  return ss.str();
}

absl::Status MergeGenerationConfig(absl::string_view json_text,
                                   ModelConfig& config) {
  const Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        "generation_config.json is not a valid JSON object");
  }
  auto ids = GetIdList(j, "eos_token_id");
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation_config.json: ", ids.status().message()));
  }
  for (int32_t id : *ids) {
    if (id >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "generation_config.json: eos_token_id ", id,
          " is outside the vocabulary"));
    }
    if (std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(),
                  id) == config.eos_token_ids.end()) {
      config.eos_token_ids.push_back(id);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  DUET_ASSIGN_OR_RETURN(std::string text,
                        ReadFileToString(dir + "/config.json"));
  auto config = ParseModelConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(dir, "/", config.status().message()));
  }
  // Hugging Face generation stops on generation_config.json's EOS ids too
  // (Qwen3 lists both <|im_end|> and <|endoftext|> there).
  auto gen = ReadFileToString(dir + "/generation_config.json");
  if (gen.ok()) {
    absl::Status merged = MergeGenerationConfig(*gen, *config);
    if (!merged.ok()) {
      return absl::Status(merged.code(),
                          absl::StrCat(dir, "/", merged.message()));
    }
  }
  return config;
}

std::vector<float> RopeInvFreq(const ModelConfig& c) {
  const int32_t half = c.head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int32_t i = 0; i < half; ++i) {
    // Hugging Face: 1 / base ** (arange(0, dim, 2).float() / dim) in fp32.
    const float exponent =
        static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(exponent));
    if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
      const RopeScaling& r = c.rope_scaling;
      const double old_ctx =
          static_cast<double>(r.original_max_position_embeddings);
      const double low_wavelen = old_ctx / r.low_freq_factor;
      const double high_wavelen = old_ctx / r.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = f / r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1.0 - smooth) * f / r.factor + smooth * f;
      }
    }
    inv_freq[i] = static_cast<float>(f);
  }
  return inv_freq;
}

}  // namespace duet::model
