// The OpenAI request parser (router/openai_request.cc): the logprobs
// fields of both endpoints, mapped onto SamplingParams, and their 400s.
#include "router/openai_request.h"

#include <memory>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "chat/chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tokenizer/tokenizer.h"

namespace duet::router::openai {
namespace {

using ::testing::HasSubstr;

class OpenAiRequestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = absl::StrCat(DUET_SOURCE_DIR, "/assets/qwen3");
    auto tok = tokenizer::Tokenizer::FromFile(dir + "/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    auto tmpl = chat::ChatTemplate::FromCheckpoint(dir);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    template_ = new chat::ChatTemplate(*std::move(tmpl));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete template_;
  }
  static ParseContext Context() {
    ParseContext ctx;
    ctx.tokenizer = tokenizer_;
    ctx.chat_template = template_;
    ctx.model = {"tiny", 4096};
    return ctx;
  }
  // The plan of a completions body ("prompt" added) or a chat body
  // ("messages" added) with `fields`.
  static std::variant<Plan, ApiError> Parse(bool chat,
                                            const std::string& fields) {
    const std::string body =
        chat
            ? absl::StrCat(R"({"messages": [{"role": "user", "content": )",
                           R"("hi"}])", fields.empty() ? "" : ", ", fields, "}")
            : absl::StrCat(R"({"prompt": "hi")", fields.empty() ? "" : ", ",
                           fields, "}");
    return ParseGenerate(body, chat, Context());
  }
  static Plan Ok(bool chat, const std::string& fields) {
    auto p = Parse(chat, fields);
    if (auto* e = std::get_if<ApiError>(&p)) {
      ADD_FAILURE() << fields << " -> " << e->message;
      return Plan{};
    }
    return std::get<Plan>(std::move(p));
  }
  static ApiError Err(bool chat, const std::string& fields) {
    auto p = Parse(chat, fields);
    if (auto* e = std::get_if<ApiError>(&p)) return *e;
    ADD_FAILURE() << fields << " was accepted";
    return ApiError{};
  }

  static tokenizer::Tokenizer* tokenizer_;
  static chat::ChatTemplate* template_;
};
tokenizer::Tokenizer* OpenAiRequestTest::tokenizer_ = nullptr;
chat::ChatTemplate* OpenAiRequestTest::template_ = nullptr;

TEST_F(OpenAiRequestTest, LogprobsOffByDefaultAndForNeutralValues) {
  for (const std::string& f :
       {std::string(""), std::string(R"("logprobs": null)"),
        std::string(R"("top_logprobs": 0)")}) {
    const Plan p = Ok(/*chat=*/false, f);
    EXPECT_FALSE(p.logprobs) << f;
    ASSERT_EQ(p.prompts.size(), 1u);
    EXPECT_FALSE(p.prompts[0].sampling().logprobs()) << f;
    EXPECT_EQ(p.prompts[0].sampling().top_logprobs(), 0) << f;
  }
  for (const std::string& f :
       {std::string(""), std::string(R"("logprobs": false)"),
        std::string(R"("logprobs": false, "top_logprobs": 0)"),
        std::string(R"("top_logprobs": null)")}) {
    const Plan p = Ok(/*chat=*/true, f);
    EXPECT_FALSE(p.logprobs) << f;
    EXPECT_FALSE(p.prompts[0].sampling().logprobs()) << f;
  }
}

TEST_F(OpenAiRequestTest, CompletionsLogprobsIsTheNumberOfAlternatives) {
  for (int n : {0, 1, 5, 20}) {
    const Plan p = Ok(false, absl::StrCat(R"("logprobs": )", n, R"(, "n": 2)"));
    EXPECT_TRUE(p.logprobs);
    EXPECT_EQ(p.top_logprobs, n);
    const v1::SamplingParams& s = p.prompts[0].sampling();
    EXPECT_TRUE(s.logprobs());
    EXPECT_EQ(s.top_logprobs(), n);
  }
}

TEST_F(OpenAiRequestTest, ChatLogprobsIsABooleanWithTopLogprobs) {
  Plan p = Ok(true, R"("logprobs": true)");
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 0);
  EXPECT_TRUE(p.prompts[0].sampling().logprobs());
  p = Ok(true, R"("logprobs": true, "top_logprobs": 20)");
  EXPECT_EQ(p.top_logprobs, 20);
  EXPECT_EQ(p.prompts[0].sampling().top_logprobs(), 20);
  EXPECT_TRUE(p.chat);
}

TEST_F(OpenAiRequestTest, OutOfRangeLogprobsAre400NamingFieldAndRange) {
  struct Case {
    bool chat;
    std::string fields;
    std::string param;
    std::string message;
  };
  const Case cases[] = {
      {false, R"("logprobs": 21)", "logprobs",
       "'logprobs' must be in [0, 20] (alternatives per token), got 21"},
      {false, R"("logprobs": -1)", "logprobs", "must be in [0, 20]"},
      {false, R"("logprobs": true)", "logprobs",
       "'logprobs' must be an integer in [0, 20] or null, got a boolean"},
      {false, R"("logprobs": 1.5)", "logprobs", "an integer in [0, 20]"},
      {false, R"("top_logprobs": 3)", "top_logprobs",
       "send 'logprobs': N instead"},
      {true, R"("logprobs": 3)", "logprobs",
       "'logprobs' must be a boolean or null, got an integer"},
      {true, R"("logprobs": true, "top_logprobs": 21)", "top_logprobs",
       "'top_logprobs' must be in [0, 20], got 21"},
      {true, R"("logprobs": true, "top_logprobs": -2)", "top_logprobs",
       "must be in [0, 20], got -2"},
      {true, R"("logprobs": true, "top_logprobs": "5")", "top_logprobs",
       "an integer in [0, 20] or null, got a string"},
      {true, R"("top_logprobs": 2)", "top_logprobs",
       "'top_logprobs' needs 'logprobs': true"},
      {true, R"("logprobs": false, "top_logprobs": 2)", "top_logprobs",
       "needs 'logprobs': true"},
  };
  for (const Case& c : cases) {
    const ApiError e = Err(c.chat, c.fields);
    EXPECT_EQ(e.http_status, 400) << c.fields;
    EXPECT_EQ(e.type, "invalid_request_error") << c.fields;
    EXPECT_EQ(e.param, c.param) << c.fields;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.fields;
    // OpenAI's error shape.
    const auto body = nlohmann::json::parse(ErrorBody(e));
    EXPECT_EQ(body["error"]["param"], c.param);
    EXPECT_TRUE(body["error"]["code"].is_null());
  }
}

}  // namespace
}  // namespace duet::router::openai
