// Turns the token stream of one request into text for the client: an
// incremental detokenizer (every delta valid UTF-8, deltas concatenate to
// the one-shot decode) followed by stop-string matching (text that may be
// the start of a stop string is held back; the stop string itself is never
// returned).
#ifndef DUET_ROUTER_TEXT_STREAM_H_
#define DUET_ROUTER_TEXT_STREAM_H_

#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/stop_string_matcher.h"
#include "tokenizer/tokenizer.h"

namespace duet::router {

class TextStream {
 public:
  // InvalidArgument for an empty stop string.
  static absl::StatusOr<TextStream> Create(const tokenizer::Tokenizer* tok,
                                           std::vector<std::string> stops);

  struct Delta {
    std::string text;            // safe to send now
    size_t tokens_consumed = 0;  // of the input, up to the stopping token
    bool stopped = false;
    std::string matched_stop;
  };
  // Feeds tokens; stops consuming at the token that completes a stop string.
  absl::StatusOr<Delta> Add(std::span<const int32_t> tokens);
  // End of stream (not stopped): whatever was held back. The held-back
  // bytes of an unfinished UTF-8 character come out as U+FFFD, as in the
  // one-shot decode, and that text can still complete a stop string: then
  // `stopped` is set and the stop string is not in `text`.
  Delta Finish();

 private:
  TextStream(const tokenizer::Tokenizer* tok,
             tokenizer::StopStringMatcher matcher,
             std::vector<std::string> stops)
      : detok_(tok, /*skip_special_tokens=*/true),
        matcher_(std::move(matcher)),
        stops_(std::move(stops)) {}

  tokenizer::IncrementalDetokenizer detok_;
  tokenizer::StopStringMatcher matcher_;
  std::vector<std::string> stops_;
};

}  // namespace duet::router

#endif  // DUET_ROUTER_TEXT_STREAM_H_
