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

// Applies the process's intra-op thread count (ConfigureThreads) to the
// calling thread. OpenMP keeps that count per thread, and at::set_num_threads
// sets it only for the thread that calls it: a thread that OpenMP did not
// start (a std::thread worker) otherwise runs oneDNN's and OpenBLAS's parallel
// regions on every core whatever --threads says, and two such daemons on one
// machine spin against each other (measured: two eenn-device --threads=1 on 2
// cores, 16 requests/s each instead of about 600; tools/bench/colocated_devices.py).
// Call first in every thread that runs inference.
void InitComputeThread();

// Keeps freed tensor memory inside the process instead of returning it to the
// kernel. glibc serves large blocks (activations, gradients) with mmap and
// unmaps them on free, so every training step or forward re-faults its working
// set page by page: measured on ResNet-18 x0.5 training, 27% of all CPU time in
// page faults and 1.7x lower images/s. Memory stays at the high-water mark of
// the working set, which a long-running process reaches anyway. Call once,
// early in main().
void ConfigureAllocator();

}  // namespace eenn::common

#endif  // EENN_COMMON_THREADS_H_
