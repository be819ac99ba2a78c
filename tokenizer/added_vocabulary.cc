#include "tokenizer/added_vocabulary.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"
#include "utf8proc.h"

namespace duet::tokenizer {
namespace {

using json_util::Json;

// Rust regex's Unicode \w: Alphabetic, marks, decimal digits, connector
// punctuation, joiners. Alphabetic is approximated by letters, letter
// numbers and the Other_Alphabetic symbols (circled/squared Latin letters);
// utf8proc has no Alphabetic property.
bool IsWordChar(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  if (cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) ||
      (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
      (cp >= 0x1F170 && cp <= 0x1F189)) {
    return true;
  }
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

// Start of the code point that ends just before `end`.
size_t PrevCharStart(absl::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

bool EndsWithWord(absl::string_view s) {
  if (s.empty()) return false;
  size_t len;
  return IsWordChar(DecodeUtf8(s.substr(PrevCharStart(s, s.size())), &len));
}

bool StartsWithWord(absl::string_view s) {
  if (s.empty()) return false;
  size_t len;
  return IsWordChar(DecodeUtf8(s, &len));
}

// Start of the run of whitespace that ends `s` (s.size() if none).
size_t TrailingSpaceStart(absl::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    const size_t start = PrevCharStart(s, end);
    size_t len;
    if (!IsUnicodeWhitespace(DecodeUtf8(s.substr(start), &len))) break;
    end = start;
  }
  return end;
}

// Length of the run of whitespace that starts `s`.
size_t LeadingSpaceLength(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    if (!IsUnicodeWhitespace(DecodeUtf8(s.substr(i), &len))) break;
    i += len;
  }
  return i;
}

}  // namespace

void AddedVocabulary::Trie::Add(absl::string_view pattern, int32_t id) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (const unsigned char b : pattern) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | b;
    const auto it = next_.find(key);
    if (it != next_.end()) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(terminal_.size());
      terminal_.push_back(-1);
      next_.emplace(key, child);
      node = child;
    }
  }
  // An identical earlier pattern wins, as in aho-corasick.
  if (terminal_[node] < 0) terminal_[node] = id;
  first_bytes_.set(static_cast<unsigned char>(pattern[0]));
}

int32_t AddedVocabulary::Trie::LongestAt(absl::string_view text, size_t pos, size_t* end) const {
  int32_t node = 0;
  int32_t found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]);
    const auto it = next_.find(key);
    if (it == next_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) {
      found = terminal_[node];
      *end = i + 1;
    }
  }
  return found;
}

size_t AddedVocabulary::Trie::NextCandidate(absl::string_view text, size_t pos) const {
  if (pos >= text.size()) return text.size();
  if (first_bytes_.count() == 1) {
    size_t b = 0;
    while (!first_bytes_[b]) ++b;
    const void* hit = std::memchr(text.data() + pos, static_cast<int>(b), text.size() - pos);
    return hit == nullptr ? text.size() : static_cast<const char*>(hit) - text.data();
  }
  while (pos < text.size() && !first_bytes_[static_cast<unsigned char>(text[pos])]) ++pos;
  return pos;
}

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::FromJson(
    const Json& list, const BpeModel& model, const Normalizer* normalizer) {
  auto vocab = std::make_unique<AddedVocabulary>();
  if (list.is_null()) return vocab;
  if (!list.is_array()) return absl::InvalidArgumentError("\"added_tokens\" must be a list");
  constexpr absl::string_view kWhere = "added_tokens";
  // The reference keeps special and ordinary tokens in two lists and builds
  // its matchers from specials first; the order only matters for identical
  // patterns.
  std::vector<AddedToken> specials, ordinary;
  absl::flat_hash_set<std::string> seen_tokens;  // content + flags
  int32_t max_added = -1;
  const auto model_size = static_cast<int32_t>(model.vocab_entries());
  for (const Json& item : list) {
    if (!item.is_object()) return absl::InvalidArgumentError("added_tokens: entries must be objects");
    AddedToken t;
    DUET_ASSIGN_OR_RETURN(t.content, json_util::GetString(item, "content", kWhere));
    DUET_ASSIGN_OR_RETURN(t.single_word, json_util::GetBool(item, "single_word", false, kWhere));
    DUET_ASSIGN_OR_RETURN(t.lstrip, json_util::GetBool(item, "lstrip", false, kWhere));
    DUET_ASSIGN_OR_RETURN(t.rstrip, json_util::GetBool(item, "rstrip", false, kWhere));
    DUET_ASSIGN_OR_RETURN(t.special, json_util::GetBool(item, "special", false, kWhere));
    DUET_ASSIGN_OR_RETURN(t.normalized, json_util::GetBool(item, "normalized", !t.special, kWhere));
    if (const Json* id = json_util::Find(item, "id")) {
      DUET_RETURN_IF_ERROR(json_util::ToId(*id, kWhere).status());
    }
    if (t.special && !t.content.empty() && !vocab->special_set_.contains(t.content)) {
      specials.push_back(t);
      vocab->special_set_.insert(t.content);
    }
    if (t.content.empty()) continue;
    // The reference skips a token equal (all fields) to one it already has.
    const std::string key =
        absl::StrCat(t.content, absl::string_view("\0", 1), t.single_word, t.lstrip, t.rstrip,
                     t.normalized, t.special);
    if (!seen_tokens.insert(key).second) continue;
    std::optional<int32_t> id = vocab->TokenToId(t.content);
    if (!id) id = model.TokenToId(t.content);
    if (!id) {
      id = max_added < 0 ? model_size
                         : (max_added >= model_size || model_size == 0 ? max_added + 1 : model_size);
    }
    max_added = std::max(max_added, *id);
    vocab->by_content_[t.content] = *id;
    // The reference keeps a normalized token's content in normalized form
    // for id -> token (so Decode shows it normalized), while content -> id
    // keeps the original spelling.
    AddedToken stored = t;
    if (t.normalized && normalizer != nullptr) {
      DUET_RETURN_IF_ERROR(normalizer->Normalize(&stored.content));
    }
    vocab->by_id_[*id] = std::move(stored);
    if (!vocab->special_set_.contains(t.content)) ordinary.push_back(t);
  }
  for (const std::vector<AddedToken>* group : {&specials, &ordinary}) {
    for (const AddedToken& t : *group) {
      const int32_t id = vocab->by_content_.find(t.content)->second;
      if (!t.normalized) {
        vocab->raw_trie_.Add(t.content, id);
        continue;
      }
      std::string pattern = t.content;
      if (normalizer != nullptr) DUET_RETURN_IF_ERROR(normalizer->Normalize(&pattern));
      vocab->normalized_trie_.Add(pattern, id);
    }
  }
  return vocab;
}

std::optional<int32_t> AddedVocabulary::TokenToId(absl::string_view content) const {
  const auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

void AddedVocabulary::Split(absl::string_view text, bool raw,
                            std::vector<TextSegment>* out) const {
  const Trie& trie = raw ? raw_trie_ : normalized_trie_;
  if (text.empty()) return;
  if (trie.empty()) {
    out->push_back({0, text.size(), -1});
    return;
  }
  size_t start_offset = 0;  // end of the last kept match
  size_t pos = 0;           // where the trie search resumes
  while ((pos = trie.NextCandidate(text, pos)) < text.size()) {
    size_t stop = 0;
    const int32_t id = trie.LongestAt(text, pos, &stop);
    if (id < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    pos = stop;  // a discarded match still consumes its text, as in the reference
    const AddedToken& token = by_id_.find(id)->second;
    if (token.single_word) {
      const bool start_space = start == 0 || !EndsWithWord(text.substr(0, start));
      const bool stop_space = stop == text.size() || !StartsWithWord(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      // Whitespace before the token joins it, unless a previous match
      // already took it.
      start = std::max(TrailingSpaceStart(text.substr(0, start)), start_offset);
    }
    if (token.rstrip) stop += LeadingSpaceLength(text.substr(stop));
    if (start_offset < start) out->push_back({start_offset, start, -1});
    out->push_back({start, stop, id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out->push_back({start_offset, text.size(), -1});
}

}  // namespace duet::tokenizer
