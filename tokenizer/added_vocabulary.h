// Added tokens (tokenizer.json "added_tokens"): matched in the text before
// pre-tokenization, as the reference AddedVocabulary does. Tokens with
// normalized = false are matched on the raw text first; the remaining text is
// normalized and then matched against the normalized = true tokens (whose
// content is normalized too). Matching is leftmost-longest over all tokens;
// single_word, lstrip and rstrip then filter or widen each match.
#ifndef DUET_TOKENIZER_ADDED_VOCABULARY_H_
#define DUET_TOKENIZER_ADDED_VOCABULARY_H_

#include <bitset>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"

namespace duet::tokenizer {

struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;

  bool operator==(const AddedToken&) const = default;
};

// A [start, end) byte range of the text; id >= 0 for an added token, -1 for
// text that goes on through the pipeline.
struct TextSegment {
  size_t start;
  size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  // `list` is tokenizer.json's "added_tokens". Ids are assigned the way the
  // reference's deserializer does (a token already in the model vocabulary
  // keeps that id, others follow the model vocabulary in order); the "id"
  // fields are only checked for well-formedness. `normalizer` may be null.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> FromJson(const nlohmann::json& list,
                                                                   const BpeModel& model,
                                                                   const Normalizer* normalizer);

  // Cuts `text` at the non-normalized (raw = true) or normalized tokens.
  // Appends segments covering `text` in order, none empty.
  void Split(absl::string_view text, bool raw, std::vector<TextSegment>* out) const;

  // id -> token for every added token; a normalized token's content is
  // stored normalized, as in the reference.
  const absl::flat_hash_map<int32_t, AddedToken>& tokens_by_id() const { return by_id_; }
  std::optional<int32_t> TokenToId(absl::string_view content) const;
  bool IsSpecialContent(absl::string_view content) const { return special_set_.contains(content); }
  bool empty() const { return by_id_.empty(); }

 private:
  // A byte trie with leftmost-longest search, which is what aho-corasick's
  // MatchKind::LeftmostLongest reports: the earliest start, then the longest
  // pattern there.
  class Trie {
   public:
    void Add(absl::string_view pattern, int32_t id);
    bool empty() const { return terminal_.size() <= 1; }
    // Longest pattern starting at `pos`: returns its id and sets *end.
    int32_t LongestAt(absl::string_view text, size_t pos, size_t* end) const;
    // First position >= pos whose byte can start a pattern (text.size() if
    // none). Most vocabularies start every added token with '<': memchr.
    size_t NextCandidate(absl::string_view text, size_t pos) const;

   private:
    absl::flat_hash_map<uint64_t, int32_t> next_;  // (node << 8 | byte) -> node
    std::vector<int32_t> terminal_{-1};            // node -> id, -1 if none
    std::bitset<256> first_bytes_;
  };

  absl::flat_hash_map<int32_t, AddedToken> by_id_;
  absl::flat_hash_map<std::string, int32_t> by_content_;
  absl::flat_hash_set<std::string> special_set_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_ADDED_VOCABULARY_H_
