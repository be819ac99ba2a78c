// TextStream: detokenized deltas and stop strings of one stream, on the
// real Qwen3 tokenizer (assets/qwen3).
#include "router/text_stream.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tokenizer/tokenizer.h"

namespace duet::router {
namespace {

std::unique_ptr<tokenizer::Tokenizer> Qwen3() {
  auto tok = tokenizer::Tokenizer::FromFile(
      absl::StrCat(DUET_SOURCE_DIR, "/assets/qwen3/tokenizer.json"));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(*tok) : nullptr;
}

// Ids past the tokenizer's vocabulary (the model's padded rows) have no
// text: the stream goes on, they are counted as consumed.
TEST(TextStreamTest, IdsWithoutATokenHaveNoTextAndDoNotFailTheStream) {
  auto tok = Qwen3();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("Hello world", false);
  ASSERT_TRUE(ids.ok());
  auto stream = TextStream::Create(tok.get(), {});
  ASSERT_TRUE(stream.ok());
  std::vector<int32_t> with_padding = {(*ids)[0], 151900, 151935};
  with_padding.insert(with_padding.end(), ids->begin() + 1, ids->end());
  auto delta = stream->Add(with_padding);
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_EQ(delta->tokens_consumed, with_padding.size());
  EXPECT_EQ(delta->text + stream->Finish(), "Hello world");
}

TEST(TextStreamTest, StopStringCutsTheTextAndCountsTheTokensUpToIt) {
  auto tok = Qwen3();
  ASSERT_NE(tok, nullptr);
  auto ids = tok->Encode("one two three four", false);
  ASSERT_TRUE(ids.ok());
  auto stream = TextStream::Create(tok.get(), {" three"});
  ASSERT_TRUE(stream.ok());
  auto delta = stream->Add(*ids);
  ASSERT_TRUE(delta.ok());
  EXPECT_TRUE(delta->stopped);
  EXPECT_EQ(delta->matched_stop, " three");
  EXPECT_EQ(delta->text, "one two");
  EXPECT_LT(delta->tokens_consumed, ids->size());
  EXPECT_EQ(TextStream::Create(tok.get(), {""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace duet::router
