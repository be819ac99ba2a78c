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
  EXPECT_EQ(delta->text + stream->Finish().text, "Hello world");
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

// A stream that ends inside a UTF-8 character: the held-back bytes come out
// as U+FFFD at Finish, as in the one-shot decode, and that text can itself
// complete a stop string (found by fuzz_router_generate).
TEST(TextStreamTest, FinishFlushesAnUnfinishedCharacterThroughTheStopStrings) {
  auto tok = Qwen3();
  ASSERT_NE(tok, nullptr);
  const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
  // "Hello", ",", " publish", then id 169: the first byte of a multi-byte
  // character on its own.
  const std::vector<int32_t> ids = {9707, 11, 3415, 169};
  const int32_t lead[] = {169};
  ASSERT_EQ(tok->Decode(lead, true).value_or(""), replacement);
  for (const bool stop_on_it : {false, true}) {
    std::vector<std::string> stops = {", w"};
    if (stop_on_it) stops.push_back(replacement);
    auto stream = TextStream::Create(tok.get(), stops);
    ASSERT_TRUE(stream.ok());
    auto delta = stream->Add(ids);
    ASSERT_TRUE(delta.ok()) << delta.status();
    EXPECT_FALSE(delta->stopped);
    EXPECT_EQ(delta->text, "Hello, publish");  // the lone byte held back
    const TextStream::Delta tail = stream->Finish();
    EXPECT_EQ(tail.stopped, stop_on_it);
    EXPECT_EQ(tail.matched_stop, stop_on_it ? replacement : "");
    EXPECT_EQ(delta->text + tail.text,
              stop_on_it ? "Hello, publish" : "Hello, publish" + replacement);
  }
}

}  // namespace
}  // namespace duet::router
