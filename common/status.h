// Status helpers shared by every module. absl::Status / absl::StatusOr cross
// every module boundary; these macros keep the early-return plumbing short.
#ifndef DUET_COMMON_STATUS_H_
#define DUET_COMMON_STATUS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DUET_STATUS_CONCAT_INNER_(a, b) a##b
#define DUET_STATUS_CONCAT_(a, b) DUET_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define DUET_RETURN_IF_ERROR(expr)                     \
  do {                                                 \
    ::absl::Status duet_status_ = (expr);              \
    if (!duet_status_.ok()) return duet_status_;       \
  } while (0)

// `lhs = value of expr` when expr (an absl::StatusOr<T>) is OK, otherwise
// returns its status. lhs may declare a variable: DUET_ASSIGN_OR_RETURN(auto x,
// F());
#define DUET_ASSIGN_OR_RETURN(lhs, expr)                                   \
  DUET_ASSIGN_OR_RETURN_IMPL_(DUET_STATUS_CONCAT_(duet_statusor_, __LINE__), \
                              lhs, expr)
#define DUET_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()

#endif  // DUET_COMMON_STATUS_H_
