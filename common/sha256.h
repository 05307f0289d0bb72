// SHA-256 of files and byte strings (bundle integrity checks).
#ifndef EENN_COMMON_SHA256_H_
#define EENN_COMMON_SHA256_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace eenn::common {

// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// Lowercase hex SHA-256 of the file at `path`, streamed. NotFound when the
// file cannot be opened, DataLoss on a read error.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace eenn::common

#endif  // EENN_COMMON_SHA256_H_
