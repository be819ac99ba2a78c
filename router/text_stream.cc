#include "router/text_stream.h"

#include "common/status.h"

namespace duet::router {

absl::StatusOr<TextStream> TextStream::Create(const tokenizer::Tokenizer* tok,
                                              std::vector<std::string> stops) {
  for (const std::string& s : stops) {
    if (s.empty()) {
      return absl::InvalidArgumentError(
          "sampling.stop strings must not be "
          "empty");
    }
  }
  DUET_ASSIGN_OR_RETURN(tokenizer::StopStringMatcher matcher,
                        tokenizer::StopStringMatcher::Create(stops));
  return TextStream(tok, std::move(matcher), std::move(stops));
}

absl::StatusOr<TextStream::Delta> TextStream::Add(
    std::span<const int32_t> tokens) {
  Delta out;
  for (int32_t id : tokens) {
    absl::StatusOr<std::string> piece = detok_.Add(id);
    if (!piece.ok()) {
      // A model's vocabulary is often padded past its tokenizer's (Qwen3:
      // 151,936 rows, 151,669 tokens). An id with no token has no text, as
      // in vLLM; the id itself still reaches the client. Anything else is
      // a real failure.
      if (piece.status().code() != absl::StatusCode::kInvalidArgument) {
        return piece.status();
      }
      piece = std::string();
    }
    std::string text = std::move(*piece);
    ++out.tokens_consumed;
    tokenizer::StopStringMatcher::Result r = matcher_.Push(text);
    out.text += r.text;
    if (r.stopped) {
      out.stopped = true;
      if (r.stop_index.has_value()) out.matched_stop = stops_[*r.stop_index];
      return out;
    }
  }
  return out;
}

TextStream::Delta TextStream::Finish() {
  tokenizer::StopStringMatcher::Result r = matcher_.Push(detok_.Flush());
  Delta out;
  out.text = std::move(r.text);
  if (r.stopped) {
    out.stopped = true;
    if (r.stop_index.has_value()) out.matched_stop = stops_[*r.stop_index];
  } else {
    out.text += matcher_.Flush();
  }
  return out;
}

}  // namespace duet::router
