#include "tests/tokenizer/test_util.h"

#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tokenizer/utf8.h"

namespace duet::tokenizer::testing {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    const bool failed = n < 0;
    gzclose(f);
    if (failed) return absl::DataLossError(absl::StrCat("corrupt gzip ", path));
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string SourcePath(absl::string_view path) { return absl::StrCat(DUET_SOURCE_DIR, "/", path); }

std::string Escape(absl::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const Utf8Step step = NextUtf8Step(s.substr(i));
      if (step.kind == Utf8StepKind::kValid) {
        out.append(s.data() + i, step.length);
        i += step.length;
        continue;
      }
      absl::StrAppendFormat(&out, "\\x%02X", c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02X", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
  return out;
}

std::string IdsToString(const std::vector<int32_t>& ids) {
  return absl::StrCat("[", absl::StrJoin(ids, ", "), "]");
}

namespace {
const Tokenizer& Load(const char* path) {
  auto t = Tokenizer::FromFile(SourcePath(path));
  if (!t.ok()) {
    ADD_FAILURE() << t.status();
    std::abort();
  }
  return *t->release();  // lives for the whole test process
}
}  // namespace

const Tokenizer& Qwen3() {
  static const Tokenizer& t = Load("assets/qwen3/tokenizer.json");
  return t;
}

const Tokenizer& Llama3() {
  static const Tokenizer& t = Load("assets/llama3/tokenizer.json");
  return t;
}

}  // namespace duet::tokenizer::testing
