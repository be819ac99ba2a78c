// What templates can call: filters, tests, str/dict methods and global
// functions, with Jinja2's (and Python's) behaviour, plus Jinja2's
// attribute and subscript lookup. The Has* predicates let the parser reject
// unknown names at load time; everything they accept is implemented.
#ifndef DUET_CHAT_BUILTINS_H_
#define DUET_CHAT_BUILTINS_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chat/value.h"

namespace duet::chat::jinja {

bool HasFilter(absl::string_view name);
bool HasTest(absl::string_view name);
// A method name of str or dict that templates may call (x.startswith(...)),
// or loop.cycle.
bool HasMethod(absl::string_view name);
// range, namespace, dict, raise_exception, strftime_now.
bool HasGlobal(absl::string_view name);

// The global function `name` (HasGlobal(name) must hold).
Value MakeGlobal(absl::string_view name);

// Runs a test (`value is name(args)`); `call` invokes a callable value (for
// filters such as map that apply another filter). Type errors are
// InvalidArgument.
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value,
                               CallArgs& args);
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value,
                                  CallArgs& args);

// Jinja2 (sandboxed) attribute lookup: str methods and the safe dict methods
// (items, keys, values, get) as bound callables, then dict keys; namespace
// attributes. Anything missing is Undefined naming what was looked up.
Value GetAttr(const Value& obj, const std::string& name);
// Jinja2 subscript: dict key, list/str index (negative from the end); a
// missing key or index is Undefined.
Value GetItem(const Value& obj, const Value& key);
// Python slicing of lists and strings (by code point); null parts are absent.
absl::StatusOr<Value> SliceValue(const Value& obj, const Value* start,
                                 const Value* stop, const Value* step);
// Iteration as a for loop sees it: list items, dict keys, str characters;
// Undefined iterates as empty. Other values are a TypeError.
absl::StatusOr<Array> Iterate(const Value& v);
// len() for |length and friends.
absl::StatusOr<int64_t> Length(const Value& v);
// Jinja's error for using an Undefined where a value is required.
absl::Status UndefinedError(const Value& v);

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_BUILTINS_H_
