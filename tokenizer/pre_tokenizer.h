// tokenizer.json "pre_tokenizer" section: Split (regex or literal, every
// delimiter behavior, invert), ByteLevel (add_prefix_space, use_regex) and
// Sequence of these. Other types are rejected at load time.
#ifndef DUET_TOKENIZER_PRE_TOKENIZER_H_
#define DUET_TOKENIZER_PRE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace duet::tokenizer {

// A text cut into pieces: `spans` are [start, end) byte ranges of `text`, in
// order, never empty. Steps rewrite spans without copying text where they can.
struct PreTokens {
  std::string text;
  std::vector<std::pair<uint32_t, uint32_t>> spans;

  absl::string_view piece(size_t i) const {
    return absl::string_view(text).substr(spans[i].first, spans[i].second - spans[i].first);
  }
};

class PreTokenizerStep {
 public:
  virtual ~PreTokenizerStep() = default;
  // `map_bytes` only matters to ByteLevel: false leaves its pieces as raw
  // bytes, for a model that maps them itself (see PreTokenizer::Run).
  virtual absl::Status Apply(PreTokens* tokens, bool map_bytes) const = 0;
};

class PreTokenizer {
 public:
  // `config` is the value of tokenizer.json's "pre_tokenizer"; null gives a
  // pre-tokenizer that keeps the text whole.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& config);

  // True when the last step is ByteLevel, whose final act is to map every
  // byte to the byte-level alphabet. Nothing after it looks at the text, so a
  // byte-level BPE can skip that mapping and start from raw bytes.
  bool ends_with_byte_level() const { return ends_with_byte_level_; }

  // Cuts every span of *tokens further. With map_final_bytes = false the
  // final ByteLevel step leaves raw bytes (only allowed when
  // ends_with_byte_level()).
  absl::Status Run(PreTokens* tokens, bool map_final_bytes) const;

 private:
  std::vector<std::unique_ptr<PreTokenizerStep>> steps_;
  bool ends_with_byte_level_ = false;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_PRE_TOKENIZER_H_
