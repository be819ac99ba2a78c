// Streaming detokenization: feed generated ids one at a time, get the text
// each one adds.
//
// Guarantees: every delta is valid UTF-8, and the concatenation of all
// deltas followed by Flush() equals Tokenizer::Decode of all ids (same
// skip_special_tokens).
//
// Why bytes and not vLLM's window re-decoding: for the decoders we support
// (ByteLevel, or none), Decode(ids) is lossy_utf8(bytes(id1) + bytes(id2) +
// ...) with per-token bytes that do not depend on neighbours. The
// from_utf8_lossy rule decides each output character from at most the next
// four bytes, so everything up to a trailing incomplete UTF-8 sequence (at
// most 3 bytes) is final and can be emitted at once. That is exact, O(1) per
// token, and needs no re-decoding; vLLM's offsets exist for decoders whose
// output for a token depends on its neighbours (e.g. SentencePiece's
// leading-space handling), which we reject at load time.
#ifndef DUET_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
#define DUET_TOKENIZER_INCREMENTAL_DETOKENIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer.h"

namespace duet::tokenizer {

class IncrementalDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // The text that `id` completes; empty while a multi-byte character is
  // still incomplete. InvalidArgument for an id Decode would reject (the
  // state is then unchanged).
  absl::StatusOr<std::string> Add(int32_t id);

  // End of stream: the held-back bytes, as Decode would render them (a
  // truncated character becomes U+FFFD). Resets for a new sequence.
  std::string Flush();

  // Bytes held back so far (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  bool any_token_ = false;
  std::string pending_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_INCREMENTAL_DETOKENIZER_H_
