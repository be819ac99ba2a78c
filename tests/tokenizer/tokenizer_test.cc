// Loading errors, Encode/Decode contracts, and BPE options on small synthetic
// tokenizers. Reference behaviour for the shipped tokenizers is covered by
// golden_test.cc.
#include "tokenizer/tokenizer.h"

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"

namespace duet::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using nlohmann::json;

// A tiny byte-level BPE: "a", "b", "c", "ab", "abc", "Ġ" and merges
// (a,b) then (ab,c). `merges_as_pairs` picks the [a, b] merges format.
json TinyBpe(bool merges_as_pairs = false) {
  json merges = merges_as_pairs ? json::array({json::array({"a", "b"}), json::array({"ab", "c"})})
                                : json::array({"a b", "ab c"});
  return json{{"version", "1.0"},
              {"added_tokens", json::array({{{"id", 6},
                                             {"content", "<s>"},
                                             {"single_word", false},
                                             {"lstrip", false},
                                             {"rstrip", false},
                                             {"normalized", false},
                                             {"special", true}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", nullptr},
              {"model",
               {{"type", "BPE"},
                {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}, {"Ġ", 5}}},
                {"merges", merges}}}};
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const json& j) {
  return Tokenizer::FromJson(j.dump());
}

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  auto t = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenizerLoadTest, MalformedJsonIsInvalidArgument) {
  for (const char* text : {"", "{", "{\"model\": ", "[1, 2", "not json", "{\"model\": {}}x"}) {
    auto t = Tokenizer::FromJson(text);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_EQ(Tokenizer::FromJson("[]").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Tokenizer::FromJson("{}").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerLoadTest, UnsupportedModelTypesAreNamed) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    json j = TinyBpe();
    j["model"] = {{"type", type}, {"vocab", {{"a", 0}}}, {"unk_token", "a"}};
    auto t = Load(j);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr(type));
  }
}

TEST(TokenizerLoadTest, UnsupportedSectionsAreNamed) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"normalizer", {{"type", "BertNormalizer"}}},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Lowercase"}}})}}},
      {"pre_tokenizer", {{"type", "Metaspace"}}},
      {"pre_tokenizer", {{"type", "Whitespace"}}},
      {"decoder", {{"type", "WordPiece"}}},
      {"post_processor", {{"type", "NotAProcessor"}}},
  };
  for (const auto& [section, value] : cases) {
    json j = TinyBpe();
    j[section] = value;
    auto t = Load(j);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << section;
    EXPECT_THAT(t.status().message(), HasSubstr(section)) << t.status();
  }
}

TEST(TokenizerLoadTest, BadModelContentsAreInvalidArgument) {
  json no_vocab = TinyBpe();
  no_vocab["model"].erase("vocab");
  json bad_merge = TinyBpe();
  bad_merge["model"]["merges"] = json::array({"a z"});
  json merge_without_space = TinyBpe();
  merge_without_space["model"]["merges"] = json::array({"ab"});
  json bad_id = TinyBpe();
  bad_id["model"]["vocab"]["a"] = "zero";
  json negative_id = TinyBpe();
  negative_id["model"]["vocab"]["a"] = -1;
  json dropout = TinyBpe();
  dropout["model"]["dropout"] = 0.1;
  json bad_regex = TinyBpe();
  bad_regex["pre_tokenizer"] = {{"type", "Split"},
                                {"pattern", {{"Regex", "(unclosed"}}},
                                {"behavior", "Isolated"},
                                {"invert", false}};
  json bad_added = TinyBpe();
  bad_added["added_tokens"][0]["content"] = 5;
  for (const json& j : {no_vocab, bad_merge, merge_without_space, bad_id, negative_id, dropout,
                        bad_regex, bad_added}) {
    EXPECT_EQ(Load(j).status().code(), absl::StatusCode::kInvalidArgument) << j.dump().substr(0, 200);
  }
}

TEST(TokenizerTest, BothMergeFormatsAgree) {
  auto strings = Load(TinyBpe(false));
  auto pairs = Load(TinyBpe(true));
  ASSERT_TRUE(strings.ok()) << strings.status();
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  for (const char* text : {"abc", "ab", "cab", "abcabc", "bca", "aabbcc"}) {
    EXPECT_EQ(*(*strings)->Encode(text, false), *(*pairs)->Encode(text, false)) << text;
  }
  EXPECT_THAT(*(*strings)->Encode("abc", false), ElementsAre(4));
  EXPECT_THAT(*(*strings)->Encode("cab", false), ElementsAre(2, 3));
}

TEST(TokenizerTest, UnknownCharactersWithoutUnkAreDropped) {
  auto t = Load(TinyBpe());
  ASSERT_TRUE(t.ok());
  // As in the reference: a character missing from the vocabulary, with no
  // unk_token, produces no id.
  EXPECT_THAT(*(*t)->Encode("axb", false), ElementsAre(3));  // a, b then merge
}

TEST(TokenizerTest, UnkTokenAndFuseUnk) {
  json j = TinyBpe();
  j["model"]["vocab"]["<unk>"] = 7;
  j["model"]["unk_token"] = "<unk>";
  auto t = Load(j);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("axyb", false), ElementsAre(0, 7, 7, 1));
  j["model"]["fuse_unk"] = true;
  t = Load(j);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("axyb", false), ElementsAre(0, 7, 1));
  j["model"]["unk_token"] = "<missing>";
  EXPECT_EQ(Load(j).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, ByteFallback) {
  json j = TinyBpe();
  j["model"]["byte_fallback"] = true;
  j["model"]["vocab"]["<0xC3>"] = 8;
  j["model"]["vocab"]["<0xA9>"] = 9;
  auto t = Load(j);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("a\xC3\xA9", false), ElementsAre(0, 8, 9));  // "aé"
}

TEST(TokenizerTest, ContinuingSubwordPrefixAndSuffix) {
  json j = TinyBpe();
  j["model"]["continuing_subword_prefix"] = "##";
  j["model"]["vocab"] = {{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}, {"abc", 4}};
  j["model"]["merges"] = json::array({"a ##b", "ab ##c"});
  auto t = Load(j);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("abc", false), ElementsAre(4));
  EXPECT_THAT(*(*t)->Encode("ab", false), ElementsAre(3));
}

TEST(TokenizerTest, IgnoreMergesEmitsWholeWord) {
  // "ac" is a vocabulary entry that merges cannot reach.
  json j = TinyBpe();
  j["model"]["vocab"]["ac"] = 7;
  auto t = Load(j);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("ac", false), ElementsAre(0, 2));
  j["model"]["ignore_merges"] = true;
  t = Load(j);
  ASSERT_TRUE(t.ok());
  EXPECT_THAT(*(*t)->Encode("ac", false), ElementsAre(7));
}

TEST(TokenizerTest, LongWordUsesSameMergeOrder) {
  // 200 symbols takes the heap path; the result must match the pattern.
  auto t = Load(TinyBpe());
  ASSERT_TRUE(t.ok());
  std::string text;
  for (int i = 0; i < 100; ++i) text += "abc";
  const auto ids = *(*t)->Encode(text, false);
  EXPECT_EQ(ids, std::vector<int32_t>(100, 4));
  const auto mixed = *(*t)->Encode(text + "ab", false);
  EXPECT_EQ(mixed.size(), 101u);
  EXPECT_EQ(mixed.back(), 3);
}

TEST(TokenizerTest, EncodeRejectsInvalidUtf8) {
  for (const char* text : {"\xFF", "ab\xC3", "\xED\xA0\x80", "\xC0\xAF", "x\x80y"}) {
    auto ids = testing::Qwen3().Encode(text, false);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << testing::Escape(text);
  }
}

TEST(TokenizerTest, EmptyTextAndAddedTokens) {
  EXPECT_TRUE(testing::Qwen3().Encode("", false)->empty());
  EXPECT_TRUE(testing::Qwen3().Encode("", true)->empty());
  EXPECT_THAT(*testing::Llama3().Encode("", true), ElementsAre());  // no template in the npm copy
  EXPECT_THAT(*testing::Qwen3().Encode("<|im_start|><|im_end|>", false), ElementsAre(151644, 151645));
}

TEST(TokenizerTest, DecodeRejectsUnknownIds) {
  const Tokenizer& t = testing::Qwen3();
  EXPECT_EQ(t.vocab_size(), 151669);
  EXPECT_EQ(testing::Llama3().vocab_size(), 128256);
  for (const int32_t id : {-1, 151669, 151935, 1 << 30}) {
    const std::vector<int32_t> ids = {9707, id};
    auto text = t.Decode(ids, false);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << id;
  }
  EXPECT_EQ(*t.Decode(std::vector<int32_t>{}, false), "");
}

TEST(TokenizerTest, VocabularyLookups) {
  const Tokenizer& t = testing::Qwen3();
  EXPECT_EQ(t.TokenToId("<|im_end|>"), 151645);
  EXPECT_EQ(t.TokenToId("Hello"), 9707);
  EXPECT_EQ(t.TokenToId("no such token"), std::nullopt);
  EXPECT_EQ(t.IdToToken(151644), "<|im_start|>");
  EXPECT_EQ(t.IdToToken(1879), "Ġworld");
  EXPECT_EQ(t.IdToToken(-3), std::nullopt);
  EXPECT_EQ(t.IdToToken(151669), std::nullopt);
  EXPECT_TRUE(t.IsSpecialToken(151645));
  EXPECT_FALSE(t.IsSpecialToken(151667));  // <think> is added but not special
  EXPECT_FALSE(t.IsSpecialToken(9707));
}

TEST(TokenizerTest, KnownEncodings) {
  EXPECT_THAT(*testing::Qwen3().Encode("Hello world", true), ElementsAre(9707, 1879));
  EXPECT_THAT(*testing::Llama3().Encode("Hello world", false), ElementsAre(9906, 1917));
}

TEST(TokenizerTest, ConcurrentEncodeMatchesSerial) {
  const Tokenizer& t = testing::Qwen3();
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) {
    texts.push_back("Thread " + std::to_string(i) + " says héllo wörld 你好 " +
                    std::string(static_cast<size_t>(i % 7) + 1, 'z') + " <|im_end|> " +
                    std::to_string(i * 7919));
  }
  std::vector<std::vector<int32_t>> serial;
  for (const auto& s : texts) serial.push_back(*t.Encode(s, false));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int th = 0; th < 8; ++th) {
    threads.emplace_back([&, th] {
      for (int round = 0; round < 50; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          auto ids = t.Encode(texts[(i + th) % texts.size()], false);
          if (!ids.ok() || *ids != serial[(i + th) % texts.size()]) ++mismatches[th];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(TokenizerTest, DecoderlessTokenizerJoinsWithSpaces) {
  json j = TinyBpe();
  auto t = Load(j);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{4, 6, 3}, false), "abc <s> ab");
  EXPECT_EQ(*(*t)->Decode(std::vector<int32_t>{4, 6, 3}, true), "abc ab");
}

TEST(TokenizerTest, BertAndRobertaProcessorsWrapTheSequence) {
  json j = TinyBpe();
  j["post_processor"] = {{"type", "RobertaProcessing"},
                         {"sep", json::array({"b", 1})},
                         {"cls", json::array({"a", 0})},
                         {"trim_offsets", true},
                         {"add_prefix_space", false}};
  auto t = Load(j);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(*(*t)->Encode("abc", true), ElementsAre(0, 4, 1));
  EXPECT_THAT(*(*t)->Encode("abc", false), ElementsAre(4));
}

}  // namespace
}  // namespace duet::tokenizer
