// Stop strings over streamed text.
//
// Push() each text delta; it returns the part that is safe to show now and
// whether a stop string has been completed. Text that could be the start of
// a stop string is held back until it is known not to be one. On a match the
// text before the stop string is returned, and the stop string itself is NOT
// emitted (OpenAI semantics); the matcher then stays stopped.
//
// Which match: the stream stops at the first position where any stop string
// ends; if several end there, the longest wins. That depends only on the
// text, never on how it was cut into deltas.
//
// Deltas must be valid UTF-8 (IncrementalDetokenizer's are); emitted text is
// then valid UTF-8 too, because held-back text starts where a stop string
// starts, i.e. on a character boundary.
#ifndef DUET_TOKENIZER_STOP_STRING_MATCHER_H_
#define DUET_TOKENIZER_STOP_STRING_MATCHER_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace duet::tokenizer {

class StopStringMatcher {
 public:
  // InvalidArgument for an empty stop string. No stop strings is allowed
  // (nothing is ever held back).
  static absl::StatusOr<StopStringMatcher> Create(std::vector<std::string> stop_strings);

  struct Result {
    std::string text;                // safe to emit now
    bool stopped = false;            // a stop string was completed
    std::optional<size_t> stop_index;  // which one (index into stop_strings)
  };

  Result Push(absl::string_view delta);

  // End of stream without a stop: returns the held-back text.
  std::string Flush();

  bool stopped() const { return stopped_; }
  size_t held_back_bytes() const { return held_.size(); }

 private:
  explicit StopStringMatcher(std::vector<std::string> stop_strings)
      : stops_(std::move(stop_strings)) {}

  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace duet::tokenizer

#endif  // DUET_TOKENIZER_STOP_STRING_MATCHER_H_
