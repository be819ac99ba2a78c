// Attribute/subscript lookup, tests, str and dict methods and the global
// functions. Filters are in filters.cc.
#include "chat/builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "chat/builtins_internal.h"
#include "common/status.h"

namespace duet::chat::jinja {

absl::Status UndefinedError(const Value& v) {
  const std::string& hint = v.undefined_hint();
  return absl::InvalidArgumentError(hint.empty() ? "value is undefined" : hint);
}

absl::StatusOr<Array> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return Array{};
    case Value::Kind::kArray:
      return v.as_array();
    case Value::Kind::kObject: {
      Array keys;
      for (const auto& kv : v.as_object().items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::kString: {
      Array chars;
      std::vector<char32_t> cps = DecodeUtf8(v.as_string());
      for (size_t i = 0; i < cps.size(); ++i) {
        chars.push_back(EncodeUtf8(cps, i, i + 1));
      }
      return chars;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("'", v.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(DecodeUtf8(v.as_string()).size());
    case Value::Kind::kArray:
      return static_cast<int64_t>(v.as_array().size());
    case Value::Kind::kObject:
      return static_cast<int64_t>(v.as_object().items.size());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

namespace {

Value NoAttribute(const Value& obj, const std::string& name) {
  return Value::MakeUndefined(
      absl::StrCat("'", obj.TypeName(), "' has no attribute '", name, "'"));
}

// Python index normalisation: negative counts from the end; false when out
// of range.
bool NormalizeIndex(int64_t* i, size_t size) {
  if (*i < 0) *i += static_cast<int64_t>(size);
  return *i >= 0 && *i < static_cast<int64_t>(size);
}

}  // namespace

Value GetAttr(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    if (IsStrMethod(name)) return BindStrMethod(obj, name);
    return NoAttribute(obj, name);
  }
  if (obj.is_object()) {
    if (IsDictMethod(name)) return BindDictMethod(obj, name);
    // The rest of dict's attributes mutate; the immutable sandbox hides them
    // rather than falling back to a key of that name.
    static const absl::flat_hash_set<std::string> kUnsafe = {
        "clear", "fromkeys", "pop", "popitem", "setdefault", "update"};
    if (kUnsafe.contains(name)) {
      return Value::MakeUndefined(absl::StrCat("access to attribute '", name,
                                               "' of 'dict' object is unsafe"));
    }
    if (const Value* v = obj.as_object().Find(name)) return *v;
    return NoAttribute(obj, name);
  }
  if (obj.is_namespace()) {
    if (const Value* v = obj.namespace_object().Find(name)) return *v;
    return NoAttribute(obj, name);
  }
  return NoAttribute(obj, name);
}

Value GetItem(const Value& obj, const Value& key) {
  if (obj.is_object() && key.is_string()) {
    if (const Value* v = obj.as_object().Find(key.as_string())) return *v;
    return GetAttr(obj, key.as_string());
  }
  if (obj.is_namespace() && key.is_string()) {
    return GetAttr(obj, key.as_string());
  }
  if ((obj.is_array() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.is_bool() ? key.as_bool() : key.as_int();
    if (obj.is_array()) {
      if (NormalizeIndex(&i, obj.as_array().size())) return obj.as_array()[i];
    } else {
      std::vector<char32_t> cps = DecodeUtf8(obj.as_string());
      if (NormalizeIndex(&i, cps.size())) return EncodeUtf8(cps, i, i + 1);
    }
    return Value::MakeUndefined(
        absl::StrCat(obj.TypeName(), " has no element ", key.Repr()));
  }
  if (key.is_string()) return GetAttr(obj, key.as_string());
  return Value::MakeUndefined(
      absl::StrCat(obj.TypeName(), " has no element ", key.Repr()));
}

absl::StatusOr<Value> SliceValue(const Value& obj, const Value* start,
                                 const Value* stop, const Value* step) {
  auto as_index = [](const Value* v, const char* what,
                     int64_t* out) -> absl::Status {
    if (v == nullptr || v->is_none()) return absl::OkStatus();
    if (!v->is_int() && !v->is_bool()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slice ", what, " must be an integer or None, got ", v->TypeName()));
    }
    *out = v->is_bool() ? v->as_bool() : v->as_int();
    return absl::OkStatus();
  };
  int64_t st = 1;
  DUET_RETURN_IF_ERROR(as_index(step, "step", &st));
  if (st == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  size_t n;
  std::vector<char32_t> cps;
  if (obj.is_array()) {
    n = obj.as_array().size();
  } else if (obj.is_string()) {
    cps = DecodeUtf8(obj.as_string());
    n = cps.size();
  } else if (obj.is_undefined()) {
    return UndefinedError(obj);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", obj.TypeName(), "' is not subscriptable"));
  }
  const int64_t len = static_cast<int64_t>(n);
  // CPython's PySlice_AdjustIndices.
  int64_t lo = st > 0 ? 0 : len - 1, hi = st > 0 ? len : -1;
  auto adjust = [&](const Value* v, int64_t def) -> absl::StatusOr<int64_t> {
    if (v == nullptr || v->is_none()) return def;
    int64_t i = 0;
    DUET_RETURN_IF_ERROR(as_index(v, "index", &i));
    if (i < 0) {
      i += len;
      if (i < 0) i = st < 0 ? -1 : 0;
    } else if (i >= len) {
      i = st < 0 ? len - 1 : len;
    }
    return i;
  };
  DUET_ASSIGN_OR_RETURN(int64_t b, adjust(start, lo));
  DUET_ASSIGN_OR_RETURN(int64_t e, adjust(stop, hi));
  std::vector<int64_t> idx;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) idx.push_back(i);
  if (obj.is_array()) {
    Array out;
    for (int64_t i : idx) out.push_back(obj.as_array()[i]);
    return Value(std::move(out));
  }
  std::string out;
  for (int64_t i : idx) AppendUtf8(cps[i], &out);
  return Value(std::move(out));
}

// ---------------------------------------------------------------- tests ---

namespace {

bool IsInteger(const Value& v) { return v.is_int(); }

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          "'in <string>' requires string as left operand");
    }
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_array()) {
    for (const Value& v : container.as_array()) {
      if (Equal(v, item)) return true;
    }
    return false;
  }
  if (container.is_object()) {
    return item.is_string() && container.as_object().Find(item.as_string());
  }
  if (container.is_undefined()) return false;
  return absl::InvalidArgumentError(absl::StrCat(
      "argument of type '", container.TypeName(), "' is not iterable"));
}

absl::StatusOr<bool> CaseTest(const Value& v, bool upper) {
  if (!v.is_string()) return false;
  const std::string& s = v.as_string();
  bool cased = false;
  for (char c : s) {
    if (upper ? (c >= 'a' && c <= 'z') : (c >= 'A' && c <= 'Z')) return false;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) cased = true;
  }
  return cased;
}

}  // namespace

absl::StatusOr<bool> ContainsValue(const Value& container, const Value& item) {
  return Contains(container, item);
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v,
                               CallArgs& args) {
  auto arg = [&](size_t i) -> absl::StatusOr<Value> {
    if (i < args.positional.size()) return args.positional[i];
    if (!args.keyword.empty()) return args.keyword[0].second;
    return absl::InvalidArgumentError(
        absl::StrCat("test '", name, "' needs an argument"));
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "integer") return IsInteger(v);
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") {
    return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  }
  if (name == "sequence") {
    return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  }
  if (name == "callable") return v.is_callable();
  if (name == "lower") return CaseTest(v, false);
  if (name == "upper") return CaseTest(v, true);
  if (name == "odd" || name == "even" || name == "divisibleby") {
    // Jinja computes value % 2 (or % num), so floats work and others raise.
    if (v.is_undefined()) return UndefinedError(v);
    Value mod(int64_t{2});
    if (name == "divisibleby") {
      DUET_ASSIGN_OR_RETURN(mod, arg(0));
    }
    if (!v.is_number() || !mod.is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat("test '", name, "' needs numbers, got ", v.TypeName()));
    }
    if (mod.as_double() == 0) {
      return absl::InvalidArgumentError("modulo by zero");
    }
    double r;
    if (v.is_float() || mod.is_float()) {
      double x = v.as_double(), y = mod.as_double();
      r = x - std::floor(x / y) * y;
    } else {
      int64_t x = v.is_bool() ? v.as_bool() : v.as_int();
      int64_t y = mod.is_bool() ? mod.as_bool() : mod.as_int();
      int64_t m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      r = static_cast<double>(m);
    }
    return name == "odd" ? r == 1 : r == 0;
  }
  DUET_ASSIGN_OR_RETURN(Value other, arg(0));
  if (name == "eq" || name == "equalto" || name == "==") {
    return Equal(v, other);
  }
  if (name == "ne" || name == "!=") return !Equal(v, other);
  if (name == "lt" || name == "<") return Less(v, other);
  if (name == "le" || name == "<=") {
    DUET_ASSIGN_OR_RETURN(bool gt, Less(other, v));
    return !gt;
  }
  if (name == "gt" || name == ">") return Less(other, v);
  if (name == "ge" || name == ">=") {
    DUET_ASSIGN_OR_RETURN(bool lt, Less(v, other));
    return !lt;
  }
  if (name == "in") return Contains(other, v);
  if (name == "sameas") {
    // Python `is`: identity. Exact for None and the bools, the only
    // singletons templates compare against.
    if (v.kind() != other.kind()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool()) return v.as_bool() == other.as_bool();
    return Equal(v, other);
  }
  return absl::InternalError(absl::StrCat("test '", name, "' not implemented"));
}

bool HasTest(absl::string_view name) {
  static const absl::flat_hash_set<std::string> kTests = {
      "defined",     "undefined", "none",    "boolean", "false",   "true",
      "integer",     "float",     "number",  "string",  "mapping", "iterable",
      "sequence",    "callable",  "lower",   "upper",   "odd",     "even",
      "divisibleby", "eq",        "equalto", "==",      "ne",      "!=",
      "lt",          "<",         "le",      "<=",      "gt",      ">",
      "ge",          ">=",        "in",      "sameas"};
  return kTests.contains(name);
}

// --------------------------------------------------------------- globals ---

bool HasGlobal(absl::string_view name) {
  return name == "range" || name == "namespace" || name == "dict" ||
         name == "raise_exception" || name == "strftime_now";
}

Value MakeGlobal(absl::string_view name) {
  if (name == "range") {
    return Value::MakeCallable(
        "range", [](CallArgs& a) -> absl::StatusOr<Value> {
          std::vector<int64_t> n;
          for (const Value& v : a.positional) {
            if (!v.is_int() && !v.is_bool()) {
              return absl::InvalidArgumentError(
                  absl::StrCat("'", v.TypeName(),
                               "' object cannot be interpreted as an integer"));
            }
            n.push_back(v.is_bool() ? v.as_bool() : v.as_int());
          }
          if (n.empty() || n.size() > 3 || !a.keyword.empty()) {
            return absl::InvalidArgumentError("range expects 1 to 3 integers");
          }
          int64_t start = n.size() > 1 ? n[0] : 0;
          int64_t stop = n.size() > 1 ? n[1] : n[0];
          int64_t step = n.size() > 2 ? n[2] : 1;
          if (step == 0) {
            return absl::InvalidArgumentError("range() arg 3 must not be zero");
          }
          Array out;
          for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
            // Jinja's sandbox caps ranges (MAX_RANGE) the same way.
            if (out.size() >= 100000) {
              return absl::InvalidArgumentError(
                  "Range too big. The sandbox blocks ranges larger than "
                  "MAX_RANGE (100000).");
            }
            out.push_back(Value(i));
          }
          return Value(std::move(out));
        });
  }
  if (name == "namespace" || name == "dict") {
    bool ns = name == "namespace";
    return Value::MakeCallable(
        std::string(name), [ns](CallArgs& a) -> absl::StatusOr<Value> {
          Object o;
          for (const Value& p : a.positional) {
            if (!p.is_object()) {
              return absl::InvalidArgumentError(
                  "positional argument must be a dict");
            }
            for (const auto& [k, v] : p.as_object().items) o.Set(k, v);
          }
          for (const auto& [k, v] : a.keyword) o.Set(k, v);
          return ns ? Value::MakeNamespace(std::move(o)) : Value(std::move(o));
        });
  }
  if (name == "raise_exception") {
    return Value::MakeCallable(
        "raise_exception", [](CallArgs& a) -> absl::StatusOr<Value> {
          std::string msg = a.positional.empty() ? "" : a.positional[0].Str();
          return absl::InvalidArgumentError(msg);
        });
  }
  // strftime_now(format): transformers' datetime.now().strftime(format),
  // local time; Python's strftime hands the format to the C library's.
  return Value::MakeCallable(
      "strftime_now", [](CallArgs& a) -> absl::StatusOr<Value> {
        if (a.positional.size() != 1 || !a.positional[0].is_string()) {
          return absl::InvalidArgumentError(
              "strftime_now expects one format string");
        }
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        const std::string& fmt = a.positional[0].as_string();
        std::string buf(fmt.size() * 8 + 64, '\0');
        size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
        if (n == 0 && !fmt.empty()) {
          return absl::InvalidArgumentError("strftime_now: format too long");
        }
        buf.resize(n);
        return Value(std::move(buf));
      });
}

}  // namespace duet::chat::jinja
