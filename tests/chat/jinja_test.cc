// The Jinja interpreter on its own: 600 random small templates (expressions,
// filters, tests, str/dict methods, slicing, loops, namespaces, macros,
// whitespace control) over random values, rendered by Jinja2 set up as
// transformers sets it up (tests/golden/chat/jinja_exprs.json, from
// scripts/make_chat_goldens.py), plus load-time errors naming the construct
// and runtime errors.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "chat/template.h"
#include "chat/value.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace duet::chat::jinja {
namespace {

using nlohmann::ordered_json;

absl::StatusOr<std::string> Render(const std::string& src,
                                   const ordered_json& ctx = {}) {
  auto t = Template::Parse(src);
  if (!t.ok()) return t.status();
  Value v = Value::FromJson(ctx.is_null() ? ordered_json::object() : ctx);
  return t->Render(v.as_object());
}

TEST(JinjaGolden, RandomExpressions) {
  std::ifstream in(std::string(DUET_SOURCE_DIR) +
                   "/tests/golden/chat/jinja_exprs.json");
  ASSERT_TRUE(in) << "missing tests/golden/chat/jinja_exprs.json";
  std::stringstream ss;
  ss << in.rdbuf();
  ordered_json golden = ordered_json::parse(ss.str());
  int failures = 0;
  for (const ordered_json& c : golden["cases"]) {
    const std::string src = c["template"].get<std::string>();
    auto got = Render(src, c["context"]);
    std::string where =
        absl::StrCat(c["name"].get<std::string>(), " ",
                     ordered_json(src).dump(), " with ", c["context"].dump());
    if (c.contains("error")) {
      if (got.ok()) {
        ++failures;
        ADD_FAILURE() << where << ": expected an error ("
                      << c["error"].get<std::string>() << "), got "
                      << ordered_json(*got).dump();
      } else {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument)
            << where;
      }
      continue;
    }
    if (!got.ok()) {
      ++failures;
      ADD_FAILURE() << where << ": " << got.status();
    } else if (*got != c["expected"].get<std::string>()) {
      ++failures;
      ADD_FAILURE() << where << "\n  want "
                    << ordered_json(c["expected"]).dump() << "\n  got  "
                    << ordered_json(*got).dump();
    }
  }
  EXPECT_EQ(failures, 0);
  EXPECT_GE(golden["cases"].size(), 500u);
}

// --- Load-time errors name the construct and its line ---

void ExpectLoadError(const std::string& src, const std::string& needle,
                     int line) {
  auto t = Template::Parse(src);
  ASSERT_FALSE(t.ok()) << src;
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find(absl::StrCat("line ", line, ":")),
            std::string::npos)
      << t.status();
}

TEST(JinjaErrors, UnsupportedConstructsFailAtLoad) {
  ExpectLoadError("a\n{% include 'x.jinja' %}", "unsupported tag 'include'", 2);
  ExpectLoadError("{% extends 'base' %}", "unsupported tag 'extends'", 1);
  ExpectLoadError("\n\n{{ x | wordwrap }}", "unknown filter 'wordwrap'", 3);
  ExpectLoadError("{% if x is prime %}{% endif %}", "unknown test 'prime'", 1);
  ExpectLoadError("{{ 'a'.zfill(3) }}", "unknown method 'zfill'", 1);
  ExpectLoadError("{{ lipsum() }}", "unknown function 'lipsum'", 1);
  ExpectLoadError("{% for x in y recursive %}{% endfor %}", "recursive", 1);
  ExpectLoadError("{% if x %}\n{% for y in x %}", "'endfor'", 2);
  ExpectLoadError("{{ x }}\n{{ 1 +", "unterminated tag", 2);
  ExpectLoadError("{{ 1 + }}", "unexpected end of print statement", 1);
  ExpectLoadError("{% break %}", "outside a for loop", 1);
  ExpectLoadError("{{ 'unterminated }}", "unterminated string", 1);
  ExpectLoadError("{# never closed", "unterminated comment", 1);
  ExpectLoadError("{% set x | upper %}a{% endset %}", "filtered block set", 1);
}

TEST(JinjaErrors, RuntimeErrorsAreInvalidArgument) {
  struct Case {
    const char* src;
    const char* needle;
  };
  for (const Case& c : {
           Case{"{{ raise_exception('custom message') }}", "custom message"},
           Case{"{{ 1 + 'a' }}", "unsupported operand"},
           Case{"{{ x.y }}", "'x' is undefined"},
           Case{"{{ {'a': 1}.b.c }}", "'dict object' has no attribute 'b'"},
           // Jinja quotes the type for a missing attribute, not an element
           // (Llama-3.1's template indexes messages[0] of an empty list).
           Case{"{{ [][0]['role'] }}", ": list object has no element 0"},
           Case{"{{ {'a': 1}[1].x }}", ": dict object has no element 1"},
           Case{"{{ 1 // 0 }}", "by zero"},
           Case{"{{ [1] | tojson }}{{ x | tojson }}", "undefined"},
           Case{"{{ 'a'.split('') }}", "empty separator"},
           Case{"{{ range(1000000) | length }}", "MAX_RANGE"},
           Case{"{% set x = 1 %}{% set x.a = 2 %}", "non-namespace"},
           Case{"\n{{ 'a' < 1 }}", "line 2"},
       }) {
    auto r = Render(c.src);
    ASSERT_FALSE(r.ok()) << c.src << " rendered " << *r;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.src;
    EXPECT_NE(r.status().message().find(c.needle), std::string::npos)
        << c.src << ": " << r.status();
  }
}

// --- Whitespace control and the transformers environment ---

TEST(JinjaWhitespace, TrimAndLstripBlocks) {
  EXPECT_EQ(Render("{% if true %}\n  x\n{% endif %}\n").value(), "  x\n");
  EXPECT_EQ(Render("  {% if true %}x{% endif %}").value(), "x");
  EXPECT_EQ(Render("a  {% if true %}x{% endif %}").value(), "a  x");
  EXPECT_EQ(Render("  {%+ if true %}x{% endif %}").value(), "  x");
  EXPECT_EQ(Render("{% if true +%}\nx{% endif %}").value(), "\nx");
  EXPECT_EQ(Render("a \n {{- 'b' -}} \n c").value(), "abc");
  EXPECT_EQ(Render("  {{ 'v' }}\n").value(), "  v");
  EXPECT_EQ(Render("{# note #}\n  {# more #}\nx\n\n").value(), "x\n");
  EXPECT_EQ(Render("x\r\n{% if true %}\r\ny{% endif %}").value(), "x\ny");
  EXPECT_EQ(Render("{% raw %}{{ not }}{% endraw %}").value(), "{{ not }}");
}

// --- Random-ish properties checked against independent references ---

TEST(JinjaProperties, ToJsonRoundTripsRandomStrings) {
  std::mt19937 rng(1234);
  const char32_t pool[] = {'a',    ' ',     '"',    '\\', '\n',
                           '\t',   0x01,    0x1f,   0x7f, 0xe9,
                           0x4e2d, 0x1f389, 0x3000, '/',  '\''};
  for (int i = 0; i < 300; ++i) {
    std::string s;
    for (int n = rng() % 12; n > 0; --n) {
      AppendUtf8(pool[rng() % (sizeof(pool) / sizeof(pool[0]))], &s);
    }
    auto out = Render("{{ s | tojson }}", {{"s", s}});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(ordered_json::parse(*out).get<std::string>(), s);
    // ensure_ascii=False: non-ASCII text is written as is.
    for (char32_t c : DecodeUtf8(s)) {
      if (c >= 0x80) {
        std::string enc;
        AppendUtf8(c, &enc);
        EXPECT_NE(out->find(enc), std::string::npos);
      }
    }
  }
}

// Python slicing on lists, by the definition in the language reference.
TEST(JinjaProperties, SlicesMatchThePythonDefinition) {
  std::mt19937 rng(99);
  for (int iter = 0; iter < 400; ++iter) {
    int n = rng() % 7;
    ordered_json list = ordered_json::array();
    for (int i = 0; i < n; ++i) list.push_back(i);
    int start = static_cast<int>(rng() % 15) - 7;
    int stop = static_cast<int>(rng() % 15) - 7;
    int step = static_cast<int>(rng() % 7) - 3;
    if (step == 0) step = 1;
    // Reference: clamp per the Python reference, then walk.
    auto norm = [&](int i) {
      if (i < 0) i += n;
      if (step > 0) return std::clamp(i, 0, n);
      return std::clamp(i, -1, n - 1);
    };
    int b = norm(start), e = norm(stop);
    std::string want = "[";
    for (int i = b; step > 0 ? i < e : i > e; i += step) {
      absl::StrAppend(&want, want.size() > 1 ? ", " : "", i);
    }
    want += "]";
    auto got =
        Render(absl::StrCat("{{ l[", start, ":", stop, ":", step, "] }}"),
               {{"l", list}});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "n=" << n << " [" << start << ":" << stop << ":"
                          << step << "]";
  }
}

TEST(JinjaProperties, FloatsPrintAsPythonRepr) {
  EXPECT_EQ(Render("{{ 0.1 + 0.2 }}").value(), "0.30000000000000004");
  EXPECT_EQ(Render("{{ 1e16 }} {{ 1e15 }} {{ 1e-05 }} {{ 0.0001 }}").value(),
            "1e+16 1000000000000000.0 1e-05 0.0001");
  EXPECT_EQ(Render("{{ 4 / 2 }} {{ -0.0 }} {{ 2.5e-7 }}").value(),
            "2.0 -0.0 2.5e-07");
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200; ++i) {
    double d = std::ldexp(static_cast<double>(rng() % 1000000) - 500000,
                          static_cast<int>(rng() % 120) - 60);
    std::string s = FormatFloat(d);
    EXPECT_EQ(std::strtod(s.c_str(), nullptr), d) << s;  // round-trips
  }
}

TEST(JinjaGlobals, StrftimeNowFormatsTheLocalTime) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char year[8];
  std::strftime(year, sizeof(year), "%Y", &tm);
  auto got = Render("{{ strftime_now('%Y') }}|{{ strftime_now is defined }}");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, absl::StrCat(year, "|True"));
  auto date = Render("{{ strftime_now('%d %b %Y') }}");
  ASSERT_TRUE(date.ok());
  EXPECT_EQ(date->size(), 11u) << *date;  // "06 Dec 2025"
}

}  // namespace
}  // namespace duet::chat::jinja
