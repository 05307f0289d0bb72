#include "common/threads.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace eenn::common {

absl::Status ConfigureThreads(const ThreadOptions& options) {
  static std::mutex mu;
  static bool done = false;
  static ThreadOptions applied;
  std::lock_guard<std::mutex> lock(mu);
  ThreadOptions want = options;
  if (want.intra_op <= 0) want.intra_op = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (want.inter_op <= 0) want.inter_op = 1;
  if (done) {
    if (want.intra_op == applied.intra_op && want.inter_op == applied.inter_op) {
      return absl::OkStatus();
    }
    return absl::FailedPreconditionError(
        absl::StrCat("torch threads already set to ", applied.intra_op, "/", applied.inter_op));
  }
  at::set_num_threads(want.intra_op);
  at::set_num_interop_threads(want.inter_op);
  applied = want;
  done = true;
  return absl::OkStatus();
}

void InitComputeThread() { at::init_num_threads(); }

void ConfigureAllocator() {
  // Large blocks come from the heap (no per-allocation mmap/munmap) and the
  // heap top is not trimmed after each free.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace eenn::common
