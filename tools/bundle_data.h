// Shared by eenn-eval and eenn-calibrate: load a dataset split conformed to a
// bundle's input, and recover the validation split the trainer held out.
#ifndef EENN_TOOLS_BUNDLE_DATA_H_
#define EENN_TOOLS_BUNDLE_DATA_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bundle.h"
#include "common/dataset.h"

namespace eenn::tools {

// Loads `split` of the dataset in `format` at `dir`, resized to the bundle's
// input shape. InvalidArgument when its classes differ from the bundle's.
absl::StatusOr<common::ImageDataset> LoadForBundle(const common::Bundle& bundle,
                                                   const std::string& format,
                                                   const std::string& dir,
                                                   const std::string& split);

// The validation indices eenn-train held out of `train` (the whole training
// split, as LoadForBundle reads it) for this bundle. Its metadata records
// val_ratio, seed and subset_ratio: a run on a subset held its validation
// images out of that subset, so the same subset is cut first and the indices
// map back into `train`. `val_ratio`/`seed` >= 0 override the metadata.
absl::StatusOr<std::vector<int64_t>> ValidationIndices(const common::Bundle& bundle,
                                                       const common::ImageDataset& train,
                                                       double val_ratio = -1, int64_t seed = -1);

}  // namespace eenn::tools

#endif  // EENN_TOOLS_BUNDLE_DATA_H_
