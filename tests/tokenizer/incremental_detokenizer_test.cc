#include "tokenizer/incremental_detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/byte_level.h"

namespace duet::tokenizer {
namespace {

// Written from the UTF-8 definition (RFC 3629), independently of
// tokenizer/utf8.cc, so the detokenizer is not checked with its own code.
bool IsValidUtf8Independent(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      n = 1;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 2;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 3;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<size_t>(n) >= s.size()) return false;  // truncated
    for (int k = 1; k <= n; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

TEST(Utf8ValidatorTest, Sanity) {
  EXPECT_TRUE(IsValidUtf8Independent("a\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8Independent("\xC3"));
  EXPECT_FALSE(IsValidUtf8Independent("\xE4\xBD"));
  EXPECT_FALSE(IsValidUtf8Independent("\xC0\x80"));
  EXPECT_FALSE(IsValidUtf8Independent("\xED\xA0\x80"));
  EXPECT_FALSE(IsValidUtf8Independent("\xF4\x90\x80\x80"));
  EXPECT_FALSE(IsValidUtf8Independent("\x80"));
}

// Random id sequences biased towards what breaks streaming: single-byte
// tokens (partial UTF-8), special tokens, and slices of real encodings.
std::vector<std::vector<int32_t>> RandomSequences(const Tokenizer& t, int count, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<std::string> texts = {
      "Hello, 世界! 👨‍👩‍👧‍👦 naïve café 🇯🇵 東京 <|im_end|> done",
      "مرحبا بالعالم — Привет 🤖🚀 ½ e\xCC\x81 \xE2\x80\x8B",
      "def f(x):\n\treturn x ** 2  # 平方\r\n",
  };
  std::vector<std::vector<int32_t>> encodings;
  for (const auto& s : texts) encodings.push_back(*t.Encode(s, true));
  std::vector<int32_t> byte_ids;  // tokens that are one raw byte >= 0x80
  for (int32_t id = 0; id < t.vocab_size() && byte_ids.size() < 200; ++id) {
    std::string bytes;
    bool any = false;
    if (t.AppendTokenBytes(id, false, &any, &bytes).ok() && bytes.size() == 1 &&
        static_cast<unsigned char>(bytes[0]) >= 0x80) {
      byte_ids.push_back(id);
    }
  }
  std::vector<std::vector<int32_t>> out;
  for (int n = 0; n < count; ++n) {
    std::vector<int32_t> ids;
    const int len = 1 + static_cast<int>(rng() % 40);
    for (int k = 0; k < len; ++k) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 4 && !byte_ids.empty()) {  // none without a ByteLevel decoder
        ids.push_back(byte_ids[rng() % byte_ids.size()]);
      } else if (kind < 7) {
        const auto& e = encodings[rng() % encodings.size()];
        ids.push_back(e[rng() % e.size()]);
      } else {
        ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(t.vocab_size())));
      }
    }
    out.push_back(ids);
  }
  for (const auto& e : encodings) out.push_back(e);
  return out;
}

void CheckStreaming(const Tokenizer& t, int count, uint32_t seed) {
  for (const bool skip : {false, true}) {
    for (const auto& ids : RandomSequences(t, count, seed)) {
      IncrementalDetokenizer detok(&t, skip);
      std::string streamed;
      for (const int32_t id : ids) {
        auto delta = detok.Add(id);
        ASSERT_TRUE(delta.ok()) << delta.status();
        ASSERT_TRUE(IsValidUtf8Independent(*delta)) << testing::Escape(*delta);
        ASSERT_LE(detok.pending_bytes(), 3u);
        streamed += *delta;
      }
      const std::string tail = detok.Flush();
      ASSERT_TRUE(IsValidUtf8Independent(tail));
      streamed += tail;
      auto whole = t.Decode(ids, skip);
      ASSERT_TRUE(whole.ok());
      ASSERT_EQ(streamed, *whole) << testing::IdsToString(ids);
    }
  }
}

TEST(IncrementalDetokenizerTest, MatchesOneShotDecodeQwen3) { CheckStreaming(testing::Qwen3(), 1000, 1); }

TEST(IncrementalDetokenizerTest, MatchesOneShotDecodeLlama3) { CheckStreaming(testing::Llama3(), 1000, 2); }

TEST(IncrementalDetokenizerTest, MatchesOneShotDecodeWithoutDecoder) {
  // No decoder: tokens are joined with spaces, which depends on whether an
  // earlier token was emitted (skipped specials do not count).
  auto text = testing::ReadFile(testing::SourcePath("assets/qwen3/tokenizer.json"));
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  j["decoder"] = nullptr;
  auto t = Tokenizer::FromJson(j.dump());
  ASSERT_TRUE(t.ok()) << t.status();
  CheckStreaming(**t, 300, 3);
}

// The single-byte tokens of `bytes` (byte-level alphabet).
std::vector<int32_t> ByteTokens(const Tokenizer& t, absl::string_view bytes) {
  std::vector<int32_t> ids;
  for (const unsigned char b : bytes) {
    const std::optional<int32_t> id =
        t.TokenToId(ByteLevelAlphabet::Get().Encoded(b));
    EXPECT_TRUE(id.has_value());
    ids.push_back(id.value_or(0));
  }
  return ids;
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacter) {
  const Tokenizer& t = testing::Qwen3();
  const std::vector<int32_t> ids = ByteTokens(t, "a\xF0\x9F\x98\x80");  // "a😀" byte by byte
  IncrementalDetokenizer detok(&t, false);
  EXPECT_EQ(*detok.Add(ids[0]), "a");
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(*detok.Add(ids[i]), "") << "emitted part of a character";
    EXPECT_EQ(detok.pending_bytes(), i);
  }
  EXPECT_EQ(*detok.Add(ids[4]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(detok.Flush(), "");
}

TEST(IncrementalDetokenizerTest, InvalidBytesBecomeReplacementAsSoonAsKnown) {
  const Tokenizer& t = testing::Qwen3();
  IncrementalDetokenizer detok(&t, false);
  const std::vector<int32_t> ids = ByteTokens(t, "\xE4\xBDx\xE4\xBD");
  EXPECT_EQ(*detok.Add(ids[0]), "");
  EXPECT_EQ(*detok.Add(ids[1]), "");
  EXPECT_EQ(*detok.Add(ids[2]), "\xEF\xBF\xBDx");  // "x" proves E4 BD was cut short
  EXPECT_EQ(*detok.Add(ids[3]), "");
  EXPECT_EQ(*detok.Add(ids[4]), "");
  EXPECT_EQ(detok.Flush(), "\xEF\xBF\xBD");  // truncated at the end: one U+FFFD
  EXPECT_EQ(*t.Decode(ids, false), "\xEF\xBF\xBDx\xEF\xBF\xBD");
}

TEST(IncrementalDetokenizerTest, BadIdLeavesStateUnchanged) {
  const Tokenizer& t = testing::Qwen3();
  IncrementalDetokenizer detok(&t, false);
  EXPECT_EQ(*detok.Add(9707), "Hello");
  EXPECT_EQ(detok.Add(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(detok.Add(t.vocab_size()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*detok.Add(1879), " world");
  EXPECT_EQ(detok.Flush(), "");
}

}  // namespace
}  // namespace duet::tokenizer
