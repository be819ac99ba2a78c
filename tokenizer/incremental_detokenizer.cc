#include "tokenizer/incremental_detokenizer.h"

#include "common/status.h"
#include "tokenizer/utf8.h"

namespace duet::tokenizer {

absl::StatusOr<std::string> IncrementalDetokenizer::Add(int32_t id) {
  const size_t before = pending_.size();
  bool any_token = any_token_;
  const absl::Status status =
      tokenizer_->AppendTokenBytes(id, skip_special_tokens_, &any_token, &pending_);
  if (!status.ok()) {
    pending_.resize(before);
    return status;
  }
  any_token_ = any_token;
  std::string delta;
  const size_t done = AppendUtf8LossyPrefix(pending_, &delta);
  pending_.erase(0, done);
  return delta;
}

std::string IncrementalDetokenizer::Flush() {
  std::string rest;
  AppendUtf8Lossy(pending_, &rest);
  pending_.clear();
  any_token_ = false;
  return rest;
}

}  // namespace duet::tokenizer
