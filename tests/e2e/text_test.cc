// Text in, text out through a real cluster: the router tokenizes a text
// prompt with the real Qwen3 tokenizer.json, streams valid UTF-8 deltas that
// concatenate to the one-shot decode of the generated tokens, and ends on a
// stop string without returning it.
#include <grpcpp/grpcpp.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/testing/test_model.h"
#include "tokenizer/tokenizer.h"

namespace duet::testing {
namespace {

using ::testing::HasSubstr;

const std::string kTokenizer =
    std::string(DUET_SOURCE_DIR) + "/assets/qwen3/tokenizer.json";

struct TextOutcome {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::vector<std::string> deltas;
  v1::GenerationFinished finished;
};

TextOutcome GenerateText(v1::Duet::Stub& stub, const std::string& prompt,
                         int max_tokens, const std::string& stop = "") {
  v1::GenerateRequest req;
  req.set_prompt(prompt);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  if (!stop.empty()) req.mutable_sampling()->add_stop(stop);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub.Generate(&ctx, req);
  TextOutcome out;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    if (msg.has_chunk()) {
      out.tokens.insert(out.tokens.end(), msg.chunk().token_ids().begin(),
                        msg.chunk().token_ids().end());
      out.deltas.push_back(msg.chunk().text());
    } else if (msg.has_finished()) {
      out.finished = msg.finished();
    }
  }
  out.status = reader->Finish();
  return out;
}

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                                          : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

TEST(TextTest, TextPromptStreamsValidUtf8AndStopsOnAStopString) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--tokenizer", kTokenizer};
  // Released blocks wait out the quarantine (a prefill node's late write)
  // before they are free: short here, so the leak check below is quick.
  o.decode_args = {"--release-quarantine-ms", "300"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto tok = tokenizer::Tokenizer::FromFile(kTokenizer);
  ASSERT_TRUE(tok.ok()) << tok.status();

  const std::string prompt = "Hello, world! 你好，世界。🙂 Let's go.";
  const TextOutcome full = GenerateText((*cluster)->client(), prompt, 40);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  ASSERT_EQ(full.tokens.size(), 40u);
  auto prompt_ids = (*tok)->Encode(prompt, /*add_special_tokens=*/true);
  ASSERT_TRUE(prompt_ids.ok());
  EXPECT_EQ(full.finished.usage().prompt_tokens(), prompt_ids->size());
  std::string joined;
  for (const std::string& d : full.deltas) {
    EXPECT_TRUE(ValidUtf8(d)) << "delta is not valid UTF-8";
    joined += d;
  }
  auto decoded = (*tok)->Decode(full.tokens, /*skip_special_tokens=*/true);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(joined, *decoded);
  ASSERT_GT(joined.size(), 12u);

  // A stop string taken from the middle of that (deterministic, greedy)
  // output: generation ends there and the stop string is not returned.
  const std::string stop = joined.substr(joined.size() / 2, 4);
  ASSERT_TRUE(ValidUtf8(stop)) << "pick a different slice";
  const TextOutcome stopped =
      GenerateText((*cluster)->client(), prompt, 40, stop);
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finished.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(stopped.finished.matched_stop(), stop);
  std::string stopped_text;
  for (const std::string& d : stopped.deltas) stopped_text += d;
  EXPECT_EQ(stopped_text, joined.substr(0, joined.find(stop)));
  EXPECT_LT(stopped.tokens.size(), full.tokens.size());
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree(absl::Seconds(5)).ok());

  // A stop string in token 1's text: the router ends the request before it
  // opens the decode node's stream, and releases the reservation there
  // (well before its 60 s TTL; free after the quarantine).
  ASSERT_FALSE(full.deltas.empty());
  ASSERT_FALSE(full.deltas[0].empty()) << "token 1 decodes to no text";
  size_t len = 1;
  while (len < full.deltas[0].size() &&
         (static_cast<unsigned char>(full.deltas[0][len]) >> 6) == 2) {
    ++len;
  }
  const std::string first_stop = full.deltas[0].substr(0, len);
  const TextOutcome at_first =
      GenerateText((*cluster)->client(), prompt, 40, first_stop);
  ASSERT_TRUE(at_first.status.ok()) << at_first.status.error_message();
  EXPECT_EQ(at_first.finished.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(at_first.finished.matched_stop(), first_stop);
  EXPECT_LE(at_first.tokens.size(), 1u);
  for (const std::string& d : at_first.deltas) EXPECT_EQ(d, "");
  const absl::Status freed = (*cluster)->WaitAllBlocksFree(absl::Seconds(5));
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(TextTest, TextNeedsARouterTokenizer) {
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const TextOutcome out = GenerateText((*cluster)->client(), "hi", 4);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(out.status.error_message(), HasSubstr("--tokenizer"));
}

}  // namespace
}  // namespace duet::testing
