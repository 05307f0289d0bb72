// Process-wide LibTorch thread settings. Call once, from main(), before any
// inference; every later call with different values is refused.
#ifndef EENN_COMMON_THREADS_H_
#define EENN_COMMON_THREADS_H_

#include "absl/status/status.h"

namespace eenn::common {

struct ThreadOptions {
  int intra_op = 0;  // threads inside one operator; 0 = number of cores
  int inter_op = 1;  // threads across operators (eenn runs graphs sequentially)
};

// FailedPrecondition when called again with other values.
absl::Status ConfigureThreads(const ThreadOptions& options);

}  // namespace eenn::common

#endif  // EENN_COMMON_THREADS_H_
