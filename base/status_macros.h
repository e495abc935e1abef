// NORMUON_RETURN_IF_ERROR / NORMUON_ASSIGN_OR_RETURN for absl::Status code: Debian's Abseil (20220623) does not
// ship them.
#ifndef NORMUON_STATUS_MACROS_H_
#define NORMUON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define NORMUON_CONCAT_INNER_(a, b) a##b
#define NORMUON_CONCAT_(a, b) NORMUON_CONCAT_INNER_(a, b)

#define NORMUON_RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status normuon_status_ = (expr);         \
    if (!normuon_status_.ok()) return normuon_status_; \
  } while (0)

#define NORMUON_ASSIGN_OR_RETURN(lhs, expr) \
  NORMUON_ASSIGN_OR_RETURN_IMPL_(NORMUON_CONCAT_(normuon_statusor_, __LINE__), lhs, expr)

#define NORMUON_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // NORMUON_STATUS_MACROS_H_
