// Batches of an in-memory ImageDataset as normalised tensors, with the
// training augmentation (random crop with zero padding, horizontal flip).
#ifndef EENN_COMMON_TENSOR_BATCH_H_
#define EENN_COMMON_TENSOR_BATCH_H_

#include <torch/types.h>

#include <random>
#include <vector>

#include "common/dataset.h"
#include "common/manifest.h"

namespace eenn::common {

struct Augment {
  int crop_padding = 0;  // random crop after zero-padding by this many pixels; 0 = none
  bool hflip = false;    // flip horizontally with probability 1/2
};

// Returns ([B, C, H, W] float normalised with input.mean/std, [B] int64
// labels) for `indices`. The dataset's images must have input.shape; the
// caller checks that once (see CheckDatasetFitsInput).
std::pair<torch::Tensor, torch::Tensor> MakeBatch(const ImageDataset& data,
                                                  const std::vector<int64_t>& indices,
                                                  const InputSpec& input, const Augment& augment,
                                                  std::mt19937_64& rng);

// InvalidArgument unless the dataset's image size and channels equal input.shape.
absl::Status CheckDatasetFitsInput(const ImageDataset& data, const InputSpec& input);

}  // namespace eenn::common

#endif  // EENN_COMMON_TENSOR_BATCH_H_
