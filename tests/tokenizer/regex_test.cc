#include "tokenizer/regex.h"

#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace duet::tokenizer {
namespace {

using Matches = std::vector<std::pair<size_t, size_t>>;

Matches FindAll(const std::string& pattern, const std::string& subject) {
  auto re = Regex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status();
  Matches m;
  EXPECT_TRUE((*re)->FindAll(subject, &m).ok());
  return m;
}

TEST(RegexTest, TranslatesOnigurumaEscapes) {
  EXPECT_EQ(Regex::TranslateOnigurumaPattern(R"(\s+(?!\S))"),
            R"([\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}]))");
  EXPECT_EQ(Regex::TranslateOnigurumaPattern(R"([^\s\p{L}])"), R"([^\t-\r\x{85}\p{Z}\p{L}])");
  EXPECT_EQ(Regex::TranslateOnigurumaPattern(R"(\\s)"), R"(\\s)");  // escaped backslash
  EXPECT_EQ(Regex::TranslateOnigurumaPattern(R"(\h)"), R"([0-9a-fA-F])");
  EXPECT_EQ(Regex::TranslateOnigurumaPattern(R"([]\s])"), R"([]\t-\r\x{85}\p{Z}])");
}

TEST(RegexTest, WhitespaceIncludesNextLine) {
  EXPECT_EQ(FindAll(R"(\s)", "a\xC2\x85" "b"), (Matches{{1, 3}}));  // U+0085
  EXPECT_EQ(FindAll(R"(\s)", "a\xE3\x80\x80" "b"), (Matches{{1, 4}}));  // U+3000
  EXPECT_TRUE(FindAll(R"(\s)", "a\xE2\x80\x8B" "b").empty());  // U+200B is not a space
}

// Oniguruma's find_iter: an empty match right where the previous match
// ended is skipped by moving one character on.
TEST(RegexTest, EmptyMatchesFollowOniguruma) {
  EXPECT_EQ(FindAll("a*", "baaac"), (Matches{{0, 0}, {1, 4}, {5, 5}}));
  EXPECT_EQ(FindAll("x*", ""), (Matches{{0, 0}}));
  EXPECT_EQ(FindAll("", "\xC3\xA9" "a"), (Matches{{0, 0}, {2, 2}, {3, 3}}));
}

TEST(RegexTest, UnicodePropertiesAndCaseFolding) {
  EXPECT_EQ(FindAll(R"(\p{L}+)", "ab\xE4\xBD\xA0 1"), (Matches{{0, 5}}));
  EXPECT_EQ(FindAll(R"((?i:'s))", "'S 's"), (Matches{{0, 2}, {3, 5}}));
}

TEST(RegexTest, LiteralsAreEscaped) {
  auto re = Regex::CompileLiteral("a.b*(c)\n");
  ASSERT_TRUE(re.ok()) << re.status();
  Matches m;
  ASSERT_TRUE((*re)->FindAll("xa.b*(c)\nyaxbc", &m).ok());
  EXPECT_EQ(m, (Matches{{1, 9}}));
}

TEST(RegexTest, BadPatternIsInvalidArgument) {
  EXPECT_EQ(Regex::Compile("(a").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegexTest, LongRunsDoNotFail) {
  // A megabyte of spaces then a letter: backtracking over the whole run.
  const std::string s = std::string(1 << 20, ' ') + "x";
  const Matches m = FindAll(R"(\s+(?!\S)|\s+|\p{L}+)", s);
  EXPECT_EQ(m, (Matches{{0, (1u << 20) - 1}, {(1u << 20) - 1, 1u << 20}, {1u << 20, (1u << 20) + 1}}));
}

}  // namespace
}  // namespace duet::tokenizer
