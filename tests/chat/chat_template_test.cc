// Renders every chat-template golden (scripts/make_chat_goldens.py, files in
// tests/golden/chat/) byte for byte, and checks ChatTemplate's loading rules.
//
// Llama-3.1's template is under the Llama licence and not committed, nor are
// its goldens: Llama31Golden runs when $DUET_LLAMA31_DIR (default
// assets/llama3/llama3_1, git-ignored) holds the template and llama3_1.json.
#include "chat/chat_template.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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

// Renders every case of `golden` with the template in `template_dir`.
void CheckGolden(const fs::path& golden_path, const fs::path& template_dir) {
  ordered_json golden = ordered_json::parse(ReadFile(golden_path));
  auto tmpl = ChatTemplate::FromCheckpoint(template_dir.string());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  for (const auto& [name, text] : golden["special_tokens"].items()) {
    if (name == "additional_special_tokens") continue;
    EXPECT_EQ(tmpl->special_tokens().Get(name), text.get<std::string>())
        << name;
  }
  int failures = 0, rendered = 0, raised = 0;
  for (const ordered_json& c : golden["cases"]) {
    auto got =
        tmpl->Render(c["messages"], c["tools"],
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
  fs::path dir =
      env != nullptr ? fs::path(env) : SourcePath("assets/llama3/llama3_1");
  if (!fs::exists(dir / "llama3_1.json")) {
    GTEST_SKIP() << "no Llama-3.1 template goldens in " << dir
                 << " (Llama licence, not committed): put the model's "
                    "tokenizer_config.json there and run "
                    "scripts/make_chat_goldens.py --template llama3_1=<dir> "
                    "--out-dir <dir>";
  }
  CheckGolden(dir / "llama3_1.json", dir);
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
