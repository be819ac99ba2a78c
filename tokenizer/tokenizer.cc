#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_util.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace duet::tokenizer {

using json_util::Json;

enum class DecoderKind { kNone, kByteLevel };

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;  // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<AddedVocabulary> added;
  std::unique_ptr<PostProcessor> post_processor;
  DecoderKind decoder = DecoderKind::kNone;
  // Skip the byte-level mapping and let BPE start from raw bytes.
  bool raw_bytes = false;

  // Per id: the decoder's bytes, whether the id names a token, whether it
  // is special. Decoded bytes live in one arena to keep 150k ids compact.
  std::string decoded_arena;
  std::vector<uint32_t> decoded_offset;  // vocab_size + 1 entries
  std::vector<uint8_t> flags;            // kExists | kSpecial
  static constexpr uint8_t kExists = 1, kSpecial = 2;

  absl::Status EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const;
  absl::Status BuildDecodeTables();
};

namespace {

absl::StatusOr<DecoderKind> ParseDecoder(const Json& config) {
  if (config.is_null()) return DecoderKind::kNone;
  const std::string type = json_util::TypeOf(config);
  if (type == "ByteLevel") return DecoderKind::kByteLevel;
  return absl::InvalidArgumentError(absl::StrCat("unsupported decoder type \"", type, "\""));
}

const Json& Section(const Json& root, const char* key) {
  static const Json* const kNull = new Json(nullptr);
  const Json* v = json_util::Find(root, key);
  return v != nullptr ? *v : *kNull;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  auto tokenizer = FromJson(contents.str());
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(),
                        absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json) {
  const Json root = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("tokenizer.json is not valid JSON");
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json must be an object");

  auto impl = std::make_unique<Impl>();
  const Json& model = Section(root, "model");
  if (model.is_null()) return absl::InvalidArgumentError("tokenizer.json has no \"model\"");
  DUET_ASSIGN_OR_RETURN(impl->model, BpeModel::FromJson(model));
  const Json& normalizer = Section(root, "normalizer");
  if (!normalizer.is_null()) {
    DUET_ASSIGN_OR_RETURN(impl->normalizer, Normalizer::FromJson(normalizer));
  }
  DUET_ASSIGN_OR_RETURN(impl->pre_tokenizer, PreTokenizer::FromJson(Section(root, "pre_tokenizer")));
  DUET_ASSIGN_OR_RETURN(impl->post_processor,
                        PostProcessor::FromJson(Section(root, "post_processor")));
  DUET_ASSIGN_OR_RETURN(impl->decoder, ParseDecoder(Section(root, "decoder")));
  DUET_ASSIGN_OR_RETURN(impl->added, AddedVocabulary::FromJson(Section(root, "added_tokens"),
                                                               *impl->model,
                                                               impl->normalizer.get()));
  impl->raw_bytes = impl->pre_tokenizer->ends_with_byte_level() && impl->model->supports_raw_bytes();
  DUET_RETURN_IF_ERROR(impl->BuildDecodeTables());
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::Status Tokenizer::Impl::BuildDecodeTables() {
  const std::vector<std::string>& model_tokens = model->tokens_by_id();
  size_t size = model_tokens.size();
  for (const auto& [id, token] : added->tokens_by_id()) {
    size = std::max(size, static_cast<size_t>(id) + 1);
  }
  flags.assign(size, 0);
  decoded_offset.assign(size + 1, 0);
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  for (size_t id = 0; id < size; ++id) {
    decoded_offset[id] = static_cast<uint32_t>(decoded_arena.size());
    // Added tokens shadow model tokens with the same id, as in the reference.
    const auto added_it = added->tokens_by_id().find(static_cast<int32_t>(id));
    const std::string* content = nullptr;
    if (added_it != added->tokens_by_id().end()) {
      content = &added_it->second.content;
    } else if (id < model_tokens.size() && !model_tokens[id].empty()) {
      content = &model_tokens[id];
    }
    if (content == nullptr) continue;
    flags[id] = kExists | (added->IsSpecialContent(*content) ? kSpecial : 0);
    // ByteLevel decodes a token whose characters are all in the byte-level
    // alphabet to those bytes, and any other token to its own UTF-8.
    if (decoder != DecoderKind::kByteLevel || !alphabet.Unmap(*content, &decoded_arena)) {
      decoded_arena += *content;
    }
    if (decoded_arena.size() > UINT32_MAX) return absl::InvalidArgumentError("vocabulary too large");
  }
  decoded_offset[size] = static_cast<uint32_t>(decoded_arena.size());
  return absl::OkStatus();
}

absl::Status Tokenizer::Impl::EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const {
  // Spans are 32-bit; byte-level mapping at most doubles the text.
  if (text.size() >= (size_t{1} << 30)) {
    return absl::InvalidArgumentError("text too long (after normalization)");
  }
  PreTokens tokens;
  tokens.text.assign(text.data(), text.size());
  tokens.spans.emplace_back(0, static_cast<uint32_t>(text.size()));
  DUET_RETURN_IF_ERROR(pre_tokenizer->Run(&tokens, /*map_final_bytes=*/!raw_bytes));
  for (size_t i = 0; i < tokens.spans.size(); ++i) {
    if (raw_bytes) {
      model->TokenizeRawBytes(tokens.piece(i), ids);
    } else {
      model->Tokenize(tokens.piece(i), ids);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  if (!IsValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<TextSegment> raw_segments, segments;
  impl_->added->Split(text, /*raw=*/true, &raw_segments);
  std::string normalized;
  for (const TextSegment& raw : raw_segments) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    absl::string_view piece = text.substr(raw.start, raw.end - raw.start);
    if (impl_->normalizer != nullptr) {
      normalized.assign(piece.data(), piece.size());
      DUET_RETURN_IF_ERROR(impl_->normalizer->Normalize(&normalized));
      piece = normalized;
    }
    segments.clear();
    impl_->added->Split(piece, /*raw=*/false, &segments);
    for (const TextSegment& seg : segments) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
      } else {
        DUET_RETURN_IF_ERROR(impl_->EncodePlain(piece.substr(seg.start, seg.end - seg.start), &ids));
      }
    }
  }
  impl_->post_processor->Process(&ids, add_special_tokens);
  return ids;
}

absl::Status Tokenizer::AppendTokenBytes(int32_t id, bool skip_special_tokens, bool* any_before,
                                         std::string* out) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->flags.size() ||
      !(impl_->flags[id] & Impl::kExists)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")"));
  }
  if (skip_special_tokens && (impl_->flags[id] & Impl::kSpecial)) return absl::OkStatus();
  if (impl_->decoder == DecoderKind::kNone && *any_before) out->push_back(' ');
  *any_before = true;
  const uint32_t begin = impl_->decoded_offset[id];
  out->append(impl_->decoded_arena, begin, impl_->decoded_offset[id + 1] - begin);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const int32_t> ids,
                                              bool skip_special_tokens) const {
  std::string bytes;
  bool any_before = false;
  for (const int32_t id : ids) {
    DUET_RETURN_IF_ERROR(AppendTokenBytes(id, skip_special_tokens, &any_before, &bytes));
  }
  if (IsValidUtf8(bytes)) return bytes;
  std::string text;
  text.reserve(bytes.size() + 8);
  AppendUtf8Lossy(bytes, &text);
  return text;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->flags.size()); }

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (std::optional<int32_t> id = impl_->added->TokenToId(token)) return id;
  return impl_->model->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  const auto it = impl_->added->tokens_by_id().find(id);
  if (it != impl_->added->tokens_by_id().end()) return it->second.content;
  const std::vector<std::string>& tokens = impl_->model->tokens_by_id();
  if (id < 0 || static_cast<size_t>(id) >= tokens.size() || tokens[id].empty()) {
    return std::nullopt;
  }
  return tokens[id];
}

bool Tokenizer::IsSpecialToken(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->flags.size() &&
         (impl_->flags[id] & Impl::kSpecial);
}

}  // namespace duet::tokenizer
