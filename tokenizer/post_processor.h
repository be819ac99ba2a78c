// tokenizer.json "post_processor" section, as far as it changes the ids of a
// single sequence: TemplateProcessing (e.g. Llama-3's BOS), BertProcessing,
// RobertaProcessing, ByteLevel (offsets only: no id change) and Sequence.
// Special tokens are added only when Encode's add_special_tokens is true.
#ifndef DUET_TOKENIZER_POST_PROCESSOR_H_
#define DUET_TOKENIZER_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace duet::tokenizer {

class PostProcessor {
 public:
  // `config` is tokenizer.json's "post_processor"; null gives one that
  // leaves ids alone.
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const nlohmann::json& config);

  // Rewrites the ids of one encoded sequence.
  void Process(std::vector<int32_t>* ids, bool add_special_tokens) const;

  // Ids the processors put before / after the sequence, in order.
  const std::vector<int32_t>& prefix() const { return prefix_; }
  const std::vector<int32_t>& suffix() const { return suffix_; }

 private:
  // Every supported processor, and any Sequence of them, reduces for a single
  // sequence to "prefix + ids + suffix" (each processor wraps the output of
  // the previous one).
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_POST_PROCESSOR_H_
