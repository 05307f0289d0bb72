// Status propagation helpers used across eenn.
//
// Debian 12's Abseil (20220623) ships absl::Status and absl::StatusOr but no
// RETURN_IF_ERROR / ASSIGN_OR_RETURN macros; these are the project's single
// definition of them. Every fallible function in eenn returns absl::Status or
// absl::StatusOr<T>; exceptions from LibTorch and OpenCV are caught at the
// call site and converted (see TorchCall in torch_util.h).
#ifndef EENN_COMMON_STATUS_MACROS_H_
#define EENN_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EENN_STATUS_CONCAT_INNER_(a, b) a##b
#define EENN_STATUS_CONCAT_(a, b) EENN_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function
// when it is not OK.
#define EENN_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    ::absl::Status eenn_status_ = (expr);          \
    if (!eenn_status_.ok()) return eenn_status_;   \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, otherwise move-assigns the value to `lhs`, which
// may be a declaration (`auto x`) or an existing variable.
#define EENN_ASSIGN_OR_RETURN(lhs, rexpr) \
  EENN_ASSIGN_OR_RETURN_IMPL_(EENN_STATUS_CONCAT_(eenn_statusor_, __LINE__), lhs, rexpr)

#define EENN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // EENN_COMMON_STATUS_MACROS_H_
