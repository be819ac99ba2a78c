#include "tokenizer/stop_string_matcher.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace duet::tokenizer {
namespace {

struct Outcome {
  std::string text;
  std::optional<size_t> stop_index;
};

// Feeds `deltas`, collects everything emitted (plus Flush when no stop).
Outcome Feed(const std::vector<std::string>& stops, const std::vector<std::string>& deltas) {
  auto m = StopStringMatcher::Create(stops);
  EXPECT_TRUE(m.ok());
  Outcome out;
  for (const auto& d : deltas) {
    auto r = m->Push(d);
    out.text += r.text;
    if (r.stopped) {
      out.stop_index = r.stop_index;
      return out;
    }
  }
  out.text += m->Flush();
  return out;
}

TEST(StopStringMatcherTest, NoStopStringsPassesEverything) {
  auto m = StopStringMatcher::Create({});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Push("abc").text, "abc");
  EXPECT_EQ(m->held_back_bytes(), 0u);
}

TEST(StopStringMatcherTest, EmptyStopStringIsRejected) {
  EXPECT_EQ(StopStringMatcher::Create({"a", ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StopStringMatcherTest, StopInOneDelta) {
  const Outcome o = Feed({"STOP"}, {"hello STOP world"});
  EXPECT_EQ(o.text, "hello ");
  EXPECT_EQ(o.stop_index, 0u);
}

TEST(StopStringMatcherTest, StopSplitAcrossDeltas) {
  auto m = StopStringMatcher::Create({"</answer>"});
  ASSERT_TRUE(m.ok());
  auto r = m->Push("The result is 4</an");
  EXPECT_EQ(r.text, "The result is 4");  // "</an" held back
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m->held_back_bytes(), 4u);
  r = m->Push("sw");
  EXPECT_EQ(r.text, "");
  r = m->Push("er> trailing");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");  // the stop string itself is never emitted
  EXPECT_TRUE(m->Push("more").stopped);
  EXPECT_EQ(m->Flush(), "");
}

TEST(StopStringMatcherTest, FalseStartIsReleased) {
  auto m = StopStringMatcher::Create({"</answer>"});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Push("a </an").text, "a ");
  auto r = m->Push("d b");
  EXPECT_EQ(r.text, "</and b");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m->held_back_bytes(), 0u);
}

TEST(StopStringMatcherTest, NoFalseHoldbackAtEnd) {
  // Text that ends like the start of a stop string is held only until the
  // stream ends; text that cannot start one is never held.
  auto m = StopStringMatcher::Create({"###"});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->Push("abc").text, "abc");
  EXPECT_EQ(m->Push("d#").text, "d");
  EXPECT_EQ(m->Push("#").text, "");
  EXPECT_EQ(m->Flush(), "##");
  EXPECT_EQ(Feed({"xyz"}, {"no stop here"}).text, "no stop here");
}

TEST(StopStringMatcherTest, OverlappingPrefixes) {
  // "aab" inside "aaab": the partial match starting at the first 'a' fails,
  // the one starting at the second succeeds.
  EXPECT_EQ(Feed({"aab"}, {"a", "a", "a", "b", "c"}).text, "a");
  EXPECT_EQ(Feed({"abab"}, {"xab", "aba", "b"}).text, "x");
  EXPECT_EQ(Feed({"abcabd"}, {"abcab", "cabd"}).text, "abc");
}

TEST(StopStringMatcherTest, MultipleStopStrings) {
  // The first stop string to be completed wins...
  Outcome o = Feed({"world", "lo w"}, {"hello world"});
  EXPECT_EQ(o.text, "hel");
  EXPECT_EQ(o.stop_index, 1u);
  // ... and among those completed at the same point, the longest.
  o = Feed({"b", "ab", "xab"}, {"zx", "ab"});
  EXPECT_EQ(o.text, "z");
  EXPECT_EQ(o.stop_index, 2u);
  // Held-back text for one stop string can reveal another.
  o = Feed({"<|end|>", "<|e"}, {"x<|", "e"});
  EXPECT_EQ(o.text, "x");
  EXPECT_EQ(o.stop_index, 1u);
}

TEST(StopStringMatcherTest, MultiByteCharactersStayWhole) {
  const Outcome o = Feed({"\xE4\xBD\xA0\xE5\xA5\xBD"}, {"\xE5\x86\x8D\xE8\xA7\x81\xE4\xBD\xA0", "\xE5\xA5\xBD!"});
  EXPECT_EQ(o.text, "\xE5\x86\x8D\xE8\xA7\x81");
  EXPECT_EQ(o.stop_index, 0u);
}

// Whatever the chunking, the outcome equals the non-streaming definition:
// stop at the first end position of any stop string, longest on ties.
TEST(StopStringMatcherTest, ChunkingDoesNotMatter) {
  std::mt19937 rng(5);
  for (int iter = 0; iter < 5000; ++iter) {
    std::string text;
    const int len = static_cast<int>(rng() % 30);
    for (int i = 0; i < len; ++i) text.push_back("abc"[rng() % 3]);
    std::vector<std::string> stops;
    const int nstops = 1 + static_cast<int>(rng() % 3);
    for (int s = 0; s < nstops; ++s) {
      std::string stop;
      const int sl = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < sl; ++i) stop.push_back("abc"[rng() % 3]);
      stops.push_back(stop);
    }
    Outcome want{text, std::nullopt};
    for (size_t end = 1; end <= text.size() && !want.stop_index; ++end) {
      for (size_t s = 0; s < stops.size(); ++s) {
        if (stops[s].size() <= end && text.compare(end - stops[s].size(), stops[s].size(), stops[s]) == 0 &&
            (!want.stop_index || stops[s].size() > stops[*want.stop_index].size())) {
          want = {text.substr(0, end - stops[s].size()), s};
        }
      }
    }
    std::vector<std::string> deltas;
    for (size_t i = 0; i < text.size();) {
      if (rng() % 7 == 0) deltas.push_back("");  // empty deltas happen too
      const size_t n = std::min<size_t>(1 + rng() % 4, text.size() - i);
      deltas.push_back(text.substr(i, n));
      i += n;
    }
    const Outcome got = Feed(stops, deltas);
    ASSERT_EQ(got.text, want.text) << text;
    ASSERT_EQ(got.stop_index, want.stop_index) << text;
  }
}

}  // namespace
}  // namespace duet::tokenizer
