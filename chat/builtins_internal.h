// Helpers shared by builtins.cc, methods.cc and filters.cc (internal).
#ifndef DUET_CHAT_BUILTINS_INTERNAL_H_
#define DUET_CHAT_BUILTINS_INTERNAL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chat/value.h"

namespace duet::chat::jinja {

bool IsStrMethod(absl::string_view name);
bool IsDictMethod(absl::string_view name);
// A callable bound to `self` (IsStrMethod/IsDictMethod(name) must hold).
Value BindStrMethod(const Value& self, const std::string& name);
Value BindDictMethod(const Value& self, const std::string& name);

// Python's `item in container`.
absl::StatusOr<bool> ContainsValue(const Value& container, const Value& item);

// Argument `i` (positional) or `name` (keyword); nullptr when absent.
const Value* Arg(const CallArgs& args, size_t i, absl::string_view name);

// Python str.lower()/upper() for ASCII, Latin-1, Greek and Cyrillic letters;
// other scripts pass through unchanged (see chat/README.md).
std::string LowerStr(absl::string_view s);
std::string UpperStr(absl::string_view s);
// str.strip/lstrip/rstrip: `chars` null strips Unicode whitespace.
std::string StripStr(absl::string_view s, const std::string* chars, bool left,
                     bool right);
// str.replace(old, new, count); count < 0 replaces all.
std::string ReplaceStr(absl::string_view s, absl::string_view from,
                       absl::string_view to, int64_t count);

}  // namespace duet::chat::jinja

#endif  // DUET_CHAT_BUILTINS_INTERNAL_H_
