// A Hugging Face tokenizer.json tokenizer that encodes and decodes exactly as
// the reference Rust `tokenizers` library does for byte-level BPE models
// (Qwen2/Qwen3, Llama-3, GPT-2 style).
//
// Pipeline of Encode (same order as the reference):
//   1. added tokens with normalized = false are cut out of the raw text;
//   2. each remaining piece is normalized, then added tokens with
//      normalized = true are cut out of it;
//   3. the rest is pre-tokenized (regex Split, ByteLevel) and BPE-encoded;
//   4. the post-processor adds special tokens if add_special_tokens.
// Decode maps ids to their token strings (added tokens first), drops special
// tokens if asked, and applies the decoder (ByteLevel, or none: tokens joined
// by spaces), replacing invalid UTF-8 with U+FFFD like from_utf8_lossy.
//
// Supported sections: see normalizer.h, pre_tokenizer.h, bpe.h,
// post_processor.h; decoders ByteLevel or none. Anything else fails to load
// with InvalidArgument naming it. "truncation" and "padding" are ignored:
// Encode never truncates or pads (length limits belong to the server).
#ifndef DUET_TOKENIZER_TOKENIZER_H_
#define DUET_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::tokenizer {

class Tokenizer {
 public:
  // NotFound if the file cannot be opened; InvalidArgument for malformed
  // JSON or unsupported contents.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `text` must be valid UTF-8 (InvalidArgument otherwise): the reference
  // takes a Rust str, which cannot hold anything else. Thread-safe.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special_tokens) const;

  // InvalidArgument for an id that names no token (negative, >= vocab_size(),
  // or a gap in the vocabulary); the reference would skip it silently.
  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids,
                                     bool skip_special_tokens) const;

  // One past the largest token id (model vocabulary and added tokens). For
  // Qwen3 this is 151669, less than the model's 151936 embedding rows.
  int32_t vocab_size() const;

  // Token strings are as stored in tokenizer.json (byte-level alphabet for
  // model tokens, e.g. "Ġthe"; plain text for added tokens).
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  // True for ids that Decode drops when skip_special_tokens is set.
  bool IsSpecialToken(int32_t id) const;

  // The bytes token `id` adds to Decode's output before invalid UTF-8 is
  // replaced; Decode(ids) == lossy(concatenation of these). `any_before`
  // tracks, across calls for one sequence, whether an earlier id produced a
  // token (the decoder-less join puts a space between tokens). Nothing is
  // appended for a skipped special token.
  absl::Status AppendTokenBytes(int32_t id, bool skip_special_tokens, bool* any_before,
                                std::string* out) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_TOKENIZER_H_
