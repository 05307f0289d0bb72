// Measures a machine's Profile (common/profile.h) of a bundle: batch-1
// per-layer and per-head times, every layer output's size and codec cost in
// each wire format, parameter bytes, single-exit latencies, and the share of
// samples leaving at each exit under the bundle's thresholds.
#ifndef EENN_TOOLS_PROFILER_H_
#define EENN_TOOLS_PROFILER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bundle.h"
#include "common/profile.h"

namespace eenn::tools {

struct ProfilerOptions {
  int samples = 200;              // timed batch-1 samples (the images are cycled)
  int warmup = 20;                // untimed passes first
  int wire_samples = 20;          // samples behind the codec sizes and costs
  int calibration_batch = 64;     // batch size of the exit-share pass
  std::vector<std::string> wire_keys = common::AllWireKeys();
  int threads = 0;                // recorded in the profile
  std::function<void(const std::string&)> progress;  // optional status lines
};

// `images`: files timed (decoded from memory each time, so preprocessing is
// measured too); `calibration`: files behind the exit shares (their parent
// folder names, when they are class names of the bundle, give per-exit
// accuracy). InvalidArgument for no images or a bad option; image errors
// name the file.
absl::StatusOr<common::Profile> ProfileBundle(const common::Bundle& bundle,
                                              const std::vector<std::string>& images,
                                              const std::vector<std::string>& calibration,
                                              const ProfilerOptions& options);

}  // namespace eenn::tools

#endif  // EENN_TOOLS_PROFILER_H_
