// Model bundles: a directory with manifest.json (see manifest.h) and the
// weights file. LoadBundle() is the one way every eenn binary gets a model:
// it validates the manifest, verifies the weights checksum, builds the
// architecture and loads the weights strictly (every tensor present, no extra
// ones, same shapes and dtypes).
//
// Thread-safety: a loaded Bundle is immutable; share it freely.
#ifndef EENN_COMMON_BUNDLE_H_
#define EENN_COMMON_BUNDLE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/eenn_model.h"
#include "common/manifest.h"

namespace eenn::common {

struct Bundle {
  std::string dir;
  BundleManifest manifest;
  std::shared_ptr<EarlyExitNet> model;  // in eval mode
  ExitPolicy policy;                     // the manifest's thresholds and confidence
};

// Loads a bundle. Errors, each naming the bundle directory:
//   NotFound         manifest or weights file missing
//   InvalidArgument  malformed manifest; exits or input shape that do not fit
//                    the architecture; unknown architecture
//   DataLoss         weights checksum mismatch, or an unreadable weights file
//   FailedPrecondition  weights that do not fit the architecture (missing,
//                    unexpected or mis-shaped tensors)
absl::StatusOr<Bundle> LoadBundle(const std::string& dir);

// Writes `model`'s weights and `manifest` (with weights_sha256 filled in and
// spec/exits taken from the model) into `dir`, creating it. Files are written
// to temporaries and renamed, so a crash never leaves a half-written bundle.
absl::Status SaveBundle(const std::string& dir, BundleManifest manifest, const EarlyExitNet& model);

// Returns a manifest for `model` with default input settings for its variant
// (CIFAR or ImageNet mean/std), all exits active at threshold 0.5 except the
// final one (0), and class names class_0..class_{C-1}.
BundleManifest DefaultManifest(const EarlyExitNet& model, const std::string& name,
                               const std::string& version);

// The torch-free description of a loaded bundle.
ServedModel Describe(const Bundle& bundle);

}  // namespace eenn::common

#endif  // EENN_COMMON_BUNDLE_H_
