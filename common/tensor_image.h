// Decoded images -> a normalised [B, C, H, W] float tensor for the runtime.
#ifndef EENN_COMMON_TENSOR_IMAGE_H_
#define EENN_COMMON_TENSOR_IMAGE_H_

#include <torch/types.h>

#include <opencv2/core.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "common/manifest.h"

namespace eenn::common {

// Preprocesses every image (see image.h) into one owned contiguous batch.
// InvalidArgument naming the offending index.
absl::StatusOr<torch::Tensor> ImagesToTensor(const std::vector<cv::Mat>& images,
                                             const InputSpec& spec);

}  // namespace eenn::common

#endif  // EENN_COMMON_TENSOR_IMAGE_H_
