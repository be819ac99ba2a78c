// OpenAI logprobs objects (router/openai_logprobs.cc) on the Qwen3
// tokenizer: both endpoints' shapes, token strings and bytes, text
// offsets across stream chunks, -inf, ids past the vocabulary.
#include "router/openai_logprobs.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tokenizer/tokenizer.h"

namespace duet::router::openai {
namespace {

using json = nlohmann::ordered_json;

class OpenAiLogprobsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = tokenizer::Tokenizer::FromFile(
        absl::StrCat(DUET_SOURCE_DIR, "/assets/qwen3/tokenizer.json"));
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = tok->release();
  }
  static void TearDownTestSuite() { delete tok_; }

  static std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tok_->Encode(text, /*add_special_tokens=*/false);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.value_or(std::vector<int32_t>{});
  }
  // A chunk of `ids`, token i with logprob -(i + 1) and alternatives
  // (ids[i], -(i + 1)), (alt, -(i + 2)), (alt + 1, -(i + 3)).
  static v1::TokenChunk Chunk(const std::vector<int32_t>& ids, int32_t alt,
                              int first = 0) {
    v1::TokenChunk c;
    for (size_t i = 0; i < ids.size(); ++i) {
      const float base = -static_cast<float>(first + i + 1);
      c.add_token_ids(ids[i]);
      v1::TokenLogprobs* lp = c.add_logprobs();
      lp->set_logprob(base);
      lp->add_top_token_ids(ids[i]);
      lp->add_top_logprobs(base);
      lp->add_top_token_ids(alt);
      lp->add_top_logprobs(base - 1);
      lp->add_top_token_ids(alt + 1);
      lp->add_top_logprobs(base - 2);
    }
    return c;
  }
  static std::string Text(int32_t id) {
    const int32_t one[] = {id};
    return tok_->Decode(one, false).value();
  }

  static tokenizer::Tokenizer* tok_;
};
tokenizer::Tokenizer* OpenAiLogprobsTest::tok_ = nullptr;

TEST_F(OpenAiLogprobsTest, CompletionsShapeWithTextOffsets) {
  const std::vector<int32_t> ids = Encode("Hello, wonderful world");
  ASSERT_GE(ids.size(), 3u);
  const int32_t alt = Encode(" cat")[0];
  LogprobsBuilder b(tok_, /*chat=*/false, /*top=*/2);
  const json o = b.Build(Chunk(ids, alt));
  ASSERT_EQ(o["tokens"].size(), ids.size());
  ASSERT_EQ(o["token_logprobs"].size(), ids.size());
  ASSERT_EQ(o["top_logprobs"].size(), ids.size());
  ASSERT_EQ(o["text_offset"].size(), ids.size());
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(o["tokens"][i], Text(ids[i]));
    EXPECT_EQ(o["text_offset"][i], joined.size()) << i;  // ASCII here
    joined += o["tokens"][i].get<std::string>();
    EXPECT_EQ(o["token_logprobs"][i].get<double>(), -double(i + 1));
    // The top 2 (the token itself and `alt`), most likely first.
    const json& top = o["top_logprobs"][i];
    ASSERT_EQ(top.size(), 2u) << top.dump();
    EXPECT_EQ(top.begin().key(), Text(ids[i]));
    EXPECT_EQ(top[Text(alt)].get<double>(), -double(i + 2));
  }
  EXPECT_EQ(joined, "Hello, wonderful world");
  EXPECT_EQ(o.dump().find("content"), std::string::npos);
}

TEST_F(OpenAiLogprobsTest, CompletionsTopDictAlwaysNamesTheSampledToken) {
  const std::vector<int32_t> ids = Encode(" yes");
  ASSERT_EQ(ids.size(), 1u);
  const int32_t alt = Encode(" no")[0];
  // logprobs: 0 -> only the sampled token.
  json o = LogprobsBuilder(tok_, false, 0).Build(Chunk(ids, alt));
  EXPECT_EQ(o["top_logprobs"][0], json({{" yes", -1.0}}));
  // A sampled token outside the top 1 is added after it.
  v1::TokenChunk c = Chunk(ids, alt);
  c.mutable_logprobs(0)->set_top_token_ids(0, alt);
  c.mutable_logprobs(0)->set_top_token_ids(1, ids[0]);
  c.mutable_logprobs(0)->set_logprob(-2);
  o = LogprobsBuilder(tok_, false, 1).Build(c);
  EXPECT_EQ(o["top_logprobs"][0], json({{" no", -1.0}, {" yes", -2.0}}));
}

TEST_F(OpenAiLogprobsTest, ChatShapeWithBytes) {
  const std::vector<int32_t> ids = Encode("Hi there");
  const int32_t alt = Encode("!")[0];
  const json o = LogprobsBuilder(tok_, /*chat=*/true, 3).Build(Chunk(ids, alt));
  ASSERT_EQ(o.size(), 1u) << o.dump();
  ASSERT_EQ(o["content"].size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const json& e = o["content"][i];
    const std::string text = Text(ids[i]);
    EXPECT_EQ(e["token"], text);
    EXPECT_EQ(e["logprob"].get<double>(), -double(i + 1));
    std::string bytes;
    for (const json& b : e["bytes"]) bytes.push_back(char(b.get<int>()));
    EXPECT_EQ(bytes, text);
    ASSERT_EQ(e["top_logprobs"].size(), 3u);
    EXPECT_EQ(e["top_logprobs"][0]["token"], text);
    EXPECT_EQ(e["top_logprobs"][1]["token"], "!");
    EXPECT_EQ(e["top_logprobs"][1]["bytes"], json({33}));
    EXPECT_EQ(e["top_logprobs"][2]["logprob"].get<double>(), -double(i + 3));
    EXPECT_EQ(e.size(), 4u);  // token, logprob, bytes, top_logprobs
  }
  // top 0: an empty list per token.
  const json none = LogprobsBuilder(tok_, true, 0).Build(Chunk(ids, alt));
  EXPECT_TRUE(none["content"][0]["top_logprobs"].empty());
}

TEST_F(OpenAiLogprobsTest, PartialCharactersKeepTheirRawBytes) {
  // A rare character that byte-level BPE splits into several tokens, none
  // of them valid UTF-8 alone.
  const std::string ch = "\xF0\x9D\x94\x98";  // U+1D518
  const std::vector<int32_t> ids = Encode(ch);
  ASSERT_GE(ids.size(), 2u) << "pick a rarer character";
  const json o = LogprobsBuilder(tok_, true, 0).Build(Chunk(ids, 0));
  std::string bytes;
  for (const json& e : o["content"]) {
    for (const json& b : e["bytes"]) bytes.push_back(char(b.get<int>()));
    EXPECT_NE(e["token"], "");  // U+FFFD, as a one-token decode gives
  }
  EXPECT_EQ(bytes, ch);
}

TEST_F(OpenAiLogprobsTest, StreamChunksContinueTheTextOffsets) {
  const std::vector<int32_t> ids = Encode("one two three four five");
  ASSERT_GE(ids.size(), 4u);
  const json whole = LogprobsBuilder(tok_, false, 1).Build(Chunk(ids, 7));
  LogprobsBuilder stream(tok_, false, 1);
  json joined = stream.Empty();
  for (size_t at = 0; at < ids.size(); at += 2) {
    const std::vector<int32_t> part(ids.begin() + at,
                                    ids.begin() + std::min(at + 2, ids.size()));
    const json o = stream.Build(Chunk(part, 7, static_cast<int>(at)));
    for (auto& [k, v] : o.items()) {
      for (const json& e : v) joined[k].push_back(e);
    }
  }
  EXPECT_EQ(joined, whole);
}

TEST_F(OpenAiLogprobsTest, SpecialUnknownIdsAndInfinity) {
  const int32_t eos = tok_->TokenToId("<|im_end|>").value();
  const int32_t past = tok_->vocab_size() + 5;  // a padded embedding row
  v1::TokenChunk c;
  c.add_token_ids(eos);
  c.add_token_ids(past);
  v1::TokenLogprobs lp;
  lp.set_logprob(-std::numeric_limits<float>::infinity());
  lp.add_top_token_ids(past);
  lp.add_top_logprobs(-0.5f);
  *c.add_logprobs() = lp;
  *c.add_logprobs() = lp;
  const json chat = LogprobsBuilder(tok_, true, 1).Build(c);
  EXPECT_EQ(chat["content"][0]["token"], "<|im_end|>");
  EXPECT_EQ(chat["content"][0]["logprob"].get<double>(), -9999.0);
  EXPECT_EQ(chat["content"][1]["token"], "");
  EXPECT_TRUE(chat["content"][1]["bytes"].empty());
  EXPECT_EQ(chat["content"][1]["top_logprobs"][0]["token"], "");
  const json legacy = LogprobsBuilder(tok_, false, 1).Build(c);
  EXPECT_EQ(legacy["tokens"], json({"<|im_end|>", ""}));
  EXPECT_EQ(legacy["text_offset"], json({0, 10}));
  // The unknown alternative and the token share the key "".
  EXPECT_EQ(legacy["top_logprobs"][1], json({{"", -0.5}}));
  // A chunk without logprobs (or fewer) yields only the paired tokens.
  v1::TokenChunk bare;
  bare.add_token_ids(eos);
  EXPECT_TRUE(LogprobsBuilder(tok_, true, 1).Build(bare)["content"].empty());
}

}  // namespace
}  // namespace duet::router::openai
