// Renders every chat-template golden (scripts/make_chat_goldens.py, files in
// tests/golden/chat/) byte for byte, and checks ChatTemplate's loading rules.
//
// Llama-3.1's template is under the Llama licence and not committed (its
// rendered goldens are): ChatTemplateGolden.Llama31 runs when
// $DUET_LLAMA31_DIR (default assets/llama3_1, git-ignored) holds it.
#include "chat/chat_template.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace duet::chat {
namespace {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

constexpr int kMaxReported = 8;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path SourcePath(const std::string& rel) {
  fs::path p(rel);
  return p.is_absolute() ? p : fs::path(DUET_SOURCE_DIR) / p;
}

// Where two renderings first differ, with context, for failure messages.
std::string Diff(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  size_t from = i > 40 ? i - 40 : 0;
  return absl::StrCat("first difference at byte ", i,
                      "\n  want: ", ordered_json(want.substr(from, 120)).dump(),
                      "\n  got:  ", ordered_json(got.substr(from, 120)).dump());
}

// SHA-256 (FIPS 180-4) of `data` as lowercase hex: the goldens name the
// template they were made from by its hash.
std::string Sha256Hex(const std::string& data) {
  static constexpr uint32_t kK[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
      0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
      0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
      0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
      0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i)
    msg.push_back(static_cast<char>(bits >> (i * 8)));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t off = 0; off < msg.size(); off += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = 0;
      for (int j = 0; j < 4; ++j) {
        w[i] = (w[i] << 8) | static_cast<uint8_t>(msg[off + 4 * i + j]);
      }
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a[8];
    std::copy(h, h + 8, a);
    for (int i = 0; i < 64; ++i) {
      uint32_t s1 = rotr(a[4], 6) ^ rotr(a[4], 11) ^ rotr(a[4], 25);
      uint32_t ch = (a[4] & a[5]) ^ (~a[4] & a[6]);
      uint32_t t1 = a[7] + s1 + ch + kK[i] + w[i];
      uint32_t s0 = rotr(a[0], 2) ^ rotr(a[0], 13) ^ rotr(a[0], 22);
      uint32_t maj = (a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]);
      std::copy_backward(a, a + 7, a + 8);
      a[4] += t1;
      a[0] = t1 + s0 + maj;
    }
    for (int i = 0; i < 8; ++i) h[i] += a[i];
  }
  std::string hex;
  for (uint32_t v : h) absl::StrAppend(&hex, absl::Hex(v, absl::kZeroPad8));
  return hex;
}

// Renders every case of `golden_path` with `tmpl`.
void CheckGolden(const fs::path& golden_path, const ChatTemplate& tmpl) {
  ordered_json golden = ordered_json::parse(ReadFile(golden_path));
  for (const auto& [name, text] : golden["special_tokens"].items()) {
    if (name == "additional_special_tokens") continue;
    EXPECT_EQ(tmpl.special_tokens().Get(name), text.get<std::string>()) << name;
  }
  int failures = 0, rendered = 0, raised = 0;
  for (const ordered_json& c : golden["cases"]) {
    auto got = tmpl.Render(c["messages"], c["tools"],
                           c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    const std::string name = c["name"].get<std::string>();
    if (c.contains("error")) {
      ++raised;
      const std::string want = c["error"].get<std::string>();
      bool ok = !got.ok() &&
                got.status().code() == absl::StatusCode::kInvalidArgument &&
                got.status().message().find(want) != std::string::npos;
      if (!ok && ++failures <= kMaxReported) {
        ADD_FAILURE() << name << ": expected the template to raise \"" << want
                      << "\", got "
                      << (got.ok() ? *got : got.status().ToString());
      }
      continue;
    }
    ++rendered;
    const std::string want = c["expected"].get<std::string>();
    if (!got.ok()) {
      if (++failures <= kMaxReported) {
        ADD_FAILURE() << name << ": " << got.status();
      }
    } else if (*got != want && ++failures <= kMaxReported) {
      ADD_FAILURE() << name << ": " << Diff(want, *got);
    }
  }
  EXPECT_EQ(failures, 0) << failures << " of " << golden["cases"].size()
                         << " cases differ (engine "
                         << golden["engine"].get<std::string>() << ")";
  EXPECT_GE(rendered + raised, 100) << "too few golden cases";
  std::cout << golden_path.filename().string() << ": " << rendered
            << " rendered, " << raised << " raised, made by "
            << golden["engine"].get<std::string>() << " "
            << golden["engine_version"].get<std::string>() << "\n";
}

// Renders every case of `golden_path` with the template in `template_dir`.
void CheckGolden(const fs::path& golden_path, const fs::path& template_dir) {
  auto tmpl = ChatTemplate::FromCheckpoint(template_dir.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  CheckGolden(golden_path, *tmpl);
}

TEST(ChatTemplateGolden, Qwen3) {
  CheckGolden(SourcePath("tests/golden/chat/qwen3.json"),
              SourcePath("assets/qwen3"));
}

TEST(ChatTemplateGolden, Llama3) {
  if (!fs::exists(SourcePath("assets/llama3/tokenizer_config.json"))) {
    GTEST_SKIP() << "assets/llama3 is absent (Llama licence, not committed): "
                    "run scripts/fetch_tokenizer.sh";
  }
  CheckGolden(SourcePath("tests/golden/chat/llama3.json"),
              SourcePath("assets/llama3"));
}

TEST(ChatTemplateGolden, Llama31) {
  const char* env = std::getenv("DUET_LLAMA31_DIR");
  fs::path dir = env != nullptr ? fs::path(env) : SourcePath("assets/llama3_1");
  if (!fs::exists(dir / "chat_template.jinja") &&
      !fs::exists(dir / "tokenizer_config.json")) {
    GTEST_SKIP() << "no Llama-3.1 chat template in " << dir
                 << " (Llama 3.1 Community License, not committed; CI has "
                    "none): save the \"chat_template\" string of "
                    "meta-llama/Llama-3.1-8B-Instruct's tokenizer_config.json "
                    "(or its chat_template.jinja) as "
                 << (dir / "chat_template.jinja")
                 << ", or point $DUET_LLAMA31_DIR at the checkpoint "
                    "(assets/README.md)";
  }
  const fs::path golden_path = SourcePath("tests/golden/chat/llama3_1.json");
  const ordered_json golden = ordered_json::parse(ReadFile(golden_path));
  auto tmpl = ChatTemplate::FromCheckpoint(dir.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  // The goldens fit one revision of the template only; another (a later
  // revision, Llama-3.2's) would fail every case without saying why.
  ASSERT_EQ(Sha256Hex(tmpl->source()),
            golden["template_sha256"].get<std::string>())
      << "the chat template in " << dir
      << " is not the one tests/golden/chat/llama3_1.json was made from "
         "(meta-llama/Llama-3.1-8B-Instruct's, as llama.cpp's "
         "models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja)";
  if (!fs::exists(dir / "tokenizer_config.json")) {
    // Only the template is there: take the tokenizer's special tokens (the
    // template uses bos_token) from the goldens, which recorded them.
    SpecialTokens special;
    for (const auto& [name, text] : golden["special_tokens"].items()) {
      if (text.is_string()) special.tokens.emplace_back(name, text);
    }
    tmpl = ChatTemplate::FromSource(tmpl->source(), std::move(special));
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  }
  CheckGolden(golden_path, *tmpl);
}

// --- Loading rules ---

class CheckpointDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat(
               "duet_chat_test_", ::getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  absl::StatusOr<std::string> Render(const ordered_json& messages) {
    auto t = ChatTemplate::FromCheckpoint(dir_.string());
    if (!t.ok()) return t.status();
    return t->Render(messages, nullptr, false, nullptr);
  }
  fs::path dir_;
};

const ordered_json kHello =
    ordered_json::parse(R"([{"role": "user", "content": "hi"}])");

TEST_F(CheckpointDir, StringTemplateAndAddedTokenDict) {
  Write("tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
    "eos_token": "</s>", "pad_token": null,
    "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ pad_token is defined }}"})");
  EXPECT_EQ(Render(kHello).value(), "<s>hi</s>False");
}

TEST_F(CheckpointDir, JinjaFileWinsOverConfig) {
  Write("tokenizer_config.json", R"({"chat_template": "config"})");
  Write("chat_template.jinja", "file {{ messages|length }}\n");
  EXPECT_EQ(Render(kHello).value(), "file 1");  // trailing newline dropped
}

TEST_F(CheckpointDir, NamedTemplatesPickDefault) {
  Write("tokenizer_config.json", R"({"chat_template": [
    {"name": "tool_use", "template": "tools"},
    {"name": "default", "template": "default {{ messages[0].role }}"}]})");
  EXPECT_EQ(Render(kHello).value(), "default user");
  Write("tokenizer_config.json",
        R"({"chat_template": [{"name": "rag", "template": "x"}]})");
  auto r = Render(kHello);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("rag"), std::string::npos);
}

TEST_F(CheckpointDir, MissingTemplateIsNotFound) {
  Write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  EXPECT_EQ(Render(kHello).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointDir, UnsupportedConstructFailsAtLoadNamingIt) {
  Write("chat_template.jinja",
        "line one\n{% for m in messages %}\n"
        "{{ m.content | wordwrap(5) }}{% endfor %}");
  auto r = Render(kHello);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("line 3"), std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("'wordwrap'"), std::string::npos);
}

TEST(ChatTemplate, KwargsAndTools) {
  auto t = ChatTemplate::FromSource(
      "{{ tools is none }}|{{ tools|length if tools is not none }}|"
      "{{ enable_thinking }}|{{ documents }}|{{ add_generation_prompt }}|"
      "{{ bos_token }}",
      SpecialTokens{{{"bos_token", "<s>"}}, {}});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Render(kHello, nullptr, true, nullptr).value(),
            "True|||None|True|<s>");
  EXPECT_EQ(t->Render(kHello, ordered_json::array({1, 2}), false,
                      {{"enable_thinking", false}, {"bos_token", "B"}})
                .value(),
            "False|2|False|None|False|B");
  EXPECT_FALSE(t->Render(kHello, nullptr, false, {{"messages", 1}}).ok());
  EXPECT_FALSE(t->Render(ordered_json::object(), nullptr, false, nullptr).ok());
}

TEST(ChatTemplate, RaiseExceptionIsInvalidArgumentWithTheMessage) {
  auto t = ChatTemplate::FromSource(
      "{% if messages[0].role != 'system' %}"
      "{{ raise_exception('System first, please: ' ~ messages[0].role) }}"
      "{% endif %}ok",
      {});
  ASSERT_TRUE(t.ok());
  auto r = t->Render(kHello, nullptr, false, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("System first, please: user"),
            std::string::npos)
      << r.status();
}

TEST(ChatTemplate, ToolSchemaKeyOrderIsPreserved) {
  auto t = ChatTemplate::FromSource("{{ tools[0] | tojson }}", {});
  ASSERT_TRUE(t.ok());
  ordered_json tools = ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "b": 1, "a": 2}}])");
  EXPECT_EQ(
      t->Render(kHello, tools, false, nullptr).value(),
      R"({"type": "function", "function": {"name": "f", "b": 1, "a": 2}})");
}

}  // namespace
}  // namespace duet::chat
