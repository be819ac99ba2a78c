// The segmented fast path of the Unicode normalizers must equal one
// utf8proc call on the whole text.
#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/utf8.h"
#include "utf8proc.h"

namespace duet::tokenizer {
namespace {

std::string Whole(const std::string& s, int options) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &out,
                              static_cast<utf8proc_option_t>(options));
  EXPECT_GE(n, 0);
  std::string r(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

std::string RandomText(std::mt19937& rng) {
  // Characters near the fast path's range edges, combining marks, jamo,
  // compatibility characters and plain ASCII.
  static const char32_t kPool[] = {
      'a', 'e', 'A', ' ', '\n', 0x9F, 0xA0, 0xC5, 0xE9, 0xFF, 0x100, 0x212B, 0x2126,
      0x300, 0x301, 0x308, 0x323, 0x327, 0x345, 0x1100, 0x1161, 0x11A8, 0x3040, 0x3041,
      0x304B, 0x3096, 0x3099, 0x309A, 0x30A0, 0x30A1, 0x30AB, 0x30FA, 0x30FB, 0x33FF, 0x3400,
      0x4DBF, 0x4DC0, 0x4E00, 0x9FFF, 0xA000, 0xABFF, 0xAC00, 0xAC01, 0xD7A3, 0xD7A4, 0xF900,
      0xFB01, 0xFF21, 0x0915, 0x093C, 0x0BC6, 0x0BBE, 0x0CC6, 0x0CD5, 0x0DD9, 0x0DCF, 0x1D15E,
      0x2ADC, 0x0F73, 0x05D0, 0x05B7, 0x0344, 0x00BD, 0x1E9B, 0x0041, 0x030A};
  std::string s;
  const int len = static_cast<int>(rng() % 16);
  for (int i = 0; i < len; ++i) AppendUtf8(kPool[rng() % (sizeof(kPool) / sizeof(kPool[0]))], &s);
  return s;
}

TEST(NormalizerTest, SegmentedNormalizationEqualsWholeText) {
  const std::pair<const char*, int> forms[] = {
      {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
      {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
      {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
      {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT}};
  std::mt19937 rng(11);
  for (const auto& [name, options] : forms) {
    auto n = Normalizer::FromJson(nlohmann::json{{"type", name}});
    ASSERT_TRUE(n.ok()) << n.status();
    for (int i = 0; i < 20000; ++i) {
      std::string text = RandomText(rng);
      const std::string want = Whole(text, options);
      ASSERT_TRUE((*n)->Normalize(&text).ok());
      ASSERT_EQ(text, want) << name << " " << testing::Escape(want);
    }
  }
}

// Every character the NFC fast path treats as a segment start must be
// unchanged by NFC and must not combine with any preceding character that
// can start a composition.
TEST(NormalizerTest, NfcSegmentStartsAreInert) {
  const int nfc = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  const std::pair<char32_t, char32_t> ranges[] = {{0xA0, 0xFF}, {0x3041, 0x3096}, {0x30A1, 0x30FA},
                                                  {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}};
  const char32_t starters[] = {'a', 'e', 'A', 0xC5, 0x1100, 0xAC00, 0x304B, 0x30AB, 0x0915, 0x05D0};
  for (const auto& [lo, hi] : ranges) {
    for (char32_t cp = lo; cp <= hi; ++cp) {
      std::string c;
      AppendUtf8(cp, &c);
      ASSERT_EQ(Whole(c, nfc), c) << std::hex << static_cast<uint32_t>(cp);
      ASSERT_EQ(utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class, 0);
      for (char32_t s : starters) {
        std::string pair;
        AppendUtf8(s, &pair);
        pair += c;
        ASSERT_EQ(Whole(pair, nfc), Whole(std::string(pair, 0, pair.size() - c.size()), nfc) + c)
            << std::hex << static_cast<uint32_t>(s) << " " << static_cast<uint32_t>(cp);
      }
    }
  }
}

TEST(NormalizerTest, SimpleNormalizers) {
  using nlohmann::json;
  auto check = [](const json& config, std::string in, const std::string& want) {
    auto n = Normalizer::FromJson(config);
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_TRUE((*n)->Normalize(&in).ok());
    EXPECT_EQ(in, want) << config.dump();
  };
  check({{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}, "hi", "\xE2\x96\x81hi");
  check({{"type", "Prepend"}, {"prepend", "_"}}, "", "");
  check({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}}, " \t\xE3\x80\x80x y\n ", "x y");
  check({{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}, "  x  ", "  x");
  check({{"type", "Replace"}, {"pattern", {{"String", "ab"}}}, {"content", "X"}}, "abcabab", "XcXX");
  check({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}, "a  b   c d", "a b c d");
  check({{"type", "Replace"}, {"pattern", {{"String", ""}}}, {"content", "X"}}, "abc", "abc");
  check({{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFKC"}}, {{"type", "Prepend"}, {"prepend", "^"}}})}},
        "\xEF\xAC\x81", "^fi");
}

}  // namespace
}  // namespace duet::tokenizer
