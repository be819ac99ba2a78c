// The router's OpenAI-compatible HTTP API (--http-port) on a real cluster
// (tiny model, the real Qwen3 tokenizer and chat template): every answer is
// checked against the gRPC path's output for the same request, SSE is
// parsed here from the raw bytes of the socket, errors have OpenAI's shape
// and the right status, a client that leaves mid-stream frees its KV, and
// the official `openai` npm SDK (tests/e2e/openai_sdk/) gets the same
// texts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "chat/chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/local_cluster.h"
#include "tests/e2e/openai_http_client.h"
#include "tests/testing/scratch.h"
#include "tests/testing/test_model.h"
#include "tokenizer/tokenizer.h"

namespace duet::testing {
namespace {

using json = nlohmann::ordered_json;
using openai_http::FreePort;
using openai_http::Http;
using openai_http::SseEvents;
using ::testing::HasSubstr;

const std::string kAssets = std::string(DUET_SOURCE_DIR) + "/assets/qwen3";
const std::string kTokenizer = kAssets + "/tokenizer.json";

struct Grpc {
  std::string text;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  v1::FinishReason reason = v1::FINISH_REASON_UNSPECIFIED;
  // With SamplingParams.logprobs.
  std::vector<int32_t> ids;
  std::vector<v1::TokenLogprobs> logprobs;
};

class OpenAiHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    port_ = FreePort();
    ClusterOptions o;
    o.model_dir = SyntheticModelDir("tiny");
    o.router_args = {"--tokenizer", kTokenizer, "--http-port",
                     std::to_string(port_)};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
    ASSERT_THAT(cluster_->router().ready_line(), HasSubstr("OpenAI HTTP API"));
    auto tok = tokenizer::Tokenizer::FromFile(kTokenizer);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = tok->release();
    // The served model is the checkpoint directory's base name.
    model_ = new std::string(std::filesystem::path(o.model_dir).filename());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  static Grpc Generate(v1::GenerateRequest req) {
    req.set_return_text(true);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    auto reader = cluster_->client().Generate(&ctx, req);
    Grpc out;
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
      if (msg.has_chunk()) {
        out.text += msg.chunk().text();
        out.ids.insert(out.ids.end(), msg.chunk().token_ids().begin(),
                       msg.chunk().token_ids().end());
        out.logprobs.insert(out.logprobs.end(), msg.chunk().logprobs().begin(),
                            msg.chunk().logprobs().end());
      }
      if (msg.has_finished()) {
        out.prompt_tokens = msg.finished().usage().prompt_tokens();
        out.completion_tokens = msg.finished().usage().completion_tokens();
        out.reason = msg.finished().finish_reason();
      }
    }
    const grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  static v1::GenerateRequest TextRequest(const std::string& prompt, int max,
                                         float temperature,
                                         std::optional<uint64_t> seed = {}) {
    v1::GenerateRequest req;
    req.set_prompt(prompt);
    req.mutable_sampling()->set_max_tokens(max);
    req.mutable_sampling()->set_temperature(temperature);
    req.mutable_sampling()->set_ignore_eos(true);
    if (seed) req.mutable_sampling()->set_seed(*seed);
    return req;
  }
  static Http::Response Post(const std::string& path, const std::string& body,
                             const std::string& key = "") {
    Http h(port_);
    EXPECT_TRUE(h.Send("POST", path, body, key));
    auto r = h.Read();
    EXPECT_TRUE(r.has_value()) << "no response to " << path;
    return r.value_or(Http::Response{});
  }

  static int port_;
  static std::string* model_;
  static LocalCluster* cluster_;
  static tokenizer::Tokenizer* tokenizer_;
};
int OpenAiHttpTest::port_ = 0;
std::string* OpenAiHttpTest::model_ = nullptr;
LocalCluster* OpenAiHttpTest::cluster_ = nullptr;
tokenizer::Tokenizer* OpenAiHttpTest::tokenizer_ = nullptr;

// `len` bytes of `text` from its second half that are ASCII (so the stop
// string is valid UTF-8) and not all blanks.
std::string PickStop(const std::string& text, size_t len) {
  for (size_t at = text.size() / 2; at + len <= text.size(); ++at) {
    const std::string s = text.substr(at, len);
    bool ok = s.find_first_not_of(' ') != std::string::npos;
    for (char c : s) ok = ok && (c & 0x80) == 0;
    if (ok) return s;
  }
  return "";
}

TEST_F(OpenAiHttpTest, CompletionsMatchTheGrpcPathWholeAndStreamed) {
  const std::string prompt = "The capital of France is";
  const Grpc want = Generate(TextRequest(prompt, 12, 0));
  ASSERT_EQ(want.completion_tokens, 12u);
  const json body = {{"model", *model_},
                     {"prompt", prompt},
                     {"max_tokens", 12},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const Http::Response r = Post("/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.Json();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], *model_);
  EXPECT_TRUE(absl::StartsWith(j["id"].get<std::string>(), "cmpl-"));
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], want.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], want.prompt_tokens);
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_EQ(j["usage"]["total_tokens"], want.prompt_tokens + 12);

  json stream_body = body;
  stream_body["stream"] = true;
  stream_body["stream_options"] = {{"include_usage", true}};
  const Http::Response s = Post("/v1/completions", stream_body.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_THAT(s.head, HasSubstr("Content-Type: text/event-stream"));
  const std::vector<std::string> events = SseEvents(s.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "text_completion");
    EXPECT_TRUE(e["usage"].is_null());
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) {
      finish = e["choices"][0]["finish_reason"];
    }
  }
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(finish, "length");
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["prompt_tokens"], want.prompt_tokens);
  EXPECT_EQ(usage["usage"]["completion_tokens"], 12);
}

TEST_F(OpenAiHttpTest, SeededChoicesReplayAsGrpcRequestsWithSeedPlusIndex) {
  const std::string prompt = "Once upon a time";
  std::vector<Grpc> want;
  for (uint64_t k = 0; k < 3; ++k) {
    want.push_back(Generate(TextRequest(prompt, 10, 0.9f, 42 + k)));
  }
  EXPECT_NE(want[0].text, want[1].text) << "sampling should differ per seed";
  const json body = {
      {"prompt", prompt}, {"max_tokens", 10}, {"temperature", 0.9},
      {"seed", 42},       {"n", 3},           {"ignore_eos", true}};
  const json j = Post("/v1/completions", body.dump()).Json();
  ASSERT_EQ(j["choices"].size(), 3u) << j.dump();
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(j["choices"][k]["index"], k);
    EXPECT_EQ(j["choices"][k]["text"], want[k].text) << k;
  }
  // The prompt counts once; completions add up.
  EXPECT_EQ(j["usage"]["prompt_tokens"], want[0].prompt_tokens);
  EXPECT_EQ(j["usage"]["completion_tokens"], 30);

  json sb = body;
  sb["stream"] = true;
  const Http::Response s = Post("/v1/completions", sb.dump());
  ASSERT_EQ(s.status, 200);
  std::map<int, std::string> texts;
  const auto events = SseEvents(s.body);
  ASSERT_EQ(events.back(), "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_FALSE(e.contains("usage"));  // no include_usage
    texts[e["choices"][0]["index"]] +=
        e["choices"][0]["text"].get<std::string>();
  }
  for (int k = 0; k < 3; ++k) EXPECT_EQ(texts[k], want[k].text) << k;
}

TEST_F(OpenAiHttpTest, StopStringsCutTheTextAndFinishWithStop) {
  const std::string prompt = "Hello, world! 你好";
  const Grpc full = Generate(TextRequest(prompt, 30, 0));
  ASSERT_GT(full.text.size(), 12u);
  // A stop string from the middle of the greedy output.
  const std::string stop = PickStop(full.text, 3);
  ASSERT_FALSE(stop.empty()) << "pick another prompt: " << full.text;
  const std::string want = full.text.substr(0, full.text.find(stop));
  const json body = {{"prompt", prompt},
                     {"max_tokens", 30},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"stop", {stop, "\x01"}}};
  const json j = Post("/v1/completions", body.dump()).Json();
  EXPECT_EQ(j["choices"][0]["text"], want) << j.dump();
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_LT(j["usage"]["completion_tokens"].get<int>(), 30);
  json sb = body;
  sb["stream"] = true;
  std::string text;
  std::string finish;
  for (const std::string& e :
       SseEvents(Post("/v1/completions", sb.dump()).body)) {
    if (e == "[DONE]") continue;
    const json c = json::parse(e);
    text += c["choices"][0]["text"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) {
      finish = c["choices"][0]["finish_reason"];
    }
  }
  EXPECT_EQ(text, want);
  EXPECT_EQ(finish, "stop");
}

TEST_F(OpenAiHttpTest, TokenPromptsAndPromptListsGiveOneChoiceEach) {
  const std::vector<int32_t> ids = {9707, 11, 1879, 0};
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(ids.begin(), ids.end());
  req.mutable_sampling()->set_max_tokens(6);
  req.mutable_sampling()->set_ignore_eos(true);
  const Grpc a = Generate(req);
  const Grpc b = Generate(TextRequest("Good morning", 6, 0));
  const json body = {{"prompt", {json(ids), "Good morning"}},
                     {"max_tokens", 6},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  // A list mixing token ids and text is accepted per element.
  const json j = Post("/v1/completions", body.dump()).Json();
  ASSERT_EQ(j["choices"].size(), 2u) << j.dump();
  EXPECT_EQ(j["choices"][0]["text"], a.text);
  EXPECT_EQ(j["choices"][1]["text"], b.text);
  EXPECT_EQ(j["usage"]["prompt_tokens"], a.prompt_tokens + b.prompt_tokens);
}

TEST_F(OpenAiHttpTest, ChatUsesTheCheckpointTemplateWholeAndStreamed) {
  auto tmpl = chat::ChatTemplate::FromCheckpoint(kAssets);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  const json messages =
      json::array({{{"role", "system"}, {"content", "Be brief."}},
                   {{"role", "user"}, {"content", "What is 2+2?"}}});
  const json kwargs = {{"enable_thinking", false}};
  auto rendered = tmpl->Render(messages, nullptr, true, kwargs);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  auto ids = tokenizer_->Encode(*rendered, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(ids->begin(), ids->end());
  req.mutable_sampling()->set_max_tokens(9);
  req.mutable_sampling()->set_ignore_eos(true);
  const Grpc want = Generate(req);
  ASSERT_EQ(want.prompt_tokens, ids->size());

  const json body = {{"model", *model_},
                     {"messages", messages},
                     {"chat_template_kwargs", kwargs},
                     {"max_completion_tokens", 9},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const json j = Post("/v1/chat/completions", body.dump()).Json();
  EXPECT_EQ(j["object"], "chat.completion") << j.dump();
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], want.prompt_tokens);

  json sb = body;
  sb["stream"] = true;
  sb["stream_options"] = {{"include_usage", true}};
  const auto events = SseEvents(Post("/v1/chat/completions", sb.dump()).body);
  ASSERT_GE(events.size(), 4u);
  const json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 1; i + 2 < events.size(); ++i) {
    const json d = json::parse(events[i])["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
  }
  EXPECT_EQ(text, want.text);
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["total_tokens"],
            want.prompt_tokens + 9);
}

// A token's text as the gateway names it: its own decode, special tokens
// kept, empty past the vocabulary (router/openai_logprobs.h).
std::string TokenText(int32_t id, const tokenizer::Tokenizer& tok) {
  const int32_t one[] = {id};
  auto t = tok.Decode(one, /*skip_special_tokens=*/false);
  return t.ok() ? *t : "";
}

// The per-chunk logprobs objects of a stream, joined field by field.
json JoinStreamLogprobs(const std::vector<std::string>& events) {
  json out;
  for (const std::string& e : events) {
    if (e == "[DONE]") continue;
    const json c = json::parse(e);
    if (c["choices"].empty()) continue;  // usage
    const json& lp = c["choices"][0]["logprobs"];
    if (lp.is_null()) continue;  // role and finish chunks
    for (auto& [k, v] : lp.items()) {
      if (!out.contains(k)) out[k] = json::array();
      for (const json& x : v) out[k].push_back(x);
    }
  }
  return out;
}

float F(const json& v) { return static_cast<float>(v.get<double>()); }

TEST_F(OpenAiHttpTest, CompletionsLogprobsEqualTheGrpcPathsWholeAndStreamed) {
  const std::string prompt = "The capital of France is";
  constexpr int kTop = 4;
  v1::GenerateRequest req = TextRequest(prompt, 10, 0);
  req.mutable_sampling()->set_logprobs(true);
  req.mutable_sampling()->set_top_logprobs(kTop);
  const Grpc want = Generate(req);
  ASSERT_EQ(want.ids.size(), 10u);
  ASSERT_EQ(want.logprobs.size(), 10u);
  const json body = {{"prompt", prompt},
                     {"max_tokens", 10},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"logprobs", kTop}};
  const Http::Response r = Post("/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json lp = r.Json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 10u) << lp.dump();
  int64_t offset = 0;
  for (size_t i = 0; i < 10; ++i) {
    const v1::TokenLogprobs& g = want.logprobs[i];
    const std::string token = TokenText(want.ids[i], *tokenizer_);
    EXPECT_EQ(lp["tokens"][i], token) << i;
    EXPECT_EQ(F(lp["token_logprobs"][i]), g.logprob()) << i;
    // Greedy: the sampled token is the top-1 entry, with the same logprob.
    ASSERT_EQ(g.top_token_ids_size(), kTop);
    EXPECT_EQ(g.top_token_ids(0), want.ids[i]);
    EXPECT_EQ(g.top_logprobs(0), g.logprob());
    // The top ids' texts and logprobs, most likely first (a text two ids
    // share keeps the likelier), then the sampled token if not among them.
    json top = json::object();
    for (int k = 0; k < kTop; ++k) {
      const std::string t = TokenText(g.top_token_ids(k), *tokenizer_);
      if (!top.contains(t)) top[t] = g.top_logprobs(k);
    }
    if (!top.contains(token)) top[token] = g.logprob();
    const json& got = lp["top_logprobs"][i];
    ASSERT_EQ(got.size(), top.size()) << got.dump();
    auto w = top.begin();
    for (auto it = got.begin(); it != got.end(); ++it, ++w) {
      EXPECT_EQ(it.key(), w.key()) << i;
      EXPECT_EQ(F(it.value()), F(w.value())) << i << " " << it.key();
    }
    EXPECT_EQ(lp["text_offset"][i], offset) << i;
    for (unsigned char c : token) offset += (c & 0xC0) != 0x80;
  }
  json sb = body;
  sb["stream"] = true;
  const Http::Response s = Post("/v1/completions", sb.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(JoinStreamLogprobs(SseEvents(s.body)), lp);
  // Without logprobs the field stays null.
  json plain = body;
  plain.erase("logprobs");
  EXPECT_TRUE(Post("/v1/completions", plain.dump())
                  .Json()["choices"][0]["logprobs"]
                  .is_null());
}

TEST_F(OpenAiHttpTest, ChatLogprobsEqualTheGrpcPathsWholeAndStreamed) {
  auto tmpl = chat::ChatTemplate::FromCheckpoint(kAssets);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  const json messages =
      json::array({{{"role", "user"}, {"content", "Name a colour."}}});
  auto rendered = tmpl->Render(messages, nullptr, true, nullptr);
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  auto ids = tokenizer_->Encode(*rendered, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  constexpr int kTop = 3;
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(ids->begin(), ids->end());
  req.mutable_sampling()->set_max_tokens(8);
  req.mutable_sampling()->set_ignore_eos(true);
  req.mutable_sampling()->set_logprobs(true);
  req.mutable_sampling()->set_top_logprobs(kTop);
  const Grpc want = Generate(req);
  ASSERT_EQ(want.logprobs.size(), 8u);
  const json body = {{"messages", messages}, {"max_completion_tokens", 8},
                     {"temperature", 0},     {"ignore_eos", true},
                     {"logprobs", true},     {"top_logprobs", kTop}};
  const Http::Response r = Post("/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json lp = r.Json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["content"].size(), 8u) << lp.dump();
  for (size_t i = 0; i < 8; ++i) {
    const v1::TokenLogprobs& g = want.logprobs[i];
    const json& e = lp["content"][i];
    EXPECT_EQ(e["token"], TokenText(want.ids[i], *tokenizer_)) << i;
    EXPECT_EQ(F(e["logprob"]), g.logprob()) << i;
    std::string bytes;
    bool any = false;
    ASSERT_TRUE(
        tokenizer_->AppendTokenBytes(want.ids[i], false, &any, &bytes).ok() ||
        e["bytes"].empty());
    json want_bytes = json::array();
    for (unsigned char c : bytes) want_bytes.push_back(c);
    EXPECT_EQ(e["bytes"], want_bytes) << i;
    ASSERT_EQ(e["top_logprobs"].size(), static_cast<size_t>(kTop));
    EXPECT_EQ(g.top_token_ids(0), want.ids[i]);  // greedy
    EXPECT_EQ(F(e["top_logprobs"][0]["logprob"]), F(e["logprob"]));
    for (int k = 0; k < kTop; ++k) {
      EXPECT_EQ(e["top_logprobs"][k]["token"],
                TokenText(g.top_token_ids(k), *tokenizer_));
      EXPECT_EQ(F(e["top_logprobs"][k]["logprob"]), g.top_logprobs(k));
    }
  }
  json sb = body;
  sb["stream"] = true;
  const Http::Response s = Post("/v1/chat/completions", sb.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(JoinStreamLogprobs(SseEvents(s.body)), lp);
}

struct BadCase {
  std::string path;
  std::string body;
  int status;
  std::string message;  // a substring
};

TEST_F(OpenAiHttpTest, BadRequestsGetOpenAiErrorsWithTheRightStatus) {
  const std::vector<BadCase> cases = {
      {"/v1/completions", "{\"prompt\": \"hi\",", 400, "not valid JSON"},
      {"/v1/completions", "[1, 2]", 400, "must be a JSON object"},
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": "8"})", 400,
       "'max_tokens' must be an integer, got a string"},
      {"/v1/completions", R"({"prompt": "hi", "temperature": "hot"})", 400,
       "'temperature' must be a number"},
      {"/v1/completions", R"({"prompt": "hi", "stop": 5})", 400,
       "'stop' must be a string or an array of strings"},
      {"/v1/completions", R"({"prompt": "hi", "n": 0})", 400, "'n' must be"},
      {"/v1/completions", R"({"prompt": "hi", "stream": "yes"})", 400,
       "'stream' must be a boolean"},
      {"/v1/completions", R"({"prompt": {"a": 1}})", 400,
       "'prompt' must be a string, an array"},
      {"/v1/completions", R"({"max_tokens": 4})", 400, "'prompt' is required"},
      // Penalties and min_p reach the sampler; the router checks ranges.
      {"/v1/completions", R"({"prompt": "hi", "presence_penalty": 3})", 400,
       "presence_penalty must be in [-2, 2]"},
      {"/v1/completions", R"({"prompt": "hi", "logprobs": 21})", 400,
       "'logprobs' must be in [0, 20]"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true,
           "top_logprobs": 25})",
       400, "'top_logprobs' must be in [0, 20], got 25"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "hi"}],
           "top_logprobs": 2})",
       400, "'top_logprobs' needs 'logprobs': true"},
      {"/v1/chat/completions", R"({"messages": "hi"})", 400,
       "'messages' must be an array, got a string"},
      {"/v1/chat/completions", R"({"messages": [{"content": "hi"}]})", 400,
       "'messages[0].role' must be a string"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "hi"}], "min_p": 1.5})",
       400, "min_p must be in [0, 1]"},
      {"/v1/completions", R"({"prompt": "hi", "model": "gpt-4"})", 404,
       "The model 'gpt-4' does not exist"},
      {"/v1/nothing", "{}", 404, "no such endpoint"},
      // The router's own validation, through the gateway.
      {"/v1/completions", R"({"prompt": "hi", "max_tokens": 100000})", 400,
       "exceeds the model context"},
  };
  for (const BadCase& c : cases) {
    const Http::Response r = Post(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
    const json j = r.Json();
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_THAT(j["error"]["message"].get<std::string>(), HasSubstr(c.message))
        << c.body;
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("param") && j["error"].contains("code"));
  }
  const json e = Post("/v1/completions", R"({"prompt": "hi", "model": "x"})")
                     .Json()["error"];
  EXPECT_EQ(e["code"], "model_not_found");
  EXPECT_EQ(e["param"], "model");
  EXPECT_EQ(Post("/v1/completions", R"({"prompt": "hi", "top_p": "1"})")
                .Json()["error"]["param"],
            "top_p");
  // Penalties and min_p are taken (their effect is checked on the gRPC
  // path against the engine: tests/e2e/sampling_test.cc).
  const Http::Response penalized =
      Post("/v1/completions",
           R"({"prompt": "hi", "max_tokens": 4, "presence_penalty": 1.5,
          "frequency_penalty": 0.5, "repetition_penalty": 1.3,
          "min_p": 0.1, "seed": 3})");
  EXPECT_EQ(penalized.status, 200) << penalized.body;
  // Neutral values are accepted too.
  const Http::Response neutral =
      Post("/v1/completions",
           R"({"prompt": "hi", "max_tokens": 2, "presence_penalty": 0,
          "frequency_penalty": 0.0, "repetition_penalty": 1, "min_p": 0,
          "logprobs": null, "user": "u1", "unknown_field": [1]})");
  EXPECT_EQ(neutral.status, 200) << neutral.body;
  // Wrong method, oversized body.
  Http h(port_);
  ASSERT_TRUE(h.Send("GET", "/v1/completions", ""));
  auto r = h.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 405);
  EXPECT_THAT(r->head, HasSubstr("Allow: POST"));
  const std::string big = R"({"prompt": ")" + std::string(9 << 20, 'a') + "\"}";
  const Http::Response too_big = Post("/v1/completions", big);
  EXPECT_EQ(too_big.status, 413);
}

TEST_F(OpenAiHttpTest, ModelsHealthTokenizeDetokenize) {
  Http h(port_);
  ASSERT_TRUE(h.Send("GET", "/v1/models", ""));
  const json models = h.Read()->Json();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], *model_);
  ASSERT_TRUE(h.Send("GET", "/health", ""));  // same connection: keep-alive
  auto health = h.Read();
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->Json()["model"], *model_);
  const json t = Post("/tokenize", R"({"prompt": "Hello, world"})").Json();
  auto ids = tokenizer_->Encode("Hello, world", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(t["tokens"], json(*ids));
  EXPECT_EQ(t["count"], ids->size());
  const json d = Post("/detokenize", json{{"tokens", *ids}}.dump()).Json();
  EXPECT_EQ(d["prompt"], "Hello, world");
  const json chat =
      Post("/tokenize", R"({"messages": [{"role": "user", "content": "hi"}]})")
          .Json();
  EXPECT_GT(chat["count"].get<int>(), 3) << chat.dump();
}

// usage.prompt_tokens_details.cached_tokens (vLLM's: only when non-zero)
// carries the prefill node's prefix-cache hits, whole and streamed.
TEST_F(OpenAiHttpTest, RepeatedPromptReportsCachedTokensInUsage) {
  std::vector<int32_t> ids;  // 200 tokens no other test sends
  for (int k = 0; k < 200; ++k) ids.push_back((k * 17 + 3) % 5000 + 1000);
  json body = {{"prompt", ids}, {"max_tokens", 4}, {"ignore_eos", true}};
  const json first = Post("/v1/completions", body.dump()).Json();
  EXPECT_EQ(first["usage"]["prompt_tokens"], 200) << first.dump();
  EXPECT_FALSE(first["usage"].contains("prompt_tokens_details"));
  const json second = Post("/v1/completions", body.dump()).Json();
  const json cached = second["usage"]["prompt_tokens_details"]["cached_tokens"];
  ASSERT_TRUE(cached.is_number_integer()) << second.dump();
  EXPECT_GT(cached.get<int>(), 0);
  EXPECT_LT(cached.get<int>(), 200);
  EXPECT_EQ(cached.get<int>() % 16, 0) << "whole KV blocks";
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const std::vector<std::string> events =
      SseEvents(Post("/v1/completions", body.dump()).body);
  ASSERT_GE(events.size(), 2u);
  const json usage = json::parse(events[events.size() - 2])["usage"];
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], cached);
}

TEST_F(OpenAiHttpTest, ClientLeavingMidStreamFreesItsBlocks) {
  // The tiny model's greedy run on this prompt is long, then ends by
  // itself (with a token the tokenizer lacks: the tiny model's vocabulary
  // is larger). Its whole length, timed uncancelled, is the baseline.
  const json body = {{"prompt", "The"},
                     {"max_tokens", 3500},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const absl::Time start = absl::Now();
  Post("/v1/completions", body.dump());
  const absl::Duration whole = absl::Now() - start;
  if (whole < absl::Milliseconds(600)) {
    GTEST_SKIP() << "the baseline run took only " << whole
                 << ": too short to tell a cancellation from its end";
  }
  json sb = body;
  sb["stream"] = true;
  Http h(port_);
  ASSERT_TRUE(h.Send("POST", "/v1/completions", sb.dump()));
  // A few events in (raw bytes: each event sits in its own chunk of the
  // chunked body), while the request holds KV on the decode node, the
  // client goes.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  auto events = [&h] {
    size_t n = 0;
    for (size_t at = h.buffered().find("data: "); at != std::string::npos;
         at = h.buffered().find("data: ", at + 1)) {
      ++n;
    }
    return n;
  };
  const absl::Time sent = absl::Now();
  while (events() < 3) {
    ASSERT_TRUE(absl::Now() < deadline && h.Fill(absl::Seconds(1)))
        << h.buffered();
  }
  auto stats = cluster_->Stats(cluster_->decode(0));
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LT(stats->load().free_kv_blocks(), stats->load().total_kv_blocks());
  h.Close();
  // Freed well before the uncancelled run would have ended.
  const absl::Duration left = whole - (absl::Now() - sent);
  const absl::Status freed =
      cluster_->WaitAllBlocksFree(std::max(left / 2, absl::Milliseconds(200)));
  EXPECT_TRUE(freed.ok()) << freed << " (uncancelled run: " << whole << ")";
  EXPECT_TRUE(cluster_->WaitAllBlocksFree(absl::Seconds(10)).ok());
  const json again =
      Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 2})").Json();
  EXPECT_EQ(again["usage"]["completion_tokens"], 2);
}

TEST_F(OpenAiHttpTest, OfficialOpenAiSdkGetsTheGrpcTexts) {
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "node is not installed: the openai SDK check needs it";
  }
  const std::string sdk_dir =
      std::string(DUET_SOURCE_DIR) + "/tests/e2e/openai_sdk";
  std::ifstream probe(sdk_dir + "/node_modules/openai/package.json");
  ASSERT_TRUE(probe.good()) << "the openai npm package is missing: run "
                               "scripts/fetch_npm_test_deps.sh";
  // What the script must reproduce, from the gRPC path.
  const std::string prompt = "The quick brown fox";
  v1::GenerateRequest greedy_req = TextRequest(prompt, 10, 0);
  greedy_req.mutable_sampling()->set_logprobs(true);
  const Grpc greedy = Generate(greedy_req);
  json want;
  want["completion"] = greedy.text;
  // [token text, logprob] per token.
  want["completion_logprobs"] = json::array();
  for (size_t i = 0; i < greedy.ids.size(); ++i) {
    want["completion_logprobs"].push_back(
        {TokenText(greedy.ids[i], *tokenizer_),
         static_cast<double>(greedy.logprobs.at(i).logprob())});
  }
  want["prompt_tokens"] = greedy.prompt_tokens;
  for (uint64_t k = 0; k < 2; ++k) {
    want["seeded"].push_back(
        Generate(TextRequest(prompt, 8, 0.9f, 5 + k)).text);
  }
  const std::string stop = PickStop(greedy.text, 2);
  ASSERT_FALSE(stop.empty()) << "pick another prompt: " << greedy.text;
  want["stop"] = stop;
  want["stopped"] = greedy.text.substr(0, greedy.text.find(stop));
  auto tmpl = chat::ChatTemplate::FromCheckpoint(kAssets);
  ASSERT_TRUE(tmpl.ok());
  const json messages = json::array({{{"role", "user"}, {"content", "Hi!"}}});
  auto rendered = tmpl->Render(messages, nullptr, true, nullptr);
  ASSERT_TRUE(rendered.ok());
  auto ids = tokenizer_->Encode(*rendered, false);
  ASSERT_TRUE(ids.ok());
  v1::GenerateRequest req;
  req.mutable_prompt_token_ids()->Add(ids->begin(), ids->end());
  req.mutable_sampling()->set_max_tokens(8);
  req.mutable_sampling()->set_ignore_eos(true);
  req.mutable_sampling()->set_logprobs(true);
  req.mutable_sampling()->set_top_logprobs(2);
  const Grpc chat = Generate(req);
  want["chat"] = chat.text;
  // [token text, logprob, [top-2 texts]] per token.
  want["chat_logprobs"] = json::array();
  for (size_t i = 0; i < chat.ids.size(); ++i) {
    const v1::TokenLogprobs& lp = chat.logprobs.at(i);
    json top = json::array();
    for (int32_t id : lp.top_token_ids())
      top.push_back(TokenText(id, *tokenizer_));
    want["chat_logprobs"].push_back({TokenText(chat.ids[i], *tokenizer_),
                                     static_cast<double>(lp.logprob()), top});
  }
  want["chat_prompt_tokens"] = chat.prompt_tokens;
  want["messages"] = messages;
  want["prompt"] = prompt;
  want["model"] = *model_;
  const std::string want_path = absl::StrCat(
      ::duet::testing::ScratchDir(), "/openai_sdk_want_", getpid(), ".json");
  std::ofstream(want_path) << want.dump();
  const std::string cmd = absl::StrCat(
      "cd ", sdk_dir, " && timeout 60 node check.mjs http://127.0.0.1:", port_,
      "/v1 ", want_path, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) output.append(buf, n);
  const int rc = pclose(p);
  EXPECT_EQ(rc, 0) << output;
  EXPECT_THAT(output, HasSubstr("openai sdk: all checks passed")) << output;
}

TEST(OpenAiHttpAuthTest, MissingOrWrongKeysAre401) {
  const std::string key_file =
      absl::StrCat(::duet::testing::ScratchDir(), "/openai_keys_", getpid());
  const std::string key = "sk-test-0123456789abcdef";
  std::ofstream(key_file) << key << "\n";
  const int port = FreePort();
  ClusterOptions o;
  o.model_dir = SyntheticModelDir("tiny");
  o.router_args = {"--tokenizer",        kTokenizer,       "--http-port",
                   std::to_string(port), "--api-key-file", key_file};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string body = R"({"prompt": "hi", "max_tokens": 2})";
  for (const std::string& sent :
       {std::string(), std::string("sk-wrong-key-000000000")}) {
    for (const char* path : {"/v1/completions", "/v1/models"}) {
      Http h(port);
      ASSERT_TRUE(h.Send(absl::EndsWith(path, "models") ? "GET" : "POST", path,
                         absl::EndsWith(path, "models") ? "" : body, sent));
      auto r = h.Read();
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->status, 401) << path << " " << r->body;
      EXPECT_EQ(r->Json()["error"]["code"], "invalid_api_key") << r->body;
    }
  }
  Http h(port);
  ASSERT_TRUE(h.Send("POST", "/v1/completions", body, key));
  auto r = h.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200) << r->body;
  ASSERT_TRUE(h.Send("GET", "/v1/models", "", key));
  EXPECT_EQ(h.Read()->status, 200);
}

}  // namespace
}  // namespace duet::testing
