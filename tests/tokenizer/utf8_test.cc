#include "tokenizer/utf8.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace duet::tokenizer {
namespace {

std::string Lossy(absl::string_view bytes) {
  std::string out;
  AppendUtf8Lossy(bytes, &out);
  return out;
}

const std::string kR(kReplacementChar);

// Expected values follow Rust's String::from_utf8_lossy (one U+FFFD per
// maximal subpart, Unicode Table 3-8).
TEST(Utf8Test, LossyMatchesFromUtf8Lossy) {
  EXPECT_EQ(Lossy(""), "");
  EXPECT_EQ(Lossy("plain"), "plain");
  EXPECT_EQ(Lossy("Hello \xF0\x90\x80World"), "Hello " + kR + "World");  // Rust docs example
  EXPECT_EQ(Lossy("\xFF"), kR);
  EXPECT_EQ(Lossy("\x80\x80"), kR + kR);
  EXPECT_EQ(Lossy("\xC0\xAF"), kR + kR);            // overlong: C0 never starts
  EXPECT_EQ(Lossy("\xE0\x80\x80"), kR + kR + kR);   // E0 needs A0..BF next
  EXPECT_EQ(Lossy("\xED\xA0\x80"), kR + kR + kR);   // surrogate
  EXPECT_EQ(Lossy("\xF4\x90\x80\x80"), kR + kR + kR + kR);  // > U+10FFFF
  EXPECT_EQ(Lossy("\xE2\x82"), kR);                 // truncated at the end
  EXPECT_EQ(Lossy("\xE2\x82x"), kR + "x");
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), kR);
  EXPECT_EQ(Lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(Lossy("a\xC3"), "a" + kR);
  EXPECT_EQ(Lossy("\xC3\xC3\xA9"), kR + "\xC3\xA9");
  EXPECT_EQ(Lossy("\xF5\x80"), kR + kR);
}

TEST(Utf8Test, PrefixStopsOnlyAtIncompleteTail) {
  std::string out;
  EXPECT_EQ(AppendUtf8LossyPrefix("ab\xE2\x82", &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(AppendUtf8LossyPrefix("ab\xE2\x41", &out), 4u);  // broken, not incomplete
  EXPECT_EQ(out, "ab" + kR + "A");
  out.clear();
  EXPECT_EQ(AppendUtf8LossyPrefix("\xF0\x9F\x98", &out), 0u);
  EXPECT_EQ(out, "");
}

// An independent validator (straight from the Table 3-7 ranges) for random
// byte strings, checked against IsValidUtf8 and against lossy decoding being
// the identity exactly on valid input.
bool ReferenceValid(const std::string& s) {
  size_t i = 0;
  auto in = [&](size_t k, int lo, int hi) {
    return i + k < s.size() && static_cast<unsigned char>(s[i + k]) >= lo &&
           static_cast<unsigned char>(s[i + k]) <= hi;
  };
  while (i < s.size()) {
    const int b = static_cast<unsigned char>(s[i]);
    if (b <= 0x7F) { i += 1; continue; }
    if (b >= 0xC2 && b <= 0xDF && in(1, 0x80, 0xBF)) { i += 2; continue; }
    if (b == 0xE0 && in(1, 0xA0, 0xBF) && in(2, 0x80, 0xBF)) { i += 3; continue; }
    if (((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) && in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF)) { i += 3; continue; }
    if (b == 0xED && in(1, 0x80, 0x9F) && in(2, 0x80, 0xBF)) { i += 3; continue; }
    if (b == 0xF0 && in(1, 0x90, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) { i += 4; continue; }
    if (b >= 0xF1 && b <= 0xF3 && in(1, 0x80, 0xBF) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) { i += 4; continue; }
    if (b == 0xF4 && in(1, 0x80, 0x8F) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF)) { i += 4; continue; }
    return false;
  }
  return true;
}

TEST(Utf8Test, RandomBytesValidity) {
  std::mt19937 rng(7);
  const unsigned char interesting[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0,
                                       0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  for (int n = 0; n < 20000; ++n) {
    std::string s;
    const int len = static_cast<int>(rng() % 12);
    for (int k = 0; k < len; ++k) {
      s.push_back(static_cast<char>(rng() % 2 ? interesting[rng() % sizeof(interesting)] : rng() % 256));
    }
    ASSERT_EQ(IsValidUtf8(s), ReferenceValid(s));
    const std::string lossy = Lossy(s);
    ASSERT_TRUE(ReferenceValid(lossy));
    if (ReferenceValid(s)) {
      ASSERT_EQ(lossy, s);
    }
  }
}

TEST(Utf8Test, EncodeDecodeRoundTrip) {
  for (char32_t cp : {char32_t{0x24}, char32_t{0xA2}, char32_t{0x20AC}, char32_t{0x10348}, char32_t{0x10FFFF}}) {
    std::string s;
    AppendUtf8(cp, &s);
    size_t len;
    EXPECT_EQ(DecodeUtf8(s, &len), cp);
    EXPECT_EQ(len, s.size());
  }
  EXPECT_TRUE(IsUnicodeWhitespace(0x85));
  EXPECT_TRUE(IsUnicodeWhitespace(0x3000));
  EXPECT_FALSE(IsUnicodeWhitespace(0x200B));
  EXPECT_FALSE(IsUnicodeWhitespace(0x1C));
}

}  // namespace
}  // namespace duet::tokenizer
