// tokenizer.json "normalizer" section: NFC, NFD, NFKC, NFKD (utf8proc),
// Replace, Prepend, Strip and Sequence of these. Anything else is rejected at
// load time rather than silently skipped, because a skipped normalizer would
// change token ids without any error.
#ifndef DUET_TOKENIZER_NORMALIZER_H_
#define DUET_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace duet::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites *text (valid UTF-8) in place.
  virtual absl::Status Normalize(std::string* text) const = 0;

  // `config` is the value of tokenizer.json's "normalizer" (not null).
  static absl::StatusOr<std::unique_ptr<Normalizer>> FromJson(const nlohmann::json& config);
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_NORMALIZER_H_
