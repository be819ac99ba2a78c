// Python str and dict methods that chat templates call.
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "chat/builtins.h"
#include "chat/builtins_internal.h"
#include "common/status.h"

namespace duet::chat::jinja {
namespace {

char32_t MapCase(char32_t c, bool upper) {
  if (upper) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
    if (c >= 0x3b1 && c <= 0x3c9 && c != 0x3c2) return c - 32;
    if (c >= 0x430 && c <= 0x44f) return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
  } else {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
  }
  return c;
}

bool IsCased(char32_t c) {
  return MapCase(c, true) != c || MapCase(c, false) != c;
}

std::string MapStr(absl::string_view s, bool upper) {
  std::string out;
  for (char32_t c : DecodeUtf8(s)) AppendUtf8(MapCase(c, upper), &out);
  return out;
}

absl::Status ArgError(const std::string& method, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("str.", method, "(): ", what));
}

absl::StatusOr<std::string> StrArg(const CallArgs& a, size_t i,
                                   absl::string_view kw,
                                   const std::string& method) {
  const Value* v = Arg(a, i, kw);
  if (v == nullptr) return ArgError(method, "missing argument");
  if (!v->is_string()) {
    return ArgError(method, absl::StrCat("expected str, got ", v->TypeName()));
  }
  return v->as_string();
}

// Python str.split(sep, maxsplit) and rsplit.
absl::StatusOr<Value> Split(const std::string& s, const Value* sep,
                            int64_t maxsplit, bool from_right) {
  Array parts;
  if (sep == nullptr || sep->is_none()) {
    std::vector<char32_t> cps = DecodeUtf8(s);
    std::vector<std::pair<size_t, size_t>> words;
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && IsPyWhitespace(cps[i])) ++i;
      if (i == cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !IsPyWhitespace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    if (maxsplit < 0 || static_cast<size_t>(maxsplit) + 1 >= words.size()) {
      for (auto [b, e] : words) parts.push_back(EncodeUtf8(cps, b, e));
      return Value(std::move(parts));
    }
    size_t keep = static_cast<size_t>(maxsplit);
    if (!from_right) {
      for (size_t w = 0; w < keep; ++w) {
        parts.push_back(EncodeUtf8(cps, words[w].first, words[w].second));
      }
      // The remainder keeps its trailing whitespace, as CPython's does.
      parts.push_back(EncodeUtf8(cps, words[keep].first, cps.size()));
    } else {
      size_t first = words.size() - keep;
      // ... and rsplit's its leading whitespace.
      parts.push_back(EncodeUtf8(cps, 0, words[first - 1].second));
      for (size_t w = first; w < words.size(); ++w) {
        parts.push_back(EncodeUtf8(cps, words[w].first, words[w].second));
      }
    }
    return Value(std::move(parts));
  }
  if (!sep->is_string()) {
    return absl::InvalidArgumentError("must be str or None");
  }
  const std::string& d = sep->as_string();
  if (d.empty()) return absl::InvalidArgumentError("empty separator");
  std::vector<std::string> pieces;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(pieces.size()) < maxsplit) {
      size_t at = s.find(d, start);
      if (at == std::string::npos) break;
      pieces.push_back(s.substr(start, at - start));
      start = at + d.size();
    }
    pieces.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    std::vector<std::string> rev;
    while (maxsplit < 0 || static_cast<int64_t>(rev.size()) < maxsplit) {
      if (end < d.size()) break;
      size_t at = s.rfind(d, end - d.size());
      if (at == std::string::npos) break;
      rev.push_back(s.substr(at + d.size(), end - at - d.size()));
      end = at;
    }
    rev.push_back(s.substr(0, end));
    pieces.assign(rev.rbegin(), rev.rend());
  }
  for (std::string& p : pieces) parts.push_back(Value(std::move(p)));
  return Value(std::move(parts));
}

absl::StatusOr<Value> AffixTest(const std::string& s, const CallArgs& a,
                                const std::string& method) {
  const Value* v = Arg(a, 0, "");
  if (v == nullptr || a.positional.size() > 1) {
    return ArgError(method, "expects exactly one prefix argument");
  }
  std::vector<std::string> options;
  if (v->is_string()) {
    options.push_back(v->as_string());
  } else if (v->is_array()) {
    for (const Value& o : v->as_array()) {
      if (!o.is_string()) return ArgError(method, "tuple items must be str");
      options.push_back(o.as_string());
    }
  } else {
    return ArgError(method, "argument must be str or a tuple of str");
  }
  for (const std::string& o : options) {
    if (method == "startswith"
            ? s.compare(0, o.size(), o) == 0
            : (s.size() >= o.size() &&
               s.compare(s.size() - o.size(), o.size(), o) == 0)) {
      return Value(true);
    }
  }
  return Value(false);
}

absl::StatusOr<Value> CallStrMethod(const std::string& s, const std::string& m,
                                    CallArgs& a) {
  if (m == "startswith" || m == "endswith") return AffixTest(s, a, m);
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    const Value* chars = Arg(a, 0, "chars");
    std::string set;
    if (chars != nullptr && !chars->is_none()) {
      if (!chars->is_string()) return ArgError(m, "arg must be None or str");
      set = chars->as_string();
    }
    bool has = chars != nullptr && !chars->is_none();
    return Value(
        StripStr(s, has ? &set : nullptr, m != "rstrip", m != "lstrip"));
  }
  if (m == "split" || m == "rsplit") {
    const Value* max = Arg(a, 1, "maxsplit");
    int64_t maxsplit = -1;
    if (max != nullptr) {
      if (!max->is_int()) return ArgError(m, "maxsplit must be an integer");
      maxsplit = max->as_int();
    }
    return Split(s, Arg(a, 0, "sep"), maxsplit, m == "rsplit");
  }
  if (m == "replace") {
    DUET_ASSIGN_OR_RETURN(std::string from, StrArg(a, 0, "old", m));
    DUET_ASSIGN_OR_RETURN(std::string to, StrArg(a, 1, "new", m));
    const Value* count = Arg(a, 2, "count");
    int64_t n = count != nullptr && count->is_int() ? count->as_int() : -1;
    return Value(ReplaceStr(s, from, to, n));
  }
  if (m == "upper") return Value(UpperStr(s));
  if (m == "lower") return Value(LowerStr(s));
  if (m == "capitalize" || m == "title") {
    std::string out;
    bool prev_cased = false;
    bool first = true;
    for (char32_t c : DecodeUtf8(s)) {
      bool up = m == "capitalize" ? first : !prev_cased;
      AppendUtf8(MapCase(c, up), &out);
      prev_cased = IsCased(c);
      first = false;
    }
    return Value(std::move(out));
  }
  if (m == "find" || m == "rfind" || m == "count") {
    DUET_ASSIGN_OR_RETURN(std::string sub, StrArg(a, 0, "sub", m));
    if (m == "count") {
      if (sub.empty()) {
        return Value(static_cast<int64_t>(DecodeUtf8(s).size() + 1));
      }
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos;
           at = s.find(sub, at + sub.size())) {
        ++n;
      }
      return Value(n);
    }
    size_t at = m == "find" ? s.find(sub) : s.rfind(sub);
    if (at == std::string::npos) return Value(int64_t{-1});
    return Value(static_cast<int64_t>(DecodeUtf8(s.substr(0, at)).size()));
  }
  if (m == "join") {
    const Value* items = Arg(a, 0, "iterable");
    if (items == nullptr) return ArgError(m, "missing argument");
    DUET_ASSIGN_OR_RETURN(Array list, Iterate(*items));
    std::string out;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_string()) {
        return ArgError(
            m, absl::StrCat("sequence item ", i, ": expected str instance"));
      }
      if (i) out += s;
      out += list[i].as_string();
    }
    return Value(std::move(out));
  }
  if (m == "splitlines") {
    Array lines;
    std::string cur;
    std::vector<char32_t> cps = DecodeUtf8(s);
    for (size_t i = 0; i < cps.size(); ++i) {
      char32_t c = cps[i];
      bool brk = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c ||
                 (c >= 0x1c && c <= 0x1e) || c == 0x85 || c == 0x2028 ||
                 c == 0x2029;
      if (!brk) {
        AppendUtf8(c, &cur);
        continue;
      }
      if (c == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
      lines.push_back(Value(std::move(cur)));
      cur.clear();
    }
    if (!cur.empty()) lines.push_back(Value(std::move(cur)));
    return Value(std::move(lines));
  }
  // The is* predicates, ASCII classes plus Unicode whitespace.
  std::vector<char32_t> cps = DecodeUtf8(s);
  if (cps.empty()) return Value(false);
  bool all = true;
  for (char32_t c : cps) {
    bool digit = c >= '0' && c <= '9';
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsCased(c);
    if (m == "isdigit") all = all && digit;
    if (m == "isalpha") all = all && alpha;
    if (m == "isalnum") all = all && (alpha || digit);
    if (m == "isspace") all = all && IsPyWhitespace(c);
  }
  return Value(all);
}

}  // namespace

const Value* Arg(const CallArgs& args, size_t i, absl::string_view name) {
  if (i < args.positional.size()) return &args.positional[i];
  if (name.empty()) return nullptr;
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

std::string LowerStr(absl::string_view s) { return MapStr(s, false); }
std::string UpperStr(absl::string_view s) { return MapStr(s, true); }

std::string StripStr(absl::string_view s, const std::string* chars, bool left,
                     bool right) {
  std::vector<char32_t> cps = DecodeUtf8(s);
  std::vector<char32_t> set;
  if (chars != nullptr) set = DecodeUtf8(*chars);
  auto strip = [&](char32_t c) {
    if (chars == nullptr) return IsPyWhitespace(c);
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  return EncodeUtf8(cps, b, e);
}

std::string ReplaceStr(absl::string_view s, absl::string_view from,
                       absl::string_view to, int64_t count) {
  std::string out;
  if (from.empty()) {
    // Python inserts `to` before every character and at the end.
    std::vector<char32_t> cps = DecodeUtf8(s);
    int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) {
        absl::StrAppend(&out, to);
        ++done;
      }
      AppendUtf8(c, &out);
    }
    if (count < 0 || done < count) absl::StrAppend(&out, to);
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t at = s.find(from, start);
    if (at == absl::string_view::npos) break;
    absl::StrAppend(&out, s.substr(start, at - start));
    absl::StrAppend(&out, to);
    start = at + from.size();
    ++done;
  }
  absl::StrAppend(&out, s.substr(start));
  return out;
}

bool IsStrMethod(absl::string_view name) {
  static const absl::flat_hash_set<std::string> kNames = {
      "startswith", "endswith", "strip",  "lstrip", "rstrip",     "split",
      "rsplit",     "replace",  "upper",  "lower",  "capitalize", "title",
      "find",       "rfind",    "count",  "join",   "splitlines", "isdigit",
      "isalpha",    "isalnum",  "isspace"};
  return kNames.contains(name);
}

bool IsDictMethod(absl::string_view name) {
  return name == "items" || name == "keys" || name == "values" || name == "get";
}

bool HasMethod(absl::string_view name) {
  return IsStrMethod(name) || IsDictMethod(name) || name == "cycle";
}

Value BindStrMethod(const Value& self, const std::string& name) {
  std::string s = self.as_string();
  return Value::MakeCallable(
      "str." + name,
      [s = std::move(s), name](CallArgs& a) -> absl::StatusOr<Value> {
        return CallStrMethod(s, name, a);
      });
}

Value BindDictMethod(const Value& self, const std::string& name) {
  return Value::MakeCallable(
      "dict." + name, [self, name](CallArgs& a) -> absl::StatusOr<Value> {
        const Object& o = self.as_object();
        if (name == "get") {
          const Value* key = Arg(a, 0, "key");
          if (key == nullptr) {
            return absl::InvalidArgumentError("dict.get(): missing key");
          }
          if (key->is_string()) {
            if (const Value* v = o.Find(key->as_string())) return *v;
          }
          const Value* def = Arg(a, 1, "default");
          return def != nullptr ? *def : Value::None();
        }
        Array out;
        for (const auto& [k, v] : o.items) {
          if (name == "keys") {
            out.push_back(Value(k));
          } else if (name == "values") {
            out.push_back(v);
          } else {
            out.push_back(Value(Array{Value(k), v}));
          }
        }
        return Value(std::move(out));
      });
}

}  // namespace duet::chat::jinja
