// Type-checked reads from nlohmann::json. nlohmann throws on a type mismatch;
// these turn every mismatch into InvalidArgument naming the field, so no
// exception can escape a tokenizer.json load.
#ifndef DUET_TOKENIZER_JSON_UTIL_H_
#define DUET_TOKENIZER_JSON_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace duet::tokenizer::json_util {

using Json = nlohmann::json;

// The member `key` of object `j`, or nullptr when absent (or j is no object).
inline const Json* Find(const Json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

inline absl::StatusOr<std::string> GetString(const Json& j, const char* key,
                                             absl::string_view where) {
  const Json* v = Find(j, key);
  if (v == nullptr || !v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be a string"));
  }
  return v->get_ref<const std::string&>();
}

// Absent or null gives nullopt.
inline absl::StatusOr<std::optional<std::string>> GetOptionalString(const Json& j,
                                                                    const char* key,
                                                                    absl::string_view where) {
  const Json* v = Find(j, key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  if (!v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be a string"));
  }
  return std::optional<std::string>(v->get_ref<const std::string&>());
}

// Absent or null gives `fallback`.
inline absl::StatusOr<bool> GetBool(const Json& j, const char* key, bool fallback,
                                    absl::string_view where) {
  const Json* v = Find(j, key);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"", key, "\" must be a boolean"));
  }
  return v->get<bool>();
}

// A token id: a JSON integer in [0, 2^31).
inline absl::StatusOr<int32_t> ToId(const Json& v, absl::string_view where) {
  if (!v.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": token id must be an integer"));
  }
  const int64_t id = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(
                                                  v.get<uint64_t>(), uint64_t{1} << 40))
                                            : v.get<int64_t>();
  if (id < 0 || id > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": token id ", id, " out of range"));
  }
  return static_cast<int32_t>(id);
}

inline std::string TypeOf(const Json& j) {
  const Json* t = Find(j, "type");
  return t != nullptr && t->is_string() ? t->get<std::string>() : std::string("<missing>");
}

}  // namespace duet::tokenizer::json_util

#endif  // DUET_TOKENIZER_JSON_UTIL_H_
