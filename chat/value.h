// The value type the Jinja interpreter evaluates over: Python's view of the
// JSON a chat request carries (None, bool, int, float, str, list, dict) plus
// what only templates make (Jinja's Undefined, namespace() objects, callables
// such as macros, bound string/dict methods and the transformers globals).
//
// Semantics follow Python/Jinja2 where a chat template can observe them:
// truthiness, ==, ordering, str() (what {{ }} prints) and repr() (how str()
// shows list/dict members), json.dumps as transformers' tojson calls it.
// dicts keep insertion order, as Python's do, so tojson of a tool schema
// prints its keys in the order the client sent them.
#ifndef DUET_CHAT_VALUE_H_
#define DUET_CHAT_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace duet::chat::jinja {

class Value;

using Array = std::vector<Value>;

// An insertion-ordered dict with string keys (JSON objects only have those).
// Linear lookup: chat messages and tool schemas have few keys per object.
struct Object {
  std::vector<std::pair<std::string, Value>> items;

  const Value* Find(absl::string_view key) const;
  void Set(const std::string& key, Value value);
};

// Positional and keyword arguments of a call, already evaluated.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Something a template can call: a macro, a bound method, a global.
struct Callable {
  std::string name;
  std::function<absl::StatusOr<Value>(CallArgs&)> fn;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kArray,
    kObject,
    kNamespace,
    kCallable,
  };

  Value() : data_(Undefined{}) {}
  // Undefined that remembers what was looked up, for error messages
  // ("'foo' is undefined").
  static Value MakeUndefined(std::string hint);
  static Value None() { return Value(NoneTag{}); }
  Value(bool b) : data_(b) {}                       // NOLINT
  Value(int64_t i) : data_(i) {}                    // NOLINT
  Value(int i) : data_(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double d) : data_(d) {}                     // NOLINT
  Value(std::string s) : data_(std::move(s)) {}     // NOLINT
  Value(const char* s) : data_(std::string(s)) {}   // NOLINT
  Value(Array a)
      : data_(std::make_shared<const Array>(std::move(a))) {}  // NOLINT
  Value(Object o)                                              // NOLINT
      : data_(std::make_shared<const Object>(std::move(o))) {}
  static Value MakeNamespace(Object o);
  static Value MakeCallable(std::string name,
                            std::function<absl::StatusOr<Value>(CallArgs&)> fn);

  // JSON -> Value. Unsigned integers beyond int64 become floats.
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  // Python's numbers.Number: bool counts, as it is an int subclass.
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const { return std::get<int64_t>(data_); }
  double as_float() const { return std::get<double>(data_); }
  // Numeric value of a bool/int/float.
  double as_double() const;
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const Array& as_array() const { return *std::get<ArrayPtr>(data_); }
  const Object& as_object() const { return *std::get<ObjectPtr>(data_); }
  // Namespaces are the one mutable container ({% set ns.x = ... %}).
  Object& namespace_object() const { return *std::get<NamespacePtr>(data_); }
  const Callable& as_callable() const { return *std::get<CallablePtr>(data_); }
  const std::string& undefined_hint() const {
    return std::get<Undefined>(data_).hint;
  }

  // Python truthiness (Undefined is false).
  bool Truthy() const;
  // Python str(): what {{ value }} prints. Undefined prints as "".
  std::string Str() const;
  // Python repr().
  std::string Repr() const;
  // The Jinja2 type name used in error messages ("str object", ...).
  std::string TypeName() const;

 private:
  struct Undefined {
    std::string hint;
  };
  struct NoneTag {};
  using ArrayPtr = std::shared_ptr<const Array>;
  using ObjectPtr = std::shared_ptr<const Object>;
  using NamespacePtr = std::shared_ptr<Object>;
  using CallablePtr = std::shared_ptr<const Callable>;
  explicit Value(NoneTag t) : data_(t) {}

  std::variant<Undefined, NoneTag, bool, int64_t, double, std::string, ArrayPtr,
               ObjectPtr, NamespacePtr, CallablePtr>
      data_;
};

// Python ==, with 1 == 1.0 == True. Undefined equals only Undefined.
bool Equal(const Value& a, const Value& b);
// Python <: numbers with numbers, str with str (code point order, which is
// byte order in UTF-8), lists lexicographically. Other pairs are a TypeError.
absl::StatusOr<bool> Less(const Value& a, const Value& b);

// Python float repr (shortest round-trip digits; exponent form outside
// 1e-4 <= |x| < 1e16), inf/nan as Python spells them.
std::string FormatFloat(double d);
// Python repr of a str: single quotes unless the text has ' and no ".
std::string ReprString(absl::string_view s);

// Arguments of json.dumps that transformers' tojson filter passes on.
struct JsonOptions {
  std::optional<int> indent;  // None: one line
  // Python's defaults: ", " without indent, "," with one; ": " always.
  std::optional<std::string> item_separator;
  std::string key_separator = ": ";
  bool sort_keys = false;
  bool ensure_ascii = false;  // transformers' default: text verbatim
};

// json.dumps(value, ...) byte for byte. Namespaces, callables and Undefined
// are not JSON: InvalidArgument, as json.dumps raises TypeError.
absl::StatusOr<std::string> ToJson(const Value& v,
                                   const JsonOptions& options = {});

// --- UTF-8 helpers (Python strings are code point sequences) ---

// Decodes `s` into code points; invalid bytes decode as U+FFFD one by one
// (input comes from parsed JSON, which is valid UTF-8, so this is a guard).
std::vector<char32_t> DecodeUtf8(absl::string_view s);
void AppendUtf8(char32_t c, std::string* out);
std::string EncodeUtf8(const std::vector<char32_t>& cps, size_t begin,
                       size_t end);
// Python str.isspace() for one code point.
bool IsPyWhitespace(char32_t c);

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_VALUE_H_
