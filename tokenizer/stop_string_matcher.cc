#include "tokenizer/stop_string_matcher.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace duet::tokenizer {

absl::StatusOr<StopStringMatcher> StopStringMatcher::Create(std::vector<std::string> stop_strings) {
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is empty"));
    }
  }
  return StopStringMatcher(std::move(stop_strings));
}

StopStringMatcher::Result StopStringMatcher::Push(absl::string_view delta) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    return result;
  }
  std::string buffer = std::move(held_);
  held_.clear();
  const size_t old_size = buffer.size();
  buffer.append(delta.data(), delta.size());

  // `held_` was the longest suffix of the earlier text that is a proper
  // prefix of some stop string, so any stop string that ends in the new
  // bytes starts inside `buffer`, and none ended earlier.
  for (size_t end = old_size + 1; end <= buffer.size(); ++end) {
    std::optional<size_t> best;
    for (size_t i = 0; i < stops_.size(); ++i) {
      const std::string& s = stops_[i];
      if (s.size() > end) continue;
      if (absl::string_view(buffer).substr(end - s.size(), s.size()) != s) continue;
      if (!best || s.size() > stops_[*best].size()) best = i;
    }
    if (best) {
      result.text = buffer.substr(0, end - stops_[*best].size());
      result.stopped = true;
      result.stop_index = best;
      stopped_ = true;
      return result;
    }
  }

  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  for (const std::string& s : stops_) {
    const size_t max_len = std::min(s.size() - 1, buffer.size());
    for (size_t len = max_len; len > hold; --len) {
      if (absl::string_view(buffer).substr(buffer.size() - len) ==
          absl::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  held_ = buffer.substr(buffer.size() - hold);
  buffer.resize(buffer.size() - hold);
  result.text = std::move(buffer);
  return result;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return "";
  return std::exchange(held_, std::string());
}

}  // namespace duet::tokenizer
