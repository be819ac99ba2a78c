// Jinja2's built-in filters that chat templates use, plus transformers'
// tojson (json.dumps with ensure_ascii=False, not Jinja's HTML-safe one).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "chat/builtins.h"
#include "chat/builtins_internal.h"
#include "common/status.h"

namespace duet::chat::jinja {
namespace {

int64_t IntOfNumber(const Value& v) {
  return v.is_bool() ? v.as_bool() : v.as_int();
}

absl::Status FilterError(const std::string& name, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("filter '", name, "': ", what));
}

// Jinja's environment.getitem over a dotted path ("function.name"); integer
// parts index lists.
Value AttrPath(const Value& v, const std::string& path) {
  Value cur = v;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    int64_t idx;
    if (absl::SimpleAtoi(part, &idx)) {
      cur = GetItem(cur, Value(idx));
    } else {
      cur = GetItem(cur, Value(std::string(part)));
    }
    if (cur.is_undefined()) break;
  }
  return cur;
}

// select/reject/selectattr/rejectattr: the test named by args[first] with
// the rest as its arguments, or truthiness when no test is named.
absl::StatusOr<Value> SelectOrReject(const std::string& name, const Value& seq,
                                     CallArgs& args, bool attr) {
  DUET_ASSIGN_OR_RETURN(Array items, Iterate(seq));
  bool keep_if = name == "select" || name == "selectattr";
  size_t first = 0;
  std::string attribute;
  if (attr) {
    if (args.positional.empty() || !args.positional[0].is_string()) {
      return FilterError(name, "needs an attribute name");
    }
    attribute = args.positional[0].as_string();
    first = 1;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > first) {
    if (!args.positional[first].is_string()) {
      return FilterError(name, "the test must be named by a string");
    }
    test = args.positional[first].as_string();
    if (!HasTest(test)) {
      return FilterError(name, absl::StrCat("unknown test '", test, "'"));
    }
    test_args.positional.assign(args.positional.begin() + first + 1,
                                args.positional.end());
  }
  Array out;
  for (const Value& item : items) {
    Value probe = attr ? AttrPath(item, attribute) : item;
    bool ok;
    if (test.empty()) {
      ok = probe.Truthy();
    } else {
      DUET_ASSIGN_OR_RETURN(ok, ApplyTest(test, probe, test_args));
    }
    if (ok == keep_if) out.push_back(item);
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> Map(const Value& seq, CallArgs& args) {
  DUET_ASSIGN_OR_RETURN(Array items, Iterate(seq));
  Array out;
  const Value* attribute = Arg(args, 99, "attribute");
  if (attribute != nullptr) {
    const Value* def = Arg(args, 99, "default");
    for (const Value& item : items) {
      Value v = AttrPath(item, attribute->Str());
      out.push_back(v.is_undefined() && def != nullptr ? *def : v);
    }
    return Value(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string()) {
    return FilterError("map", "needs a filter name or attribute=");
  }
  std::string filter = args.positional[0].as_string();
  if (!HasFilter(filter)) {
    return FilterError("map", absl::StrCat("unknown filter '", filter, "'"));
  }
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    DUET_ASSIGN_OR_RETURN(Value v, ApplyFilter(filter, item, rest));
    out.push_back(std::move(v));
  }
  return Value(std::move(out));
}

// Sort key comparison for sort/unique/min/max: strings case-insensitively
// unless case_sensitive, as Jinja's ignore_case postprocessor does.
Value SortKey(const Value& v, bool case_sensitive, const Value* attribute) {
  Value k = attribute != nullptr ? AttrPath(v, attribute->Str()) : v;
  if (!case_sensitive && k.is_string()) return Value(LowerStr(k.as_string()));
  return k;
}

absl::StatusOr<Value> Sort(const std::string& name, const Value& seq,
                           CallArgs& args) {
  DUET_ASSIGN_OR_RETURN(Array items, Iterate(seq));
  const Value* rev = Arg(args, name == "sort" ? 0 : 99, "reverse");
  const Value* cs = Arg(args, name == "sort" ? 1 : 0, "case_sensitive");
  const Value* attribute = Arg(args, name == "sort" ? 2 : 1, "attribute");
  bool case_sensitive = cs != nullptr && cs->Truthy();
  if (name == "unique") {
    Array out, keys;
    for (const Value& item : items) {
      Value k = SortKey(item, case_sensitive, attribute);
      bool seen = false;
      for (const Value& s : keys) seen = seen || Equal(s, k);
      if (!seen) {
        keys.push_back(k);
        out.push_back(item);
      }
    }
    return Value(std::move(out));
  }
  absl::Status err;
  auto less = [&](const Value& a, const Value& b) {
    absl::StatusOr<bool> r = Less(SortKey(a, case_sensitive, attribute),
                                  SortKey(b, case_sensitive, attribute));
    if (!r.ok()) {
      err = r.status();
      return false;
    }
    return *r;
  };
  if (name == "min" || name == "max") {
    if (items.empty()) {
      return Value::MakeUndefined(
          absl::StrCat("No aggregated item, sequence was empty."));
    }
    Value best = items[0];
    for (size_t i = 1; i < items.size(); ++i) {
      if (name == "min" ? less(items[i], best) : less(best, items[i])) {
        best = items[i];
      }
    }
    DUET_RETURN_IF_ERROR(err);
    return best;
  }
  std::stable_sort(
      items.begin(), items.end(), [&](const Value& a, const Value& b) {
        return rev != nullptr && rev->Truthy() ? less(b, a) : less(a, b);
      });
  DUET_RETURN_IF_ERROR(err);
  return Value(std::move(items));
}

absl::StatusOr<Value> ToNumber(const std::string& name, const Value& v,
                               CallArgs& args) {
  const Value* def = Arg(args, 0, "default");
  Value fallback = def != nullptr  ? *def
                   : name == "int" ? Value(int64_t{0})
                                   : Value(0.0);
  double d;
  if (v.is_number()) {
    d = v.as_double();
    if (name == "int" && !v.is_float())
      return Value(v.is_bool() ? int64_t{v.as_bool()} : v.as_int());
  } else if (v.is_string()) {
    std::string s(absl::StripAsciiWhitespace(v.as_string()));
    int64_t i;
    if (name == "int" && absl::SimpleAtoi(s, &i)) return Value(i);
    if (!absl::SimpleAtod(s, &d) || s.empty()) return fallback;
  } else {
    return fallback;
  }
  if (name == "float") return Value(d);
  if (!std::isfinite(d)) return fallback;
  return Value(static_cast<int64_t>(std::trunc(d)));
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<Value> ToJsonFilter(const Value& v, CallArgs& args) {
  JsonOptions o;
  const Value* ensure_ascii = Arg(args, 0, "ensure_ascii");
  const Value* indent = Arg(args, 1, "indent");
  const Value* separators = Arg(args, 2, "separators");
  const Value* sort_keys = Arg(args, 3, "sort_keys");
  o.ensure_ascii = ensure_ascii != nullptr && ensure_ascii->Truthy();
  o.sort_keys = sort_keys != nullptr && sort_keys->Truthy();
  if (indent != nullptr && !indent->is_none()) {
    if (indent->is_int()) {
      o.indent = static_cast<int>(std::max<int64_t>(0, indent->as_int()));
    } else {
      return FilterError("tojson", "indent must be an integer");
    }
  }
  if (separators != nullptr && !separators->is_none()) {
    if (!separators->is_array() || separators->as_array().size() != 2 ||
        !separators->as_array()[0].is_string() ||
        !separators->as_array()[1].is_string()) {
      return FilterError("tojson", "separators must be a pair of strings");
    }
    o.item_separator = separators->as_array()[0].as_string();
    o.key_separator = separators->as_array()[1].as_string();
  }
  if (v.is_undefined()) return UndefinedError(v);
  DUET_ASSIGN_OR_RETURN(std::string s, ToJson(v, o));
  return Value(std::move(s));
}

}  // namespace

bool HasFilter(absl::string_view name) {
  static const absl::flat_hash_set<std::string> kFilters = {
      "trim",   "tojson",     "length",     "count",   "string",  "lower",
      "upper",  "capitalize", "title",      "default", "d",       "first",
      "last",   "join",       "items",      "list",    "replace", "select",
      "reject", "selectattr", "rejectattr", "map",     "reverse", "sort",
      "unique", "min",        "max",        "sum",     "int",     "float",
      "abs",    "round",      "safe",       "escape",  "e",       "indent"};
  return kFilters.contains(name);
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& v,
                                  CallArgs& args) {
  if (name == "default" || name == "d") {
    const Value* def = Arg(args, 0, "default_value");
    const Value* boolean = Arg(args, 1, "boolean");
    bool use = v.is_undefined() ||
               (boolean != nullptr && boolean->Truthy() && !v.Truthy());
    if (!use) return v;
    return def != nullptr ? *def : Value(std::string());
  }
  if (name == "tojson") return ToJsonFilter(v, args);
  if (name == "safe") return v;
  if (name == "length" || name == "count") {
    DUET_ASSIGN_OR_RETURN(int64_t n, Length(v));
    return Value(n);
  }
  if (name == "string") return Value(v.Str());
  if (name == "trim") {
    const Value* chars = Arg(args, 0, "chars");
    std::string set = chars != nullptr && !chars->is_none() ? chars->Str() : "";
    return Value(StripStr(
        v.Str(), chars != nullptr && !chars->is_none() ? &set : nullptr, true,
        true));
  }
  if (name == "lower") return Value(LowerStr(v.Str()));
  if (name == "upper") return Value(UpperStr(v.Str()));
  if (name == "capitalize" || name == "title") {
    CallArgs none;
    return GetAttr(Value(v.Str()), name).as_callable().fn(none);
  }
  if (name == "escape" || name == "e") return Value(HtmlEscape(v.Str()));
  if (name == "replace") {
    const Value* from = Arg(args, 0, "old");
    const Value* to = Arg(args, 1, "new");
    const Value* count = Arg(args, 2, "count");
    if (from == nullptr || to == nullptr) {
      return FilterError(name, "needs old and new");
    }
    int64_t n = count != nullptr && count->is_int() ? count->as_int() : -1;
    return Value(ReplaceStr(v.Str(), from->Str(), to->Str(), n));
  }
  if (name == "indent") {
    const Value* width = Arg(args, 0, "width");
    const Value* first = Arg(args, 1, "first");
    const Value* blank = Arg(args, 2, "blank");
    std::string pad =
        width == nullptr ? "    "
        : width->is_string()
            ? width->as_string()
            : std::string(width->is_int() ? width->as_int() : 4, ' ');
    CallArgs none;
    DUET_ASSIGN_OR_RETURN(
        Value lines_v,
        GetAttr(Value(v.Str() + "\n"), "splitlines").as_callable().fn(none));
    const Array& lines = lines_v.as_array();
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      const std::string& line = lines[i].as_string();
      if (i > 0) {
        out += "\n";
        if (!line.empty() || (blank != nullptr && blank->Truthy())) out += pad;
      }
      out += line;
    }
    if (first != nullptr && first->Truthy()) out = pad + out;
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject") {
    return SelectOrReject(name, v, args, false);
  }
  if (name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(name, v, args, true);
  }
  if (name == "map") return Map(v, args);
  if (name == "sort" || name == "unique" || name == "min" || name == "max") {
    return Sort(name, v, args);
  }
  if (name == "int" || name == "float") return ToNumber(name, v, args);
  if (name == "abs" || name == "round") {
    if (!v.is_number()) {
      return FilterError(name, absl::StrCat("bad operand type ", v.TypeName()));
    }
    if (name == "abs") {
      if (v.is_float()) return Value(std::fabs(v.as_float()));
      int64_t i = v.is_bool() ? v.as_bool() : v.as_int();
      return Value(i < 0 ? -i : i);
    }
    const Value* precision = Arg(args, 0, "precision");
    const Value* method = Arg(args, 1, "method");
    int64_t p =
        precision != nullptr && precision->is_int() ? precision->as_int() : 0;
    std::string m = method != nullptr ? method->Str() : "common";
    // "common" is Python's round(): ties to even, and an int stays an int.
    if (m == "common" && !v.is_float() && p >= 0) return Value(IntOfNumber(v));
    double scale = std::pow(10.0, static_cast<double>(p));
    double x = v.as_double() * scale;
    if (m == "common") {
      x = std::nearbyint(x);
    } else if (m == "ceil") {
      x = std::ceil(x);
    } else if (m == "floor") {
      x = std::floor(x);
    } else {
      return FilterError(name, "method must be common, ceil or floor");
    }
    return Value(x / scale);
  }
  if (name == "items") {
    if (v.is_undefined()) return Value(Array{});
    if (!v.is_object()) {
      return FilterError(name, "Can only get item pairs from a mapping.");
    }
    Array out;
    for (const auto& [k, val] : v.as_object().items) {
      out.push_back(Value(Array{Value(k), val}));
    }
    return Value(std::move(out));
  }
  DUET_ASSIGN_OR_RETURN(Array items, Iterate(v));
  if (name == "list") return Value(std::move(items));
  if (name == "first" || name == "last") {
    if (items.empty()) {
      return Value::MakeUndefined(
          absl::StrCat("No ", name, " item, sequence was empty."));
    }
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::string out;
      for (auto it = items.rbegin(); it != items.rend(); ++it) {
        out += it->as_string();
      }
      return Value(std::move(out));
    }
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "join") {
    const Value* sep = Arg(args, 0, "d");
    const Value* attribute = Arg(args, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += sep != nullptr ? sep->Str() : "";
      out += (attribute != nullptr ? AttrPath(items[i], attribute->Str())
                                   : items[i])
                 .Str();
    }
    return Value(std::move(out));
  }
  if (name == "sum") {
    const Value* attribute = Arg(args, 0, "attribute");
    const Value* start = Arg(args, 1, "start");
    Value total = start != nullptr ? *start : Value(int64_t{0});
    for (const Value& item : items) {
      Value x = attribute != nullptr ? AttrPath(item, attribute->Str()) : item;
      if (!x.is_number() || !total.is_number()) {
        return FilterError(
            name, absl::StrCat("unsupported operand type ", x.TypeName()));
      }
      if (x.is_float() || total.is_float()) {
        total = Value(total.as_double() + x.as_double());
      } else {
        int64_t t = total.is_bool() ? total.as_bool() : total.as_int();
        total = Value(t + (x.is_bool() ? int64_t{x.as_bool()} : x.as_int()));
      }
    }
    return total;
  }
  return absl::InternalError(
      absl::StrCat("filter '", name, "' not implemented"));
}

}  // namespace duet::chat::jinja
