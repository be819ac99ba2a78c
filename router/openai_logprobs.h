// OpenAI's per-token logprobs objects, built from the sampler's
// TokenLogprobs (SamplingParams.logprobs) and the router's tokenizer. Pure,
// so unit-tested on its own; the gateway calls it per stream chunk or once
// per choice.
//
//  - /v1/completions (legacy, as vLLM): {"tokens": [str], "token_logprobs":
//    [float], "top_logprobs": [{str: float}], "text_offset": [int]}. Each
//    top_logprobs dict holds the `top` most likely tokens and the sampled
//    one (so `logprobs: 0` still names the sampled token).
//  - /v1/chat/completions: {"content": [{"token", "logprob", "bytes",
//    "top_logprobs": [{"token", "logprob", "bytes"}]}]}, `top` entries each.
//
// A token's string is its own decoded text (invalid UTF-8 of a token that
// holds part of a character replaced by U+FFFD, as a one-token decode
// does); its "bytes" are the token's raw bytes, so a client can join the
// bytes of consecutive tokens back into the character. An id past the
// tokenizer's vocabulary (a model's padded rows) has empty text and bytes,
// as in router/text_stream.cc. -inf (a token masked out) is written as
// -9999.0, as OpenAI and vLLM do: JSON has no infinity.
#ifndef DUET_ROUTER_OPENAI_LOGPROBS_H_
#define DUET_ROUTER_OPENAI_LOGPROBS_H_

#include <cstdint>
#include <string>

#include "duet/v1/common.pb.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace duet::router::openai {

// The text and raw bytes of one token id (both empty for an id the
// tokenizer does not know).
struct TokenText {
  std::string text;
  std::string bytes;
};
TokenText TokenString(const tokenizer::Tokenizer& tok, int32_t id);

// Builds the logprobs object of one choice, a stream chunk at a time (or
// all tokens at once): text_offset continues across calls, so the offsets
// of a streamed choice equal the whole response's.
class LogprobsBuilder {
 public:
  // `chat` picks the shape; `top` is how many alternatives per token.
  LogprobsBuilder(const tokenizer::Tokenizer* tok, bool chat, int top)
      : tok_(tok), chat_(chat), top_(top) {}

  // The object for the chunk's token_ids and their logprobs (one to one;
  // extra entries of either are ignored). Only those two fields are read.
  nlohmann::ordered_json Build(const v1::TokenChunk& chunk);

  // An empty object of the endpoint's shape (a choice with no tokens).
  nlohmann::ordered_json Empty() const;

 private:
  const tokenizer::Tokenizer* tok_;
  const bool chat_;
  const int top_;
  int64_t text_offset_ = 0;  // completions: code points so far
};

}  // namespace duet::router::openai

#endif  // DUET_ROUTER_OPENAI_LOGPROBS_H_
