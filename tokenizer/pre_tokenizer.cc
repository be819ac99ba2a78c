#include "tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"

namespace duet::tokenizer {
namespace {

using json_util::Json;
using Span = std::pair<uint32_t, uint32_t>;

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// GPT-2's pre-tokenization regex, used by ByteLevel with use_regex = true.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Cuts one piece at the matches of `regex`, as NormalizedString::split does:
// the piece is covered by alternating (range, is_match) parts, which the
// behavior then merges or drops. Appends the resulting spans, shifted by
// `base`, to *out.
absl::Status SplitPiece(const Regex& regex, Behavior behavior, bool invert,
                        absl::string_view piece, uint32_t base, std::vector<Span>* out,
                        std::vector<std::pair<size_t, size_t>>* scratch) {
  scratch->clear();
  DUET_RETURN_IF_ERROR(regex.FindAll(piece, scratch));
  if (behavior == Behavior::kIsolated) {
    // Every match and every gap becomes a piece: no merging to do.
    size_t prev = 0;
    for (const auto& [start, end] : *scratch) {
      if (prev != start) out->emplace_back(base + prev, base + start);
      if (start != end) out->emplace_back(base + start, base + end);
      prev = end;
    }
    if (prev != piece.size()) out->emplace_back(base + prev, base + piece.size());
    return absl::OkStatus();
  }
  struct Part {
    size_t start, end;
    bool is_match;
  };
  std::vector<Part> parts;
  parts.reserve(scratch->size() * 2 + 1);
  size_t prev = 0;
  for (const auto& [start, end] : *scratch) {
    if (prev != start) parts.push_back({prev, start, invert});
    parts.push_back({start, end, !invert});
    prev = end;
  }
  if (prev != piece.size()) parts.push_back({prev, piece.size(), invert});

  // (range, remove) after applying the behavior.
  std::vector<Part> cut;  // is_match reused as "remove"
  cut.reserve(parts.size());
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Part& p : parts) cut.push_back({p.start, p.end, false});
      break;
    case Behavior::kRemoved:
      cut = parts;
      break;
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !cut.empty()) {
          cut.back().end = p.end;
        } else {
          cut.push_back({p.start, p.end, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !cut.empty()) {
          cut.back().end = p.end;
        } else {
          cut.push_back({p.start, p.end, false});
        }
        previous_match = p.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !cut.empty()) {
          cut.back().start = it->start;
        } else {
          cut.push_back({it->start, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(cut.begin(), cut.end());
      break;
    }
  }
  for (const Part& p : cut) {
    if (p.is_match || p.start == p.end) continue;
    out->emplace_back(base + p.start, base + p.end);
  }
  return absl::OkStatus();
}

class SplitStep final : public PreTokenizerStep {
 public:
  SplitStep(std::unique_ptr<Regex> regex, Behavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}

  absl::Status Apply(PreTokens* tokens, bool /*map_bytes*/) const override {
    std::vector<Span> out;
    out.reserve(tokens->spans.size() * 2);
    std::vector<std::pair<size_t, size_t>> scratch;
    for (size_t i = 0; i < tokens->spans.size(); ++i) {
      DUET_RETURN_IF_ERROR(SplitPiece(*regex_, behavior_, invert_, tokens->piece(i),
                                      tokens->spans[i].first, &out, &scratch));
    }
    tokens->spans = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> regex_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelStep final : public PreTokenizerStep {
 public:
  ByteLevelStep(bool add_prefix_space, std::unique_ptr<Regex> gpt2_regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(gpt2_regex)) {}

  absl::Status Apply(PreTokens* tokens, bool map_bytes) const override {
    if (add_prefix_space_) {
      // Every piece that does not start with a space gets one.
      PreTokens spaced;
      spaced.text.reserve(tokens->text.size() + tokens->spans.size());
      for (size_t i = 0; i < tokens->spans.size(); ++i) {
        const absl::string_view piece = tokens->piece(i);
        const auto start = static_cast<uint32_t>(spaced.text.size());
        if (piece[0] != ' ') spaced.text.push_back(' ');
        spaced.text.append(piece.data(), piece.size());
        spaced.spans.emplace_back(start, static_cast<uint32_t>(spaced.text.size()));
      }
      *tokens = std::move(spaced);
    }
    if (regex_ != nullptr) {
      std::vector<Span> out;
      std::vector<std::pair<size_t, size_t>> scratch;
      for (size_t i = 0; i < tokens->spans.size(); ++i) {
        DUET_RETURN_IF_ERROR(SplitPiece(*regex_, Behavior::kIsolated, false, tokens->piece(i),
                                        tokens->spans[i].first, &out, &scratch));
      }
      tokens->spans = std::move(out);
    }
    if (map_bytes) {
      const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
      PreTokens mapped;
      mapped.text.reserve(tokens->text.size() * 2);
      for (size_t i = 0; i < tokens->spans.size(); ++i) {
        const auto start = static_cast<uint32_t>(mapped.text.size());
        alphabet.Map(tokens->piece(i), &mapped.text);
        mapped.spans.emplace_back(start, static_cast<uint32_t>(mapped.text.size()));
      }
      *tokens = std::move(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null when use_regex is false
};

absl::StatusOr<Behavior> ParseBehavior(const Json& config) {
  DUET_ASSIGN_OR_RETURN(std::string name,
                        json_util::GetString(config, "behavior", "pre_tokenizer Split"));
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(
      absl::StrCat("pre_tokenizer Split: unknown behavior \"", name, "\""));
}

absl::Status AddSteps(const Json& config, std::vector<std::unique_ptr<PreTokenizerStep>>* steps,
                      bool* last_is_byte_level) {
  const std::string type = json_util::TypeOf(config);
  const std::string where = absl::StrCat("pre_tokenizer ", type);
  if (type == "Sequence") {
    const Json* list = json_util::Find(config, "pretokenizers");
    if (list == nullptr || !list->is_array()) {
      return absl::InvalidArgumentError("pre_tokenizer Sequence: \"pretokenizers\" must be a list");
    }
    for (const Json& item : *list) DUET_RETURN_IF_ERROR(AddSteps(item, steps, last_is_byte_level));
    return absl::OkStatus();
  }
  if (type == "Split") {
    const Json* pattern = json_util::Find(config, "pattern");
    std::unique_ptr<Regex> regex;
    if (pattern != nullptr && json_util::Find(*pattern, "Regex") != nullptr) {
      DUET_ASSIGN_OR_RETURN(std::string re, json_util::GetString(*pattern, "Regex", where));
      DUET_ASSIGN_OR_RETURN(regex, Regex::Compile(re));
    } else if (pattern != nullptr && json_util::Find(*pattern, "String") != nullptr) {
      DUET_ASSIGN_OR_RETURN(std::string literal, json_util::GetString(*pattern, "String", where));
      DUET_ASSIGN_OR_RETURN(regex, Regex::CompileLiteral(literal));
    } else {
      return absl::InvalidArgumentError(
          "pre_tokenizer Split: \"pattern\" must be {\"Regex\": ...} or {\"String\": ...}");
    }
    DUET_ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(config));
    DUET_ASSIGN_OR_RETURN(bool invert, json_util::GetBool(config, "invert", false, where));
    steps->push_back(std::make_unique<SplitStep>(std::move(regex), behavior, invert));
    *last_is_byte_level = false;
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    DUET_ASSIGN_OR_RETURN(bool prefix, json_util::GetBool(config, "add_prefix_space", true, where));
    DUET_ASSIGN_OR_RETURN(bool use_regex, json_util::GetBool(config, "use_regex", true, where));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      DUET_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern));
    }
    steps->push_back(std::make_unique<ByteLevelStep>(prefix, std::move(regex)));
    *last_is_byte_level = true;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported pre_tokenizer type \"", type, "\""));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& config) {
  auto pre = std::make_unique<PreTokenizer>();
  if (config.is_null()) return pre;
  DUET_RETURN_IF_ERROR(AddSteps(config, &pre->steps_, &pre->ends_with_byte_level_));
  return pre;
}

absl::Status PreTokenizer::Run(PreTokens* tokens, bool map_final_bytes) const {
  for (size_t i = 0; i < steps_.size(); ++i) {
    const bool last = i + 1 == steps_.size();
    DUET_RETURN_IF_ERROR(steps_[i]->Apply(tokens, map_final_bytes || !last));
    if (tokens->spans.empty()) break;
  }
  return absl::OkStatus();
}

}  // namespace duet::tokenizer
