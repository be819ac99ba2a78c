// Encode/decode equality with the reference Rust `tokenizers` 0.23.2 on the
// goldens from scripts/make_tokenizer_golden.py: 2,591 corpus strings per
// shipped tokenizer, 727 for each of the two derived variants, 3,000 random
// strings per shipped tokenizer (*_fuzz); both add_special_tokens settings,
// decode with and without skip_special_tokens, and ~900 random id sequences
// (many cutting multi-byte characters) per variant.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"
#include "tokenizer/tokenizer.h"

namespace duet::tokenizer {
namespace {

using nlohmann::json;
using testing::Escape;
using testing::IdsToString;

constexpr int kMaxReported = 10;  // mismatches printed per check

struct Golden {
  json data;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Rebuilds the variant's tokenizer: the base tokenizer.json with the
// golden's patch applied (sections replaced, "added_tokens_extra" appended),
// the same rule as apply_patch() in the generator.
Golden LoadGolden(const std::string& variant) {
  Golden g;
  auto text = testing::ReadFile(testing::SourcePath("tests/golden/tokenizer/" + variant + ".json.gz"));
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return g;
  g.data = json::parse(*text);
  auto base = testing::ReadFile(testing::SourcePath(g.data["base"].get<std::string>()));
  EXPECT_TRUE(base.ok()) << base.status();
  if (!base.ok()) return g;
  json tok = json::parse(*base);
  for (const auto& [key, value] : g.data["patch"].items()) {
    if (key == "added_tokens_extra") {
      for (const json& t : value) tok["added_tokens"].push_back(t);
    } else {
      tok[key] = value;
    }
  }
  auto tokenizer = Tokenizer::FromJson(tok.dump());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  if (tokenizer.ok()) g.tokenizer = std::move(*tokenizer);
  return g;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = LoadGolden(GetParam());
    ASSERT_NE(golden_.tokenizer, nullptr);
  }
  Golden golden_;
};

TEST_P(GoldenTest, VocabularyMatches) {
  const Tokenizer& t = *golden_.tokenizer;
  EXPECT_EQ(t.vocab_size(), golden_.data["vocab_size"].get<int32_t>());
  for (const auto& [token, id] : golden_.data["token_to_id"].items()) {
    const std::optional<int32_t> ours = t.TokenToId(token);
    if (id.is_null()) {
      EXPECT_FALSE(ours.has_value()) << token;
    } else {
      EXPECT_EQ(ours, std::optional<int32_t>(id.get<int32_t>())) << token;
    }
  }
  for (const json& id : golden_.data["special_ids"]) EXPECT_TRUE(t.IsSpecialToken(id.get<int32_t>()));
}

TEST_P(GoldenTest, EncodeMatchesReference) {
  const Tokenizer& t = *golden_.tokenizer;
  const json& cases = golden_.data["cases"];
  const bool derived = GetParam() == "qwen3_flags" || GetParam() == "gpt2_style";
  ASSERT_GE(cases.size(), derived ? 700u : 2000u);
  int bad = 0;
  for (const json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    for (const bool special : {false, true}) {
      const auto want = c[special ? "ids_special" : "ids"].get<std::vector<int32_t>>();
      auto got = t.Encode(text, special);
      ASSERT_TRUE(got.ok()) << got.status() << " for \"" << Escape(text) << "\"";
      if (*got != want && ++bad <= kMaxReported) {
        ADD_FAILURE() << "Encode(\"" << Escape(text) << "\", add_special_tokens=" << special
                      << ")\n  got  " << IdsToString(*got) << "\n  want " << IdsToString(want);
      }
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << 2 * cases.size() << " encodings differ";
}

TEST_P(GoldenTest, DecodeOfEncodingsMatchesReference) {
  const Tokenizer& t = *golden_.tokenizer;
  int bad = 0;
  for (const json& c : golden_.data["cases"]) {
    const auto ids = c["ids_special"].get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      const std::string want = c[skip ? "decoded_skip" : "decoded"].get<std::string>();
      auto got = t.Decode(ids, skip);
      ASSERT_TRUE(got.ok()) << got.status();
      if (*got != want && ++bad <= kMaxReported) {
        ADD_FAILURE() << "Decode(" << IdsToString(ids) << ", skip=" << skip << ")\n  got  \""
                      << Escape(*got) << "\"\n  want \"" << Escape(want) << "\"";
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST_P(GoldenTest, DecodeOfRandomIdsMatchesReference) {
  const Tokenizer& t = *golden_.tokenizer;
  const json& cases = golden_.data["decode_cases"];
  ASSERT_GE(cases.size(), 800u);
  int bad = 0;
  for (const json& c : cases) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    for (const bool skip : {false, true}) {
      const std::string want = c[skip ? "text_skip" : "text"].get<std::string>();
      auto got = t.Decode(ids, skip);
      ASSERT_TRUE(got.ok()) << got.status();
      if (*got != want && ++bad <= kMaxReported) {
        ADD_FAILURE() << "Decode(" << IdsToString(ids) << ", skip=" << skip << ")\n  got  \""
                      << Escape(*got) << "\"\n  want \"" << Escape(want) << "\"";
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

INSTANTIATE_TEST_SUITE_P(Variants, GoldenTest,
                         ::testing::Values("qwen3", "llama3", "qwen3_flags", "gpt2_style",
                                           "qwen3_fuzz", "llama3_fuzz"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace duet::tokenizer
